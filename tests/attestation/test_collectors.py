"""Evidence collectors against stand-ins for their sources.

Gramine and configfs-tsm are emulated with temporary directories: what these tests check is our file protocol
(which files we write and read, in which order, with which bytes, and the clean-up), not the kernel or Gramine.
configfs generates files on mkdir and on read, so ``FakeTsm`` adds those side effects through the attester's
file-system seams. MAA has no emulator: a loopback HTTPS server checks our requests against MAA's published API
and answers with a canned token.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import re
import shutil
import ssl
import stat
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from ppml.attestation import collectors
from ppml.attestation.collectors import (
    GramineAttester,
    MaaAttester,
    SimulatedAttester,
    TsmAttester,
    attester_by_name,
    code_measurement,
    detect_attester,
    verify_simulated,
)
from ppml.attestation.collectors._snp_certs import CERT_GUIDS
from ppml.attestation.evidence import Evidence, report_data
from ppml.errors import AttestationError, ConfigError, EvidenceInvalid, NoTeeError
from ppml.testing import load_or_create_simulator_key, simulated_attester
from tests.https_server import https_server

REPORT_DATA = report_data("nonce-123", {"kty": "OKP", "crv": "X25519", "x": "abc"})
MR_ENCLAVE = bytes(range(32))


# --- Gramine ---------------------------------------------------------------------------------------------------


def _gramine_tree(tmp_path: Path, kind: str = "dcap", quote: bytes = b"SGX-QUOTE") -> Path:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text(f"{kind}\n")
    (root / "user_report_data").write_bytes(bytes(64))
    (root / "quote").write_bytes(quote)
    return root


def test_gramine_writes_report_data_and_reads_quote(tmp_path: Path) -> None:
    root = _gramine_tree(tmp_path)
    evidence = GramineAttester(root).collect(REPORT_DATA)
    assert evidence == Evidence(tee="sgx", quote=b"SGX-QUOTE")
    assert (root / "user_report_data").read_bytes() == REPORT_DATA


@pytest.mark.parametrize(("kind", "reason", "words"), [
    ("none", "not_attestable", "not attestable"),
    ("epid", "unsupported", "EPID attestation is not supported"),
    ("sim", "unsupported", "expected 'dcap'"),
])
def test_gramine_rejects_non_dcap_attestation(tmp_path: Path, kind: str, reason: str, words: str) -> None:
    with pytest.raises(NoTeeError, match=words) as info:
        GramineAttester(_gramine_tree(tmp_path, kind))
    assert info.value.reason == reason


def test_gramine_outside_an_enclave(tmp_path: Path) -> None:
    with pytest.raises(NoTeeError, match="not running inside a Gramine SGX enclave"):
        GramineAttester(tmp_path)


def test_gramine_io_failure_is_an_attestation_error(tmp_path: Path) -> None:
    root = _gramine_tree(tmp_path)
    (root / "quote").unlink()
    with pytest.raises(AttestationError, match="Gramine quote generation through .* failed") as info:
        GramineAttester(root).collect(REPORT_DATA)
    assert info.value.reason == "collection"


def test_gramine_empty_quote_and_bad_report_data(tmp_path: Path) -> None:
    attester = GramineAttester(_gramine_tree(tmp_path, quote=b""))
    with pytest.raises(AttestationError, match="returned no data"):
        attester.collect(REPORT_DATA)
    with pytest.raises(ValueError, match="exactly 64 bytes, got 32"):
        attester.collect(bytes(32))


# --- configfs-tsm ----------------------------------------------------------------------------------------------


class FakeTsm(TsmAttester):
    """A temporary directory plus the kernel's side effects: attributes on mkdir, outblob on read, generation."""

    def __init__(self, root: Path, *, provider: str = "tdx_guest", auxblob: bytes | None = None,
                 foreign_writes: int = 0, **kwargs: Any) -> None:
        self.fake_provider = provider
        self.fake_auxblob = auxblob
        self.foreign_writes = foreign_writes  # collections during which "another process" writes to our entry
        self.removed: list[dict[str, bytes]] = []
        super().__init__(root, **kwargs)

    def _mkdir(self, path: Path) -> None:
        super()._mkdir(path)
        (path / "provider").write_text(f"{self.fake_provider}\n")
        (path / "generation").write_text("0\n")
        if self.fake_auxblob is not None:
            (path / "auxblob").write_bytes(self.fake_auxblob)

    def _write(self, path: Path, data: bytes) -> None:
        super()._write(path, data)
        self._bump(path.parent)

    def _read(self, path: Path) -> bytes:
        if path.name == "outblob":
            (path.parent / "outblob").write_bytes(b"REPORT:" + (path.parent / "inblob").read_bytes())
            if self.foreign_writes:
                self.foreign_writes -= 1
                self._bump(path.parent)
        return super()._read(path)

    def _rmdir(self, path: Path) -> None:
        self.removed.append({p.name: p.read_bytes() for p in path.iterdir()})
        shutil.rmtree(path)

    @staticmethod
    def _bump(entry: Path) -> None:
        generation = entry / "generation"
        generation.write_text(f"{int(generation.read_text()) + 1}\n")


