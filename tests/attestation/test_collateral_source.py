"""Collateral sources: a PCS/PCCS client against a real loopback HTTPS server, and the offline bundle.

The server serves the recorded Intel PCS collateral of the vector set under the PCS API v4 paths, with the
headers PCS sends, over TLS with a certificate issued by a throwaway CA made here. It counts hits per URL so the
tests can see what the client's cache answered.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml.attestation import CollateralError, EvidenceInvalid, _dcap, verify_sgx_quote, verify_tdx_quote
from ppml.attestation.collateral_source import (
    CollateralSource,
    OfflineBundle,
    PcsClient,
    fetch_for_quote,
    pck_ca,
)
from ppml.errors import ConfigError
from tests.attestation.test_collateral import VECTORS, _load_expected, _read, _window
from tests.https_server import https_server

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {e["bundle"]: e for e in _load_expected()}
T10 = EXPECTED["tdx/automata quotev4 + 1025"]  # TCB Info to 11-18, QE Identity and PCK CRL to 11-12, root CRL 2026
S2 = EXPECTED["sgx/automata-onchain-0825"]
T10_ADVISORIES = ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")


# --- a PCS on loopback ----------------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pcs:
    """The running server: its URL, the CA file that trusts it, the routes it serves and the hits it counted."""

    url: str
    ca_file: Path
    routes: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def publish(self, entry: dict[str, Any]) -> None:
        """Serve a vector bundle's collateral under the PCS API v4 paths for its TEE, FMSPC and PCK CA."""
        files = entry["collateral_files"]
        tee = "tdx" if entry["tee_type"] == "0x81" else "sgx"
        ca = "platform" if "Platform" in entry["pck"]["issuer"] else "processor"
        chain = b"".join(_pem(x509.load_der_x509_certificate(_read(p.strip())))
                         for p in files["tcb_signing_chain"].split("+"))
        issuer_chain = {"TCB-Info-Issuer-Chain": urllib.parse.quote(chain.decode(), safe="")}
        self.routes[f"/{tee}/certification/v4/tcb?fmspc={entry['pck']['fmspc'].upper()}"] = (
            _read(files["tcb_info"]), issuer_chain)
        self.routes[f"/{tee}/certification/v4/qe/identity"] = (
            _read(files["qe_identity"]), {"SGX-Enclave-Identity-Issuer-Chain": issuer_chain["TCB-Info-Issuer-Chain"]})
        self.routes[f"/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"] = (_read(files["pck_crl"]), {})
        # the root CRL as hex text of its DER, which the client accepts like DER
        self.routes["/sgx/certification/v4/rootcacrl"] = (_read(files["root_crl"]).hex().encode(), {})


def _handler(pcs: Pcs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            pcs.hits[self.path] += 1
            body, headers = pcs.routes.get(self.path, (b"not found", {}))
            self.send_response(200 if self.path in pcs.routes else 404)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            pass

    return Handler


@pytest.fixture(scope="module")
def pcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcs]:
    directory = tmp_path_factory.mktemp("pcs-tls")
    state = Pcs(url="", ca_file=directory / "ca.pem")
    with https_server(_handler(state), directory) as (url, _):
        state.url = url
        yield state


@pytest.fixture
def server(pcs: Pcs) -> Pcs:
    """The module's server with fresh routes and counters, serving T10 (TDX, Oct 2025) collateral."""
    pcs.routes.clear()
    pcs.hits.clear()
    pcs.publish(T10)
    return pcs


def _client(pcs: Pcs, **kwargs: Any) -> PcsClient:
    return PcsClient(pcs.url, verify=pcs.ca_file, **kwargs)


# --- PcsClient ------------------------------------------------------------------------------------------------


def test_tdx_quote_verifies_end_to_end_with_fetched_collateral(server: Pcs) -> None:
    with _client(server) as client:
        assert isinstance(client, CollateralSource)
        claims = verify_tdx_quote(_read(T10["quote"]), now=_window(T10)[0], collateral=client)
    assert (claims.tcb_status, claims.advisory_ids) == ("OutOfDate", T10_ADVISORIES)
    assert dict(claims.tcb_statuses) == {"platform": "OutOfDate", "tdx_module": "UpToDate", "qe": "UpToDate"}
    assert sorted(server.hits.values()) == [1, 1, 1, 1]


def test_sgx_quote_verifies_end_to_end_with_fetched_collateral(server: Pcs) -> None:
    server.publish(S2)  # FMSPC 00606A000000, its own August 2025 PCK CRL
    with _client(server) as client:
        claims = verify_sgx_quote(_read(S2["quote"]), now=_window(S2)[0], collateral=client)
    assert (claims.tcb_status, claims.advisory_ids) == ("SWHardeningNeeded", ("INTEL-SA-00615",))
    assert "/sgx/certification/v4/tcb?fmspc=00606A000000" in server.hits


