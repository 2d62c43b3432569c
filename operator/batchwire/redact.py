"""Keep secrets out of logs, events and status.

Two kinds of secrets pass through batchop: SAS query strings (``sig=...``) inside URLs, and
credentials read from Secrets or the environment (account keys, connection strings).
:func:`redact` removes both from any text; :func:`register_secret` adds a value to the set of
literal secrets to remove wherever it appears.
"""

from __future__ import annotations

import re
import threading

REDACTED = "REDACTED"

_SAS_SIG = re.compile(r"(?i)(sig=)[^&\s\"'<>]+")
_ACCOUNT_KEY = re.compile(r"(?i)(AccountKey=)[^;\s\"']+")
_SHARED_KEY_HEADER = re.compile(r"(SharedKey [^:\s]+:)[A-Za-z0-9+/=]+")
_BEARER = re.compile(r"(?i)(Bearer )[A-Za-z0-9._~+/=-]+")

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a literal secret: :func:`redact` replaces it from now on.

    Values shorter than 8 characters are ignored: redacting them would mangle ordinary text.
    """
    if value and len(value) >= 8:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with SAS signatures, account keys, auth headers and registered secrets removed."""
    if not text:
        return text
    text = _SAS_SIG.sub(rf"\g<1>{REDACTED}", text)
    text = _ACCOUNT_KEY.sub(rf"\g<1>{REDACTED}", text)
    text = _SHARED_KEY_HEADER.sub(rf"\g<1>{REDACTED}", text)
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