def _cert(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _cert_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """GHCB certificate table: (guid, offset, length) entries, a zero terminator, then the DER blobs."""
    offset = 24 * (len(entries) + 1)
    head, body = b"", b""
    for guid, der in entries:
        head += guid + (offset + len(body)).to_bytes(4, "little") + len(der).to_bytes(4, "little")
        body += der
    return head + bytes(24) + body


def _guid(name: str) -> bytes:
    return next(guid for guid, known in CERT_GUIDS.items() if known == name)


def test_tsm_tdx_round_trip_and_cleanup(tmp_path: Path) -> None:
    attester = FakeTsm(tmp_path)
    evidence = attester.collect(REPORT_DATA)
    assert attester.tee == "tdx"
    assert evidence == Evidence(tee="tdx", quote=b"REPORT:" + REPORT_DATA)
    assert attester.removed[-1]["inblob"] == REPORT_DATA
    assert "privlevel" not in attester.removed[-1]
    assert list(tmp_path.iterdir()) == []  # the probe entry and the report entry are both gone


def test_tsm_snp_certificates_become_a_pem_bundle_leaf_first(tmp_path: Path) -> None:
    ask, vcek = _cert("SEV-ASK"), _cert("SEV-VCEK")
    crl_guid = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea").bytes
    table = _cert_table([(_guid("ASK"), ask), (crl_guid, b"not a certificate"), (_guid("VCEK"), vcek)])
    attester = FakeTsm(tmp_path, provider="sev_guest", auxblob=table, privlevel=2)
    evidence = attester.collect(REPORT_DATA)
    assert evidence.tee == "snp" and evidence.quote == b"REPORT:" + REPORT_DATA
    certs = x509.load_pem_x509_certificates(evidence.certificates)
    assert [c.public_bytes(serialization.Encoding.DER) for c in certs] == [vcek, ask]
    assert attester.removed[-1]["privlevel"] == b"2\n"


@pytest.mark.parametrize("auxblob", [None, b"", bytes(24)])
def test_tsm_snp_without_certificates(tmp_path: Path, auxblob: bytes | None) -> None:
    evidence = FakeTsm(tmp_path, provider="sev_guest", auxblob=auxblob).collect(REPORT_DATA)
    assert evidence.certificates == b""


@pytest.mark.parametrize("table", [
    uuid.uuid4().bytes + bytes(8),  # an entry we skip, then no terminating entry
    bytes.fromhex("63da758de6644564adc5f4b93be8accd") + (1000).to_bytes(4, "little") + (10).to_bytes(4, "little"),
])
def test_tsm_malformed_certificate_table(tmp_path: Path, table: bytes) -> None:
    with pytest.raises(EvidenceInvalid, match="SNP certificate table"):
        FakeTsm(tmp_path, provider="sev_guest", auxblob=table).collect(REPORT_DATA)
    assert list(tmp_path.iterdir()) == []


def test_tsm_retries_once_after_a_concurrent_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    attester = FakeTsm(tmp_path, foreign_writes=1)
    with caplog.at_level(logging.WARNING):
        assert attester.collect(REPORT_DATA).quote == b"REPORT:" + REPORT_DATA
    assert "retrying once" in caplog.text


def test_tsm_gives_up_after_two_conflicts(tmp_path: Path) -> None:
    attester = FakeTsm(tmp_path, foreign_writes=2)
    with pytest.raises(AttestationError, match="another process is writing") as info:
        attester.collect(REPORT_DATA)
    assert info.value.reason == "concurrent_writer"
    assert list(tmp_path.iterdir()) == []


def test_tsm_rejects_unknown_provider_missing_root_and_bad_privlevel(tmp_path: Path) -> None:
    with pytest.raises(NoTeeError, match="'arm_cca_guest' is not supported"):
        FakeTsm(tmp_path, provider="arm_cca_guest")
    with pytest.raises(NoTeeError, match="configfs-tsm is not available"):
        TsmAttester(tmp_path / "missing")
    with pytest.raises(ConfigError, match="only supported by the sev_guest provider"):
        FakeTsm(tmp_path, privlevel=0)
    with pytest.raises(ConfigError, match="between 0 and 3"):
        FakeTsm(tmp_path, provider="sev_guest", privlevel=4)


class BrokenTsm(FakeTsm):
    """A FakeTsm whose kernel misbehaves in one chosen way after construction."""

    fault = ""

    def _read(self, path: Path) -> bytes:
        if self.fault == "generation" and path.name == "generation":
            return b"many\n"
        if self.fault == "empty" and path.name == "outblob":
            return b""
        if self.fault == "eio" and path.name == "outblob":
            raise OSError(5, "Input/output error")
        return super()._read(path)

    def _mkdir(self, path: Path) -> None:
        if self.fault == "mkdir":
            raise PermissionError(13, "Permission denied")
        super()._mkdir(path)

    def _rmdir(self, path: Path) -> None:
        super()._rmdir(path)
        if self.fault == "rmdir":
            raise OSError(16, "Device or resource busy")


@pytest.mark.parametrize(("fault", "words"), [
    ("generation", "generation is not a number: 'many'"),
    ("empty", "outblob was empty"),
    ("eio", "report generation in .* failed: .*Input/output error"),
    ("mkdir", "cannot create configfs-tsm report instance"),
])
def test_tsm_kernel_failures(tmp_path: Path, fault: str, words: str) -> None:
    attester = BrokenTsm(tmp_path)
    attester.fault = fault
    with pytest.raises(AttestationError, match=words):
        attester.collect(REPORT_DATA)
    assert list(tmp_path.iterdir()) == []


def test_tsm_cleanup_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    attester = BrokenTsm(tmp_path)
    attester.fault = "rmdir"
    with caplog.at_level(logging.WARNING):
        assert attester.collect(REPORT_DATA).tee == "tdx"
    assert "could not remove configfs-tsm report instance" in caplog.text


def test_tsm_certificate_table_needs_a_terminator_soon(tmp_path: Path) -> None:
    table = (uuid.uuid4().bytes + bytes(8)) * 70
    with pytest.raises(EvidenceInvalid, match="no terminating entry within 64 entries"):
        FakeTsm(tmp_path, provider="sev_guest", auxblob=table).collect(REPORT_DATA)


def test_tsm_real_directory_without_kernel_is_not_a_tee(tmp_path: Path) -> None:
    with pytest.raises(NoTeeError, match="cannot read the configfs-tsm provider"):
        TsmAttester(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- simulated TEE ---------------------------------------------------------------------------------------------


@pytest.fixture
def sim_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _sim(key: Ed25519PrivateKey, **kwargs: Any) -> SimulatedAttester:
    return SimulatedAttester(key, mr_enclave=MR_ENCLAVE, clock=lambda: 1_700_000_000.5, **kwargs)


def test_simulated_round_trip(sim_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture) -> None:
    attester = _sim(sim_key, isv_prod_id=7, isv_svn=3, debug=True)
    with caplog.at_level(logging.WARNING):
        evidence = attester.collect(REPORT_DATA)
        attester.collect(REPORT_DATA)
    assert caplog.text.count("SIMULATED TEE") == 2
    claims = verify_simulated(evidence, trusted_keys=[Ed25519PrivateKey.generate().public_key(), attester.public_key])
    raw = sim_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert claims.tee == "simulated" and claims.report_data == REPORT_DATA and claims.debug is True
    assert dict(claims.measurements) == {"mr_enclave": MR_ENCLAVE.hex(), "mr_signer": hashlib.sha256(raw).hexdigest()}
    assert dict(claims.svns) == {"isv_prod_id": 7, "isv_svn": 3}
    assert b'"issued_at":1700000000' in evidence.quote
    assert Evidence.from_json(evidence.to_json()) == evidence


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_simulated_tampering_is_detected(sim_key: Ed25519PrivateKey) -> None:
    quote = _sim(sim_key).collect(REPORT_DATA).quote
    keys = [sim_key.public_key()]
    # Still canonical JSON, so only the signature catches it.
    at = quote.index(b'"report_data":"') + len(b'"report_data":"')
    changed = quote[:at] + (b"1" if quote[at : at + 1] != b"1" else b"2") + quote[at + 1 :]
    for tampered in (changed, _flip(quote, len(quote) - 1)):
        with pytest.raises(EvidenceInvalid, match="signature does not verify"):
            verify_simulated(Evidence("simulated", tampered), trusted_keys=keys)
    for index in range(len(quote) - 64):  # any bit flip in header or payload fails, whatever check catches it
        with pytest.raises(EvidenceInvalid):
            verify_simulated(Evidence("simulated", _flip(quote, index)), trusted_keys=keys)


def test_simulated_untrusted_key(sim_key: Ed25519PrivateKey) -> None:
    evidence = _sim(sim_key).collect(REPORT_DATA)
    with pytest.raises(EvidenceInvalid, match="untrusted key") as info:
        verify_simulated(evidence, trusted_keys=[Ed25519PrivateKey.generate().public_key()])
    assert info.value.reason == "untrusted_key"
    with pytest.raises(ConfigError, match="no trusted simulator keys"):
        verify_simulated(evidence, trusted_keys=[])


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda q: q[:40], "truncated"),
    (lambda q: b"XXXXXXX" + q[7:], "PPMLSIM magic"),
    (lambda q: q[:7] + b"\x02" + q[8:], "version 2 is not supported"),
    (lambda q: q + b"\0", "does not match its payload length"),
])
def test_simulated_malformed(sim_key: Ed25519PrivateKey, mutate: Any, words: str) -> None:
    quote = _sim(sim_key).collect(REPORT_DATA).quote
    with pytest.raises(EvidenceInvalid, match=words):
        verify_simulated(Evidence("simulated", mutate(quote)), trusted_keys=[sim_key.public_key()])


