"""Blob storage done for the user: references resolved into SAS URLs, SAS minted, ``blob/`` synced.

The pure rules (which references exist, how long a SAS must live) are in :mod:`batchop.spec`; this
package does the I/O: :mod:`.sas` mints account-key or user-delegation SAS, :mod:`.refs` resolves a job
specification's blob references with a minter, :mod:`.settings` finds the storage account and its
credential, :mod:`.sync` uploads a local tree (``batchop blob sync``).
"""
