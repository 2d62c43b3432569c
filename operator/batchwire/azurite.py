"""Azurite's well-known development storage account: one definition for everything that talks to it.

Azurite (the local Azure Storage emulator the dev stack runs) always serves the account Microsoft documents
for development storage, with a published key: public, not a secret. The dev stack starts Azurite with it,
``batchop blob`` falls back to it, connection strings with ``UseDevelopmentStorage=true`` mean it, and
``batchop convert`` recognises URLs into it.
"""

from __future__ import annotations

from typing import Final

ACCOUNT_NAME: Final = "devstoreaccount1"
ACCOUNT_KEY: Final = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BLOB_PORT: Final = 10000
"""Azurite's default Blob service port."""
BLOB_URL: Final = f"http://127.0.0.1:{BLOB_PORT}/{ACCOUNT_NAME}"
"""The account's path-style blob endpoint on the default port."""