def test_second_call_is_served_from_the_cache(server: Pcs) -> None:
    quote, now = _read(T10["quote"]), _window(T10)[0]
    with _client(server) as client:
        first = verify_tdx_quote(quote, now=now, collateral=client)
        hits = dict(server.hits)
        second = verify_tdx_quote(quote, now=now + timedelta(days=20), collateral=client)
    assert dict(server.hits) == hits
    assert first == second


def test_expired_document_is_fetched_again(server: Pcs) -> None:
    fmspc, after = bytes.fromhex(T10["pck"]["fmspc"]), datetime.fromisoformat("2025-11-13T00:00:00+00:00")
    with _client(server) as client:
        client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=_window(T10)[0])
        client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=after)  # QE Identity, PCK CRL expired
    assert server.hits == {
        "/tdx/certification/v4/tcb?fmspc=00806F050000": 1,
        "/tdx/certification/v4/qe/identity": 2,
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": 2,
        "/sgx/certification/v4/rootcacrl": 1,
    }


def test_disk_cache_survives_the_client(server: Pcs, tmp_path: Path) -> None:
    fmspc, now = bytes.fromhex(T10["pck"]["fmspc"]), _window(T10)[0]
    with _client(server, cache_dir=tmp_path / "cache") as client:
        fetched = client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=now)
    with _client(server, cache_dir=tmp_path / "cache") as client:
        assert client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=now) == fetched
    assert sum(server.hits.values()) == 4
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 4 and not any(".ppml-partial" in f.name for f in files)
    files[0].write_bytes(b"{damaged")
    with _client(server, cache_dir=tmp_path / "cache") as client:
        assert client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=now) == fetched
    assert sum(server.hits.values()) == 5  # only the damaged entry was fetched again


def test_untrusted_tls_certificate_fails(server: Pcs) -> None:
    with PcsClient(server.url) as client, pytest.raises(CollateralError, match="CERTIFICATE_VERIFY_FAILED") as info:
        client.collateral_for(tee="tdx", fmspc=bytes.fromhex("00806f050000"), ca="platform", now=_window(T10)[0])
    assert info.value.reason == "fetch"
    assert f"{server.url}/tdx/certification/v4/tcb?fmspc=00806F050000" in str(info.value)
    assert not server.hits


def test_http_404_names_the_url(server: Pcs) -> None:
    with _client(server) as client, pytest.raises(CollateralError) as info:
        client.collateral_for(tee="tdx", fmspc=bytes.fromhex("00a06d080000"), ca="platform", now=_window(T10)[0])
    assert str(info.value) == f"{server.url}/tdx/certification/v4/tcb?fmspc=00A06D080000: HTTP 404 Not Found"
    assert info.value.reason == "fetch"


def test_malformed_responses(server: Pcs) -> None:
    tcb_path = "/tdx/certification/v4/tcb?fmspc=00806F050000"
    body, headers = server.routes[tcb_path]
    fmspc, now = bytes.fromhex("00806f050000"), _window(T10)[0]
    for bad_body, bad_headers, message in ((body, {}, "lacks the TCB-Info-Issuer-Chain header"),
                                           (b"<html>", headers, "not valid JSON"),
                                           (body.replace(b'"nextUpdate"', b'"nextUpdatX"'), headers, "nextUpdate")):
        server.routes[tcb_path] = (bad_body, bad_headers)
        with _client(server) as client, pytest.raises(CollateralError, match=message) as info:
            client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=now)
        assert info.value.reason == "malformed" and server.url in str(info.value)
    server.routes[tcb_path] = (body, headers)
    server.routes["/sgx/certification/v4/rootcacrl"] = (b"not a CRL", {})
    with _client(server) as client, pytest.raises(CollateralError, match="rootcacrl: response is not a CRL"):
        client.collateral_for(tee="tdx", fmspc=fmspc, ca="platform", now=now)