def _resigned(key: Ed25519PrivateKey, quote: bytes, change: Any, *, canonical: bool = True) -> Evidence:
    """The quote with its payload changed by ``change`` and signed again, to reach the field checks."""
    doc = json.loads(quote[12:-64])
    change(doc)
    options: dict[str, Any] = {"sort_keys": True, "separators": (",", ":")} if canonical else {"indent": 1}
    payload = json.dumps(doc, **options).encode()
    signed = quote[:8] + len(payload).to_bytes(4, "big") + payload
    return Evidence("simulated", signed + key.sign(signed))


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.update(isv_svn=70000), "'isv_svn' must be an integer from 0 to 65535"),
    (lambda d: d.update(isv_prod_id=True), "'isv_prod_id' must be an integer"),
    (lambda d: d.update(debug="no"), "'debug' must be true or false"),
    (lambda d: d.update(mr_enclave="ab"), "'mr_enclave' must be 32 bytes of hex"),
    (lambda d: d.update(report_data="zz" * 64), "'report_data' is not hex"),
    (lambda d: d.update(issued_at=-1), "'issued_at' must be an integer"),
    (lambda d: d.update(extra=1), "must have exactly the fields"),
    (lambda d: d.pop("debug"), "must have exactly the fields"),
])
def test_simulated_signed_but_invalid_fields(sim_key: Ed25519PrivateKey, change: Any, words: str) -> None:
    evidence = _resigned(sim_key, _sim(sim_key).collect(REPORT_DATA).quote, change)
    with pytest.raises(EvidenceInvalid, match=words):
        verify_simulated(evidence, trusted_keys=[sim_key.public_key()])


