"""The operator's Kubernetes client loads kubeconfig's inline CA, client certificate and key without
leaving any of them on disk (a key left in /tmp per client created was a secret outside the Pod's memory)."""

from __future__ import annotations

import base64
import ssl
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchop.admission.webhook import CertificateAuthority
from batchop.kube.client import KubeClient


def _info(directory: Path, *, encoded: bool) -> SimpleNamespace:
    ca = CertificateAuthority(directory / "ca", ["127.0.0.1"])
    ca.issue()
    bundle = ca.files.bundle.read_bytes()
    key_end = bundle.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----\n")
    key, cert = bundle[:key_end], bundle[key_end:]

    def data(raw: bytes) -> str:
        return base64.b64encode(raw).decode() if encoded else raw.decode()

    return SimpleNamespace(
        server="https://127.0.0.1:6443", ca_path=None, ca_data=data(ca.ca_pem), insecure=False,
        certificate_path=None, certificate_data=data(cert), private_key_path=None, private_key_data=data(key),
        username=None, password=None, scheme=None, token=None)


@pytest.mark.parametrize("encoded", [True, False], ids=["base64", "pem"])
def test_inline_credentials_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoded: bool) -> None:
    info = _info(tmp_path, encoded=encoded)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    context = KubeClient(info)._ssl()  # type: ignore[arg-type]
    assert isinstance(context, ssl.SSLContext)
    assert ((("commonName", "batchop webhook CA"),),) in [c["subject"] for c in context.get_ca_certs()]
    assert list(scratch.iterdir()) == []


def test_bad_key_is_an_error_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = _info(tmp_path, encoded=False)
    info.private_key_data = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(ssl.SSLError):
        KubeClient(info)._ssl()  # type: ignore[arg-type]
    assert list(scratch.iterdir()) == []