def test_network_failure_names_the_url() -> None:
    with PcsClient("https://127.0.0.1:1", timeout=2) as client, pytest.raises(CollateralError) as info:
        client.collateral_for(tee="sgx", fmspc=bytes(6), ca="processor", now=datetime.now(timezone.utc))
    assert str(info.value).startswith("https://127.0.0.1:1/sgx/certification/v4/tcb?fmspc=000000000000: request")


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="https://"):
        PcsClient("http://pccs.example")
    with pytest.raises(ConfigError, match="cannot be turned off"):
        PcsClient(verify=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot be loaded"):
        PcsClient(verify="/nonexistent/ca.pem")
    with PcsClient() as pcs:  # Intel PCS: the root CRL comes from the pinned root's distribution point
        assert pcs.root_crl_url == "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    with PcsClient("https://pccs.example:8081/") as pccs:
        assert pccs.root_crl_url == "https://pccs.example:8081/sgx/certification/v4/rootcacrl"
        with pytest.raises(ValueError, match="ca must be one of"):
            pccs.collateral_for(tee="tdx", fmspc=bytes(6), ca="root", now=datetime.now(timezone.utc))


# --- the offline bundle ---------------------------------------------------------------------------------------


def _bundle(directory: Path, *entries: dict[str, Any]) -> Path:
    """Lay out vector bundles' collateral as an OfflineBundle directory."""
    directory.mkdir(exist_ok=True)
    for entry in entries:
        files = entry["collateral_files"]
        tee = "tdx" if entry["tee_type"] == "0x81" else "sgx"
        ca = "platform" if "Platform" in entry["pck"]["issuer"] else "processor"
        shutil.copyfile(VECTORS / files["tcb_info"], directory / f"tcb_info_{tee}_{entry['pck']['fmspc']}.json")
        shutil.copyfile(VECTORS / files["qe_identity"], directory / f"qe_identity_{tee}.json")
        shutil.copyfile(VECTORS / files["pck_crl"], directory / f"pck_crl_{ca}.der")
        shutil.copyfile(VECTORS / files["root_crl"], directory / "root_crl.der")
        (directory / "tcb_signing_chain.pem").write_bytes(b"".join(
            _pem(x509.load_der_x509_certificate(_read(p.strip()))) for p in files["tcb_signing_chain"].split("+")))
    return directory


def test_offline_bundle_verifies_tdx_and_sgx(tmp_path: Path) -> None:
    tdx = OfflineBundle(_bundle(tmp_path / "october", T10))
    claims = verify_tdx_quote(_read(T10["quote"]), now=_window(T10)[0], collateral=tdx)
    assert (claims.tcb_status, claims.advisory_ids) == ("OutOfDate", T10_ADVISORIES)
    sgx = OfflineBundle(_bundle(tmp_path / "august", S2))
    assert verify_sgx_quote(_read(S2["quote"]), now=_window(S2)[0], collateral=sgx).tcb_status == "SWHardeningNeeded"


def test_offline_bundle_missing_file_names_it(tmp_path: Path) -> None:
    source = OfflineBundle(_bundle(tmp_path / "bundle", T10))
    with pytest.raises(CollateralError, match=re.escape(str(tmp_path / "bundle" / "tcb_info_tdx_00a06d080000.json"))):
        source.collateral_for(tee="tdx", fmspc=bytes.fromhex("00a06d080000"), ca="platform", now=_window(T10)[0])
    (tmp_path / "bundle" / "root_crl.der").unlink()
    with pytest.raises(CollateralError, match="root_crl.der") as info:
        verify_tdx_quote(_read(T10["quote"]), now=_window(T10)[0], collateral=source)
    assert info.value.reason == "missing"


def test_request_comes_from_the_pck_certificate() -> None:
    seen: list[dict[str, Any]] = []

    class Recorder:
        def collateral_for(self, **request: Any) -> Any:
            seen.append(request)
            raise CollateralError("recorded", reason="missing")

    for rel in (T10["quote"], "sgx/dcap-qvl/sgx_quote"):
        with pytest.raises(CollateralError):
            fetch_for_quote(Recorder(), _dcap.parse_quote(_read(rel)), now=_window(T10)[0])
    assert [(r["tee"], r["fmspc"].hex(), r["ca"]) for r in seen] == [
        ("tdx", "00806f050000", "platform"), ("sgx", "00a067110000", "processor")]
    leaf = _dcap.load_pck_chain(_dcap.parse_quote(_read(T10["quote"])).certification.cert_data)[0]
    assert pck_ca(leaf) == "platform"


def test_forged_quote_is_rejected_before_any_request(server: Pcs) -> None:
    forged = bytearray(_read(T10["quote"]))
    forged[100] ^= 0x01  # inside the signed TD report
    with _client(server) as client, pytest.raises(EvidenceInvalid, match="quote signature"):
        verify_tdx_quote(bytes(forged), now=_window(T10)[0], collateral=client)
    assert not server.hits


def test_documentation_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "attestation-verification.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    t12 = EXPECTED["tdx/azure-tdx-vtpm td-quote (cross: automata 1025)"]
    shutil.copyfile(VECTORS / t12["quote"], tmp_path / "td-quote.bin")
    _bundle(tmp_path / "collateral", t12)
    monkeypatch.chdir(tmp_path)
    pinned = example.replace("datetime.now(timezone.utc)", f"datetime.fromisoformat({t12['valid_window_utc'][0]!r})")
    assert pinned != example
    namespace: dict[str, Any] = {}
    exec(compile(pinned, "docs/attestation-verification.md", "exec"), namespace)  # noqa: S102 - our own docs
    claims = namespace["claims"]
    assert dict(claims.tcb_statuses) == {"platform": "OutOfDate", "tdx_module": "OutOfDate", "qe": "UpToDate"}