def test_simulated_payload_must_be_canonical_json(sim_key: Ed25519PrivateKey) -> None:
    evidence = _resigned(sim_key, _sim(sim_key).collect(REPORT_DATA).quote, lambda d: None, canonical=False)
    with pytest.raises(EvidenceInvalid, match="not canonical JSON"):
        verify_simulated(evidence, trusted_keys=[sim_key.public_key()])
    broken = evidence.quote[:12] + b"X" + evidence.quote[13:]
    with pytest.raises(EvidenceInvalid, match="not valid JSON"):
        verify_simulated(Evidence("simulated", broken), trusted_keys=[sim_key.public_key()])


def test_simulated_rejects_other_tees_and_bad_settings(sim_key: Ed25519PrivateKey) -> None:
    with pytest.raises(EvidenceInvalid, match="expected simulated evidence"):
        verify_simulated(Evidence("sgx", b"quote"), trusted_keys=[sim_key.public_key()])
    with pytest.raises(ConfigError, match="must be an Ed25519 private key"):
        SimulatedAttester(ec.generate_private_key(ec.SECP256R1()), mr_enclave=MR_ENCLAVE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mr_enclave must be 32 bytes"):
        SimulatedAttester(sim_key, mr_enclave=b"short")
    with pytest.raises(ConfigError, match="isv_svn must be an integer"):
        SimulatedAttester(sim_key, mr_enclave=MR_ENCLAVE, isv_svn=70000)
    assert sim_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex() \
        in repr(_sim(sim_key))


def test_code_measurement_is_stable_and_tracks_changes(tmp_path: Path) -> None:
    assert code_measurement() == code_measurement() and len(code_measurement()) == 32
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.py").write_text("A = 1\n")
    (tree / "sub" / "b.py").write_text("B = 2\n")
    first = code_measurement(tree)
    (tree / "notes.txt").write_text("not code")
    assert code_measurement(tree) == first
    (tree / "a.py").write_text("A = 2\n")
    edited = code_measurement(tree)
    assert edited != first
    (tree / "sub" / "b.py").rename(tree / "sub" / "c.py")
    assert code_measurement(tree) not in (first, edited)


def test_simulator_key_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "simulator.pem"
    key = load_or_create_simulator_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert load_or_create_simulator_key(path).public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    path.chmod(0o640)  # a simulator key others can read forges evidence a broker trusting it accepts: refused
    with pytest.raises(ConfigError, match="accessible by group or others"):
        load_or_create_simulator_key(path)
    path.chmod(0o600)
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_or_create_simulator_key(path)
    path.write_text("garbage")
    with pytest.raises(ConfigError, match="not an unencrypted PEM PKCS#8 private key"):
        load_or_create_simulator_key(path)


def test_simulated_attester_helper_measures_this_code(tmp_path: Path) -> None:
    attester = simulated_attester(tmp_path / "key.pem", isv_svn=5)
    assert attester.mr_enclave == code_measurement() and attester.isv_svn == 5
    claims = verify_simulated(attester.collect(REPORT_DATA), trusted_keys=[attester.public_key])
    assert claims.measurements["mr_enclave"] == code_measurement().hex()


# --- detection -------------------------------------------------------------------------------------------------


def test_detect_prefers_gramine_then_tsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gramine_root, tsm_root = _gramine_tree(tmp_path), tmp_path / "tsm"
    tsm_root.mkdir()
    monkeypatch.setattr(collectors, "TsmAttester", FakeTsm)
    assert isinstance(detect_attester(gramine_root=gramine_root, tsm_root=tsm_root), GramineAttester)
    found = detect_attester(gramine_root=tmp_path / "nowhere", tsm_root=tsm_root)
    assert isinstance(found, FakeTsm) and found.tee == "tdx"


def test_detect_without_tee_needs_opt_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    roots = {"gramine_root": tmp_path / "attestation", "tsm_root": tmp_path / "tsm"}
    with pytest.raises(NoTeeError) as info:
        detect_attester(**roots)
    message = str(info.value)
    assert str(tmp_path / "attestation" / "quote") in message and str(tmp_path / "tsm") in message
    assert "allow_simulated=True" in message
    with caplog.at_level(logging.WARNING):
        found = detect_attester(allow_simulated=True, simulator_key_path=tmp_path / "sim.pem", **roots)
    assert isinstance(found, SimulatedAttester) and (tmp_path / "sim.pem").exists()
    assert "SIMULATED TEE" in caplog.text


def test_attester_by_name(tmp_path: Path) -> None:
    assert isinstance(attester_by_name("simulated", simulator_key_path=tmp_path / "k.pem"), SimulatedAttester)
    with pytest.raises(ConfigError, match="unknown attester 'sev'; choose one of auto, gramine, simulated, tsm"):
        attester_by_name("sev")
    if not Path("/dev/attestation/quote").exists():
        with pytest.raises(NoTeeError):
            attester_by_name("gramine")


# --- Microsoft Azure Attestation over loopback HTTPS -----------------------------------------------------------


class RecordingAttester:
    """Stands in for a hardware attester: records the report data it was asked to bind."""

    def __init__(self, tee: str, certificates: bytes = b"") -> None:
        self.tee = tee
        self.certificates = certificates
        self.seen: list[bytes] = []

    def collect(self, report_data: bytes) -> Evidence:
        self.seen.append(report_data)
        return Evidence(tee=self.tee, quote=b"HW-REPORT", certificates=self.certificates)


class _MaaHandler(http.server.BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]
    reply: tuple[int, dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "content_type": self.headers["Content-Type"], "body": body})
        status, doc = self.reply
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr logging
        pass


