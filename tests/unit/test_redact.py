"""Secrets never reach a log line: SAS signatures, account keys, auth headers, registered values."""

from __future__ import annotations

import json
import logging

from batchop.observability import logs
from batchwire.redact import redact, register_secret


def test_sas_signature_removed() -> None:
    url = "http://127.0.0.1:10000/devstoreaccount1/input/a.txt?sv=2024-11-04&sp=r&sig=abc%2Bdef%3D&se=2030"
    out = redact(url)
    assert "abc%2Bdef" not in out
    assert "sig=REDACTED" in out and "sp=r" in out


def test_connection_string_key_removed() -> None:
    text = "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=Eby8vdM02xNOcqF==;BlobEndpoint=x"
    assert "Eby8vdM02xNOcqF" not in redact(text)


def test_registered_secret_removed() -> None:
    register_secret("s3cr3t-value-123")
    assert redact("key is s3cr3t-value-123!") == "key is REDACTED!"


def test_every_shape_is_found_whatever_its_case_and_plain_text_is_untouched() -> None:
    shapes = {
        "SIG=Zm9vYmFy&se=1": "Zm9vYmFy",
        "accountkey=a2V5a2V5;": "a2V5a2V5",
        "Authorization: SharedKey acct:c2lnbmF0dXJl": "c2lnbmF0dXJl",
        "BEARER eyJhbGciOi.x.y": "eyJhbGciOi",
        "Client_Secret=hunter22&x": "hunter22",
        "client_assertion=eyJraWQ.a.b": "eyJraWQ",
    }
    for text, secret in shapes.items():
        assert secret not in redact(text), text
    plain = "Batch schedule team_report matches generation 3 (create)"
    assert redact(plain) is plain


def test_a_secret_registered_later_is_redacted_longest_first() -> None:
    assert redact("token 0123456789abcdef-later") == "token 0123456789abcdef-later"
    register_secret("0123456789abcdef")
    register_secret("0123456789abcdef-later")
    assert redact("token 0123456789abcdef-later and 0123456789abcdef") == "token REDACTED and REDACTED"


def test_json_log_line_is_redacted(capsys: object) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("t").info("url %s", "https://x/y?sp=r&sig=SECRETSIG")
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    entry = json.loads(err.strip().splitlines()[-1])
    assert "SECRETSIG" not in err
    assert entry["level"] == "info" and entry["logger"] == "t"


def test_kopf_routine_successes_are_debug_lines(capsys: object) -> None:
    """Below DEBUG kopf's per-object logger is held to warnings (its INFO lines are routine, and each cost a
    record made only to be dropped); at DEBUG its routine successes show as DEBUG lines, the rest as they are."""
    from kopf._core.actions.loggers import LocalObjectLogger

    objects = logging.getLogger("kopf.objects")
    logs.configure("INFO", "json")
    assert objects.level == logging.WARNING and not objects.isEnabledFor(logging.INFO)
    objects.info("Handler 'register.<locals>.reconcile' succeeded.")
    objects.info("Creation is processed: 1 succeeded; 0 failed.")
    objects.info("Throttling is over. Switching back to normal operations.")
    objects.warning("Throttling for 1 seconds due to an unexpected error")
    objects.error("Handler 'register.<locals>.reconcile' failed permanently")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]  # type: ignore[attr-defined]
    assert [(x["level"], x["message"]) for x in lines] == [
        ("warning", "Throttling for 1 seconds due to an unexpected error"),
        ("error", "Handler 'register.<locals>.reconcile' failed permanently"),
    ]
    # kopf's own per-object adapter asks the same logger, before it makes a record
    import kopf

    adapter = LocalObjectLogger(body=kopf.Body({"metadata": {"name": "a", "namespace": "n"}}),
                                settings=kopf.OperatorSettings())
    assert not adapter.isEnabledFor(logging.INFO) and adapter.isEnabledFor(logging.WARNING)

    logs.configure("DEBUG", "json")
    assert adapter.isEnabledFor(logging.DEBUG)
    objects.info("Handler 'register.<locals>.reconcile' succeeded.")
    objects.info("Throttling is over. Switching back to normal operations.")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]  # type: ignore[attr-defined]
    assert [(x["level"], x["message"]) for x in lines] == [
        ("debug", "Handler 'register.<locals>.reconcile' succeeded."),
        ("info", "Throttling is over. Switching back to normal operations."),
    ]
    logs.configure("INFO", "json")
