"""Keep secrets out of logs, events and status: the one redactor of the operator and the local Batch service.

The secret shapes that pass through either process: SAS query strings (``sig=...``) inside URLs, account
keys inside connection strings (``AccountKey=``), ``SharedKey`` and ``Bearer`` authorization headers,
OAuth client secrets in token requests (``client_secret=``), and literal credentials read from Secrets or
the environment. :func:`redact` removes all of them from any text; :func:`register_secret` adds a value to
the set of literal secrets; :func:`strip_sas` turns a SAS URL into one that is safe to show.
"""

from __future__ import annotations

import re
import threading

REDACTED = "REDACTED"

_SAS_SIG = re.compile(r"(?i)(sig=)[^&\s\"'<>]+")
_ACCOUNT_KEY = re.compile(r"(?i)(AccountKey=)[^;\s\"']+")
_SHARED_KEY_HEADER = re.compile(r"(SharedKey [^:\s]+:)[A-Za-z0-9+/=]+")
_BEARER = re.compile(r"(?i)(Bearer )[A-Za-z0-9._~+/=-]+")
_CLIENT_SECRET = re.compile(r"(?i)(client_secret=)[^&\s\"']+")
_CLIENT_ASSERTION = re.compile(r"(?i)(client_assertion=)[^&\s\"']+")
_PATTERNS = (_SAS_SIG, _ACCOUNT_KEY, _SHARED_KEY_HEADER, _BEARER, _CLIENT_SECRET, _CLIENT_ASSERTION)
_SAS_URL = re.compile(r"^([^?#\s]+)\?[^#\s]*\bsig=[^#\s]*(#.*)?$", re.IGNORECASE)

_TRIGGERS = ("sig=", "accountkey=", "sharedkey ", "bearer ", "client_secret=", "client_assertion=")
"""Lower-case substrings without which none of the patterns can match: most texts (condition messages the
poller builds for every resource every cycle) have none, and a substring test is cheaper than six regexes."""

_lock = threading.Lock()
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a literal secret: :func:`redact` replaces it from now on.

    Values shorter than 8 characters are ignored: redacting them would mangle ordinary text.
    """
    global _longest_first
    if value and len(value) >= 8:
        with _lock:
            if value not in _secrets:
                _secrets.add(value)
                _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with SAS signatures, account keys, auth headers, client secrets and registered secrets
    removed."""
    if not text:
        return text
    lowered = text.lower()
    if any(trigger in lowered for trigger in _TRIGGERS):
        for pattern in _PATTERNS:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
    for secret in _longest_first:  # replaced whole, never changed in place: no lock needed to read it
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def strip_sas(url: str) -> str:
    """``url`` without its query string when that carries a SAS signature (``sig=``), so that it can be shown
    in status, events and logs; any other URL unchanged (a query without a signature grants nothing)."""
    match = _SAS_URL.match(url)
    return match.group(1) if match else url