@pytest.fixture
def maa(tmp_path: Path) -> Iterator[tuple[str, type[_MaaHandler], ssl.SSLContext]]:
    handler = type("Handler", (_MaaHandler,), {"requests": [], "reply": (200, {"token": "aGVhZA.Ym9keQ.c2ln"})})
    with https_server(handler, tmp_path / "tls") as (url, ca_file):
        yield url, handler, ssl.create_default_context(cafile=str(ca_file))


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_maa_sgx_request_shape_and_binding(maa: tuple[str, Any, ssl.SSLContext]) -> None:
    endpoint, handler, trust = maa
    inner = RecordingAttester("sgx")
    with httpx.Client(verify=trust) as client:
        evidence = MaaAttester(endpoint + "/", inner, http_client=client).collect(REPORT_DATA)
    assert evidence == Evidence(tee="maa", quote=b"aGVhZA.Ym9keQ.c2ln")
    assert inner.seen == [hashlib.sha256(REPORT_DATA).digest() + bytes(32)]
    (request,) = handler.requests
    assert request["path"] == "/attest/SgxEnclave?api-version=2022-08-01"
    assert request["content_type"] == "application/json"
    body = request["body"]
    assert set(body) == {"quote", "runtimeData"}
    assert _unb64url(body["quote"]) == b"HW-REPORT" and "=" not in body["quote"]
    assert body["runtimeData"]["dataType"] == "Binary"
    assert _unb64url(body["runtimeData"]["data"]) == REPORT_DATA


