"""SEV-SNP report parsing and verification against real AMD-signed reports (tests/vectors/attestation/sev-snp)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml.attestation.errors import EvidenceInvalid
from ppml.attestation.snp import PINNED_ARK_SPKI_SHA256, REPORT_SIZE, parse_snp_report, verify_snp_report

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "attestation"
SNP = VECTORS / "sev-snp"
KDS = SNP / "amd-kds-chains"
ENTRIES: list[dict[str, Any]] = json.loads((VECTORS / "expected_results.json").read_text())["sev_snp_reports"]


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _report(entry: dict[str, Any]) -> bytes:
    path = entry["report"].split(" ")[0]
    raw = (VECTORS / path).read_bytes()
    if path.endswith(".json"):
        doc = json.loads(raw)
        raw = bytes(doc["report"]) if isinstance(doc.get("report"), list) else _b64u(doc["hcl_report"])
    return raw[entry["offset"] : entry["offset"] + REPORT_SIZE]


def _vcek(entry: dict[str, Any]) -> bytes:
    path = entry["vcek"].split(" ")[0]
    if path.endswith(".json"):
        return _b64u(json.loads((VECTORS / path).read_text())["vcek"])
    return (VECTORS / path).read_bytes()


def _chain(entry: dict[str, Any]) -> bytes:
    return (VECTORS / entry["chain"]).read_bytes()


def _inside(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["valid_window_utc"][0]) + timedelta(days=30)


def _entry(bundle: str) -> dict[str, Any]:
    return next(e for e in ENTRIES if e["bundle"] == bundle)


def _verify(entry: dict[str, Any], *, report: bytes | None = None, vcek: bytes | None = None,
            chain: bytes | None = None, now: datetime | None = None):
    return verify_snp_report(report if report is not None else _report(entry),
                             vcek_pem_or_der=vcek if vcek is not None else _vcek(entry),
                             chain_pem=chain if chain is not None else _chain(entry),
                             now=now if now is not None else _inside(entry))


def test_vectors_present() -> None:
    assert len(ENTRIES) == 9
    assert all(e["report_sig_ok"] and e["vcek_chain_ok"] for e in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["bundle"] for e in ENTRIES])
def test_parse_matches_documented_values(entry: dict[str, Any]) -> None:
    report = parse_snp_report(_report(entry))
    assert report.version == entry["version"]
    assert report.vmpl == entry["vmpl"]
    assert report.policy == int(entry["policy"], 16)
    assert report.guest_svn == entry["guest_svn"]
    assert report.measurement.hex() == entry["measurement"]
    assert report.report_data.hex() == entry["report_data"]
    assert report.host_data.hex() == entry["host_data"]
    assert report.family_id.hex() == entry["family_id"]
    assert report.image_id.hex() == entry["image_id"]
    assert report.id_key_digest.hex() == entry["id_key_digest"]
    assert report.chip_id.hex() == entry["chip_id"]
    tcb = entry["reported_tcb"]
    assert report.reported_tcb.raw.hex() == tcb["raw"]
    assert (report.reported_tcb.bootloader, report.reported_tcb.tee, report.reported_tcb.snp,
            report.reported_tcb.microcode) == (tcb["bootloader"], tcb["tee"], tcb["snp"], tcb["microcode"])
    expected_cpuid = tuple(int(x, 16) for x in entry["cpuid"]) if entry["cpuid"] else None
    assert report.cpuid == expected_cpuid
    assert report.signing_key == (1 if entry["signing_key"] == "VLEK" else 0)
    assert report.debug == bool(int(entry["policy"], 16) >> 19 & 1)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["bundle"] for e in ENTRIES])
def test_verifies_inside_window(entry: dict[str, Any]) -> None:
    claims = _verify(entry)
    assert claims.tee == "snp"
    assert claims.measurements["measurement"] == entry["measurement"]
    assert claims.measurements["host_data"] == entry["host_data"]
    assert claims.measurements["chip_id"] == entry["chip_id"]
    assert claims.measurements["reported_tcb"] == entry["reported_tcb"]["raw"]
    assert claims.report_data.hex() == entry["report_data"]
    assert claims.svns["vmpl"] == entry["vmpl"]
    assert claims.svns["policy"] == int(entry["policy"], 16)
    assert claims.svns["guest_svn"] == entry["guest_svn"]
    assert claims.svns["tcb_snp"] == entry["reported_tcb"]["snp"]
    assert claims.svns["tcb_microcode"] == entry["reported_tcb"]["microcode"]
    assert claims.quote_version == entry["version"]


def test_debug_policy_bit() -> None:
    assert _verify(_entry("sev-snp/go-sev-guest")).debug is True  # policy 0xb0000: DEBUG (bit 19) set
    assert _verify(_entry("sev-snp/virtee")).debug is False


@pytest.mark.parametrize("offset", [0x90, 0x90 + 47, 21, 0x50, 0x29F])
def test_bit_flip_breaks_signature(offset: int) -> None:
    entry = _entry("sev-snp/virtee")
    report = bytearray(_report(entry))
    report[offset] ^= 0x01
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, report=bytes(report))
    assert info.value.reason in ("report_signature", "vcek_binding", "unsupported")
    if 0x50 <= offset < 0x180:
        assert info.value.reason == "report_signature"


def test_flipped_signature_bytes_fail() -> None:
    entry = _entry("sev-snp/trustee VCEK")
    report = bytearray(_report(entry))
    report[0x2A0] ^= 0x80
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, report=bytes(report))
    assert info.value.reason == "report_signature"


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_negative_vceks_rejected(name: str) -> None:
    entry = _entry("sev-snp/trustee VCEK")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, vcek=(SNP / "trustee" / name).read_bytes())
    assert info.value.reason == "vcek_chain"


def test_vcek_of_another_chip_rejected() -> None:
    entry = _entry("sev-snp/trustee VCEK")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, vcek=(SNP / "virtee" / "vcek_milan.der").read_bytes(), now=datetime(2024, 1, 1, tzinfo=UTC))
    assert info.value.reason == "vcek_binding"  # hwID differs from CHIP_ID


@pytest.mark.parametrize("chain", ["ask_ark_genoa.pem", "ask_ark_turin_vcek.pem", "ask_ark_milan_vlek.pem"])
def test_chain_of_other_product_line_rejected(chain: str) -> None:
    entry = _entry("sev-snp/virtee")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, chain=(KDS / chain).read_bytes())
    assert info.value.reason == "vcek_chain"


def test_milan_ask_with_genoa_ark_rejected() -> None:
    entry = _entry("sev-snp/virtee")
    milan_ask = x509.load_pem_x509_certificates((KDS / "ask_ark_milan.pem").read_bytes())[0]
    genoa_ark = x509.load_pem_x509_certificates((KDS / "ask_ark_genoa.pem").read_bytes())[1]
    mixed = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (milan_ask, genoa_ark))
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, chain=mixed)
    assert info.value.reason == "vcek_chain"


def test_genoa_vcek_with_milan_chain_rejected() -> None:
    entry = _entry("sev-snp/azure-snp-vtpm evidence-genoa.json")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, chain=(KDS / "ask_ark_milan.pem").read_bytes())
    assert info.value.reason == "vcek_chain"


def test_chain_without_ark_rejected() -> None:
    entry = _entry("sev-snp/virtee")
    ask = x509.load_pem_x509_certificates(_chain(entry))[0]
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, chain=ask.public_bytes(serialization.Encoding.PEM))
    assert info.value.reason == "vcek_chain"


def test_unpinned_root_rejected() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark = x509.load_pem_x509_certificates((KDS / "ask_ark_milan.pem").read_bytes())[1]
    fake = (x509.CertificateBuilder().subject_name(ark.subject).issuer_name(ark.subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(ark.not_valid_before_utc).not_valid_after(ark.not_valid_after_utc)
            .sign(key, hashes.SHA384(), rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)))
    entry = _entry("sev-snp/virtee")
    ask = x509.load_pem_x509_certificates(_chain(entry))[0]
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ask, fake))
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, chain=chain)
    assert info.value.reason == "untrusted_root"


def test_after_vcek_expiry_rejected() -> None:
    entry = _entry("sev-snp/virtee")
    after = datetime.fromisoformat(entry["valid_window_utc"][1]) + timedelta(seconds=1)
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, now=after)
    assert info.value.reason == "expired"


def test_vlek_after_expiry_rejected() -> None:
    entry = _entry("sev-snp/trustee VLEK")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, now=datetime(2025, 12, 11, tzinfo=UTC))
    assert info.value.reason == "expired"


def test_before_vcek_validity_rejected() -> None:
    entry = _entry("sev-snp/go-sev-guest")
    before = datetime.fromisoformat(entry["valid_window_utc"][0]) - timedelta(seconds=1)
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, now=before)
    assert info.value.reason == "expired"


def test_vlek_report_with_vcek_rejected() -> None:
    entry = _entry("sev-snp/trustee VLEK")
    vcek_entry = _entry("sev-snp/trustee VCEK")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, vcek=_vcek(vcek_entry), chain=_chain(vcek_entry), now=_inside(entry))
    assert info.value.reason == "vcek_binding"


def test_turin_chain_verifies_but_not_for_milan_report() -> None:
    # No Turin report exists in the vectors: the Turin VCEK chains to the pinned ARK-Turin, then fails only at
    # the binding to the (Milan) report.
    entry = _entry("sev-snp/virtee")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, vcek=(SNP / "virtee" / "vcek_turin.der").read_bytes(),
                chain=(SNP / "virtee" / "cert_chain_turin").read_bytes(), now=datetime(2025, 6, 1, tzinfo=UTC))
    assert info.value.reason == "vcek_binding"


def test_pins_match_kds_roots() -> None:
    for name in ("milan", "genoa", "turin"):
        ark = next(c for c in x509.load_pem_x509_certificates((KDS / f"trustee_{name}_ask_ark_asvk.pem").read_bytes())
                   if c.issuer == c.subject)
        spki = ark.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(spki)
        assert digest.finalize().hex() == PINNED_ARK_SPKI_SHA256[name.capitalize()]


def test_parse_rejects_short_and_unknown() -> None:
    good = _report(_entry("sev-snp/virtee"))
    with pytest.raises(EvidenceInvalid, match="truncated"):
        parse_snp_report(good[:3])
    with pytest.raises(EvidenceInvalid, match="must be") as info:
        parse_snp_report(good[:0x2A0])
    assert info.value.reason == "malformed"
    with pytest.raises(EvidenceInvalid, match="must be"):
        parse_snp_report(good + b"\x00")
    for version in (0, 1, 6, 0xFFFFFFFF):
        with pytest.raises(EvidenceInvalid, match="version") as info:
            parse_snp_report(version.to_bytes(4, "little") + good[4:])
        assert info.value.reason == "unsupported"


def test_unknown_signature_algorithm_rejected() -> None:
    entry = _entry("sev-snp/virtee")
    report = bytearray(_report(entry))
    report[0x34] = 2
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, report=bytes(report))
    assert info.value.reason == "unsupported"


def test_garbage_certificates_rejected() -> None:
    entry = _entry("sev-snp/virtee")
    with pytest.raises(EvidenceInvalid) as info:
        _verify(entry, vcek=b"not a certificate")
    assert info.value.reason == "malformed"
