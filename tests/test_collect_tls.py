"""rediss:// with a CA, a client certificate and key, against a real TLS Redis on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from clientscope.capture import TlsOptions, collect, parse_target
from clientscope.dataset import open_dataset
from servers import free_port, redis_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt")  # fmt: skip
    return {p.stem + p.suffix: p for p in folder.iterdir()}


def test_rediss_with_ca_and_client_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    tls_port = free_port()
    config = {
        "tls_port": tls_port,
        "tls_cert_file": certs["server.crt"],
        "tls_key_file": certs["server.key"],
        "tls_ca_cert_file": certs["ca.crt"],
        "tls_auth_clients": "yes",
    }
    good = TlsOptions(ca_cert=certs["ca.crt"], cert=certs["client.crt"], key=certs["client.key"])
    no_client_cert = TlsOptions(ca_cert=certs["ca.crt"])
    url = f"rediss://127.0.0.1:{tls_port}"
    with redis_server(**config) as srv:
        result = collect([parse_target(url, tls=good)], tmp_path / "ds", interval=0.2, count=2)
        refused = collect(
            [parse_target(url, tls=no_client_cert)], tmp_path / "bad", interval=0.2, count=1
        )
        unverified = collect([parse_target(url)], tmp_path / "bad2", interval=0.2, count=1)
        assert srv.process is not None
    assert result.failed == 0 and result.targets[0].origin == url
    rows = open_dataset(tmp_path / "ds").raw.collect()
    assert rows["ok"].all() and rows["client_list"][0].startswith(b"id=")
    assert refused.failed == 1 and unverified.failed == 1
    message = open_dataset(tmp_path / "bad2").raw.collect()["error_message"][0]
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message
