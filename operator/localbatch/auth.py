"""Request authentication: SharedKey exactly as Azure Batch verifies it, and bearer tokens.

SharedKey (what ``azure.batch``'s ``BatchSharedKeyAuthPolicy`` signs): the string to sign is the
method, then the values of ``content-encoding``, ``content-language``, ``content-length`` (``0``
for a request other than GET/HEAD that has none), ``content-md5``, ``content-type``, ``date``,
``if-modified-since``, ``if-match``, ``if-none-match``, ``if-unmodified-since`` and ``range``, each
followed by ``\\n``; then every ``ocp-*`` header, lower-cased and sorted, as ``name:value\\n``; then
``/{account}{path}`` with the path exactly as sent (still percent-encoded); then each query
parameter, sorted by name, as ``\\n{name}:{decoded first value}``. The signature is the base64
HMAC-SHA256 of that string with the base64-decoded account key, sent as
``Authorization: SharedKey {account}:{signature}``. A request whose ``ocp-date`` (or ``date``) is
more than 15 minutes from the real time is refused, as Azure refuses it.

The SDK signs the path as it encoded it (``/jobs/sched%3Ajob-1``), but its aio transport
(aiohttp/yarl) sends ``:`` unescaped (``/jobs/sched:job-1``); the aio SDK works against Azure, so
a signature over the percent-encoded form of the received path is accepted as well.

Bearer: tokens the service's own token endpoint issued (:mod:`localbatch.tokens`), for the
Entra ID path over TLS. Every failure is 403 ``AuthenticationFailed`` with
``AuthenticationErrorDetail`` saying why.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, quote, unquote

from localbatch.errors import BatchError
from localbatch.tokens import TokenError, TokenIssuer

SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
MAX_CLOCK_SKEW_SECONDS = 15 * 60


def string_to_sign(method: str, raw_target: str, headers: Mapping[str, str], account: str) -> str:
    """Rebuild the string the client signed (``raw_target`` is the request target as received)."""
    lowered = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD") and "content-length" not in lowered:
        lowered["content-length"] = "0"
    out = method + "\n" + "\n".join(lowered.get(name, "") for name in SIGNED_HEADERS) + "\n"
    for name, value in sorted((k, v) for k, v in lowered.items() if "ocp-" in k):
        out += f"{name}:{value}\n"
    path, _, query = raw_target.partition("?")
    out += f"/{account}{path}"
    params = parse_qs(query)
    for name in sorted(params):
        value = params[name][0]
        if value:
            out += f"\n{name}:{value}"
    return out


def encoded_target(raw_target: str) -> str:
    """The request target with every path segment percent-encoded as the SDK's serializer does."""
    path, sep, query = raw_target.partition("?")
    return "/".join(quote(unquote(segment), safe="") for segment in path.split("/")) + sep + query


def sign(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def _fail(detail: str) -> BatchError:
    return BatchError("AuthenticationFailed", [("AuthenticationErrorDetail", detail)])


class AccountKeys:
    """The account's two keys, as a Batch account has them: both sign requests until one is regenerated.

    Key rotation on Azure: clients move to the secondary key, the primary is regenerated (the old
    primary stops working at once), and later the other way round. ``regenerate`` replaces one key
    with a new random 64-byte key, base64 as the portal shows it.
    """

    NAMES = ("primary", "secondary")

    def __init__(self, primary: str, secondary: str) -> None:
        self._keys = {"primary": primary, "secondary": secondary}
        self._decoded = {name: base64.b64decode(value) for name, value in self._keys.items()}

    def to_json(self) -> dict[str, str]:
        return dict(self._keys)

    def get(self, name: str) -> str:
        return self._keys[name]

    def decoded(self) -> list[bytes]:
        """Both keys' bytes, primary first."""
        return [self._decoded[name] for name in self.NAMES]

    def matches(self, sent: str) -> bool:
        """Whether ``sent`` is one of the current keys (admin API ``X-Emulator-Key``)."""
        return any(hmac.compare_digest(sent.encode(), value.encode()) for value in self._keys.values())

    def regenerate(self, name: str) -> dict[str, str]:
        """Replace key ``name`` (``primary`` or ``secondary``) by a new random key; return both."""
        if name not in self.NAMES:
            raise ValueError("keyName must be primary or secondary")
        fresh = secrets.token_bytes(64)
        self._keys[name] = base64.b64encode(fresh).decode()
        self._decoded[name] = fresh
        return self.to_json()


class Authenticator:
    """Checks the ``Authorization`` header of a Batch API request."""

    def __init__(self, account: str, keys: AccountKeys | str, tokens: TokenIssuer | None = None) -> None:
        """``keys``: the account's keys, or one base64 key (then it is both the primary and the secondary)."""
        self.account = account
        self.keys = keys if isinstance(keys, AccountKeys) else AccountKeys(keys, keys)
        self.tokens = tokens

    def verify(self, method: str, raw_target: str, headers: Mapping[str, str]) -> str:
        """Return the principal (``sharedkey:{account}`` or the token's subject); raise 403 otherwise."""
        authorization = headers.get("Authorization", "")
        if not authorization:
            raise _fail(
                "The Authorization header is missing: sign requests with the account key (SharedKey) "
                "or send a bearer token."
            )
        scheme, _, credential = authorization.partition(" ")
        if scheme == "SharedKey":
            return self._verify_shared_key(method, raw_target, headers, credential.strip())
        if scheme == "Bearer":
            if self.tokens is None:
                raise _fail("Bearer tokens are not accepted by this service (start it with --tls).")
            try:
                return self.tokens.verify(credential.strip())
            except TokenError as exc:
                raise _fail(str(exc)) from None
        raise _fail(f"Unsupported authorization scheme {scheme!r}; use SharedKey or Bearer.")

    def _verify_shared_key(self, method: str, raw_target: str, headers: Mapping[str, str], credential: str) -> str:
        account, _, signature = credential.partition(":")
        if account != self.account:
            raise _fail(
                f"The account name {account!r} in the Authorization header is not this account's ({self.account!r})."
            )
        date_text = headers.get("ocp-date") or headers.get("date")
        if not date_text:
            raise _fail("The request has no ocp-date or date header.")
        try:
            sent = parsedate_to_datetime(date_text).timestamp()
        except (TypeError, ValueError):
            raise _fail(f"The ocp-date header {date_text!r} is not an RFC 1123 date.") from None
        if abs(time.time() - sent) > MAX_CLOCK_SKEW_SECONDS:
            raise _fail(
                f"Request date header too old or too far in the future: {date_text!r} "
                "(allowed: 15 minutes from the server's time)."
            )
        expected_text = string_to_sign(method, raw_target, headers, self.account)
        encoded = encoded_target(raw_target)
        candidates = [expected_text]
        if encoded != raw_target:
            candidates.append(string_to_sign(method, encoded, headers, self.account))
        for key in self.keys.decoded():
            if any(hmac.compare_digest(sign(key, text), signature) for text in candidates):
                return f"sharedkey:{account}"
        shown = expected_text.replace("\n", "\\n")
        raise _fail(
            f"The MAC signature found in the HTTP request '{signature}' is not the same as any computed "
            f"signature. Server used following string to sign: '{shown}'."
        )