def test_maa_snp_request_shape(maa: tuple[str, Any, ssl.SSLContext]) -> None:
    endpoint, handler, trust = maa
    chain = b"-----BEGIN CERTIFICATE-----\nVCEK\n-----END CERTIFICATE-----\n"
    with httpx.Client(verify=trust) as client:
        MaaAttester(endpoint, RecordingAttester("snp", chain), http_client=client).collect(REPORT_DATA)
    (request,) = handler.requests
    assert request["path"] == "/attest/SevSnpVm?api-version=2022-08-01"
    body = request["body"]
    assert set(body) == {"report", "runtimeData"}
    report = json.loads(_unb64url(body["report"]))
    assert _unb64url(report["SnpReport"]) == b"HW-REPORT" and _unb64url(report["VcekCertChain"]) == chain
    assert _unb64url(body["runtimeData"]["data"]) == REPORT_DATA


def test_maa_errors(maa: tuple[str, Any, ssl.SSLContext]) -> None:
    endpoint, handler, trust = maa
    handler.reply = (400, {"error": {"code": "InvalidParameter", "message": "quote is bad"}})
    with httpx.Client(verify=trust) as client:
        with pytest.raises(AttestationError, match="HTTP 400 InvalidParameter: quote is bad") as info:
            MaaAttester(endpoint, RecordingAttester("sgx"), http_client=client).collect(REPORT_DATA)
        assert info.value.reason == "maa_rejected"
        handler.reply = (200, {"jwt": "x"})
        with pytest.raises(AttestationError, match="no JWT 'token' field"):
            MaaAttester(endpoint, RecordingAttester("sgx"), http_client=client).collect(REPORT_DATA)
        handler.reply = (502, ["not", "an", "error", "object"])
        with pytest.raises(AttestationError, match=r'HTTP 502 \["not"'):
            MaaAttester(endpoint, RecordingAttester("sgx"), http_client=client).collect(REPORT_DATA)
        handler.reply = (200, ["no", "token"])
        with pytest.raises(AttestationError, match="no JWT 'token' field"):
            MaaAttester(endpoint, RecordingAttester("sgx"), http_client=client).collect(REPORT_DATA)
    shifty = RecordingAttester("sgx")
    attester = MaaAttester(endpoint, shifty)
    shifty.tee = "tdx"  # an inner attester whose evidence does not match what it announced
    with pytest.raises(AttestationError, match="returned 'tdx' evidence"):
        attester.collect(REPORT_DATA)
    with pytest.raises(AttestationError, match="no VCEK certificate chain"):
        MaaAttester(endpoint, RecordingAttester("snp")).collect(REPORT_DATA)


def test_maa_verifies_tls_by_default(maa: tuple[str, Any, ssl.SSLContext]) -> None:
    endpoint, handler, _ = maa
    with pytest.raises(AttestationError, match="MAA request to .* failed") as info:
        MaaAttester(endpoint, RecordingAttester("sgx")).collect(REPORT_DATA)  # the test CA is not trusted
    assert info.value.reason == "maa_unreachable" and handler.requests == []


def test_maa_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="https:// URL"):
        MaaAttester("http://maa.example", RecordingAttester("sgx"))
    with pytest.raises(ConfigError, match="not 'tdx'"):
        MaaAttester("https://maa.example", RecordingAttester("tdx"))


# --- documentation ---------------------------------------------------------------------------------------------


def test_docs_example_runs(caplog: pytest.LogCaptureFixture) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "attestation-evidence.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", doc.split("## Example", 1)[1].split("\n## ", 1)[0], re.S)
    namespace: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING):
        exec(compile(block, "docs/attestation-evidence.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["claims"].tee == "simulated" and "SIMULATED TEE" in caplog.text
