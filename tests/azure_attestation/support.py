"""Recorded MAA / Azure CVM vectors, and a loopback HTTPS stand-in for MAA (no MAA emulator exists).

The stand-in records each request and answers with whatever the test configured: a recorded token, an error
document, or a reply computed from the request. It also serves ``/certs`` (MAA's JWKS endpoint).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ppml.azure import TpmInfo
from tests.https_server import https_server

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "attestation"
MAA_SDK = VECTORS / "maa" / "azure-sdk-cpp"
SNP_VTPM = VECTORS / "sev-snp" / "azure-snp-vtpm"
TDX_VTPM = VECTORS / "tdx" / "azure-tdx-vtpm"
SHAREDWUS = "https://sharedwus.wus.attest.azure.net"  # the instance that issued the azure-sdk-cpp tokens
RECORDED_AT = datetime(2022, 6, 1, 0, 0, tzinfo=timezone.utc)  # inside every azure-sdk-cpp token's lifetime
SHAREDWUS_JWKS = (MAA_SDK / "sharedwus_certs_2022-05-31.jwks.json").read_bytes()


def recorded_token(name: str) -> str:
    return (MAA_SDK / f"{name}.jwt").read_text().strip()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (test assertions only)."""
    return json.loads(unb64url(token.split(".")[1]))


def evidence(path: Path) -> dict[str, Any]:
    """A trustee az-*-vtpm evidence document with its byte fields decoded (v1 format: base64url and hex)."""
    doc = json.loads(path.read_text())
    quote = doc["tpm_quote"]
    out = {"hcl_report": unb64url(doc["hcl_report"]), "quote": bytes.fromhex(quote["message"]),
           "signature": bytes.fromhex(quote["signature"]),
           "pcrs": {index: bytes.fromhex(value) for index, value in enumerate(quote["pcrs"])}}
    if "vcek" in doc:
        der = unb64url(doc["vcek"])  # serial number 0: cryptography warns when loading it, so PEM-encode by hand
        body = base64.encodebytes(der).decode().replace("\n", "")
        lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
        vcek = f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n".encode()
        out["vcek_chain"] = vcek + (VECTORS / "sev-snp" / "amd-kds-chains" / "ask_ark_milan.pem").read_bytes()
        out["vcek_der"] = der
    if "td_quote" in doc:
        out["td_quote"] = unb64url(doc["td_quote"])
    return out


def placeholder_tpm_info(ev: dict[str, Any]) -> TpmInfo:
    """The vectors' quote, signature and PCRs; the AK certificate and public area and the ephemeral key's
    certification are placeholders (no recorded set exists), which only MAA could tell apart."""
    return TpmInfo(aik_cert=b"AIK-CERT-DER", aik_pub=b"AIK-TPM2B-PUBLIC", pcr_quote=ev["quote"],
                   pcr_signature=ev["signature"], pcrs=ev["pcrs"], enc_key_pub=b"ENC-TPM2B-PUBLIC",
                   enc_key_certify_info=b"CERTIFY-INFO", enc_key_certify_info_signature=b"CERTIFY-SIG")


Reply = tuple[int, Any] | Callable[[dict[str, Any]], tuple[int, Any]]


@dataclass
class FakeMaa:
    """What the loopback server does; tests change ``reply``, ``jwks`` and ``delay`` between requests."""

    endpoint: str = ""
    ca_file: Path = Path()
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: Reply = (500, {"error": {"code": "NotConfigured", "message": "the test set no reply"}})
    jwks: bytes = SHAREDWUS_JWKS
    delay: float = 0.0

    def answer(self, request: dict[str, Any]) -> tuple[int, Any]:
        return self.reply(request) if callable(self.reply) else self.reply


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeMaa

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/certs":
            self._send(200, self.fake.jwks)
        else:
            self._send(404, b'{"error": {"code": "NotFound", "message": "no such path"}}')

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = {"path": self.path, "content_type": self.headers["Content-Type"], "body": body}
        self.fake.requests.append(request)
        time.sleep(self.fake.delay)
        status, doc = self.fake.answer(request)
        self._send(status, doc if isinstance(doc, bytes) else json.dumps(doc).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):  # the client gave up
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr logging
        pass


@contextmanager
def serve(tmp_path: Path) -> Iterator[FakeMaa]:
    """Run the stand-in on 127.0.0.1 over HTTPS with a fresh test CA (written to ``ca_file``)."""
    fake = FakeMaa(ca_file=tmp_path / "maa-tls" / "ca.pem")
    handler = type("Handler", (_Handler,), {"fake": fake})
    with https_server(handler, tmp_path / "maa-tls") as (url, _):
        fake.endpoint = url
        yield fake
