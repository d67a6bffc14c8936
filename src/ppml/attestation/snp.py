"""AMD SEV-SNP attestation reports: parsing, and verification up to a pinned AMD root key (ARK).

Layout from AMD's "SEV Secure Nested Paging Firmware ABI Specification" (ATTESTATION_REPORT structure):
all integers are little-endian, the report is 0x4A0 bytes, and the ECDSA P-384/SHA-384 signature at 0x2A0
(r and s, 72 bytes little-endian each) covers bytes 0x000-0x29F.

Verification runs in a fixed order so that each failure names the first broken link (STYLE practice 8):
ARK pinned and self-signed, ASK (VCEK) or ASVK (VLEK) signed by the ARK, VCEK/VLEK signed by that key
(RSA-PSS SHA-384), every certificate valid at ``now``, the VCEK bound to the report (hwID = CHIP_ID,
TCB extensions = REPORTED_TCB), and finally the report signature. Only then are :class:`Claims` returned.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ppml.attestation._reader import Reader as _Reader
from ppml.attestation.claims import Claims
from ppml.attestation.errors import EvidenceInvalid

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})
SIG_ALGO_ECDSA_P384_SHA384 = 1
POLICY_SMT_BIT = 16
POLICY_MIGRATE_MA_BIT = 18
POLICY_DEBUG_BIT = 19
POLICY_SINGLE_SOCKET_BIT = 20
TURIN_FAMILY = 0x1A
SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1

# SHA-256 of the SubjectPublicKeyInfo (DER) of each AMD Root Key, taken from AMD KDS cert_chain files
# (tests/vectors/attestation/sev-snp/amd-kds-chains/). The public key is pinned, not the certificate bytes,
# so a re-issued ARK with the same key is still accepted.
PINNED_ARK_SPKI_SHA256: dict[str, str] = {
    "Milan": "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9",
    "Genoa": "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831",
    "Turin": "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08",
}


def _check_pins() -> None:
    """Fail at import if the pin table is damaged: every pin 32 bytes of hex, all distinct."""
    values = list(PINNED_ARK_SPKI_SHA256.values())
    if len(set(values)) != len(values) or set(PINNED_ARK_SPKI_SHA256) != {"Milan", "Genoa", "Turin"}:
        raise RuntimeError("AMD ARK pin table is corrupt")
    for value in values:
        if len(bytes.fromhex(value)) != 32:
            raise RuntimeError("AMD ARK pin table is corrupt")


_check_pins()

_PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_OID_RSASSA_PSS = x509.ObjectIdentifier("1.2.840.113549.1.1.10")
_OID_BL_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1")
_OID_TEE_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2")
_OID_SNP_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3")
_OID_UCODE_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8")
_OID_FMC_SPL = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9")
_OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION (8 bytes). Milan/Genoa: bl, tee, 4 reserved, snp, ucode; Turin: fmc, bl, tee, snp, 3 reserved,
    ucode. ``fmc`` is None for the pre-Turin layout."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes, *, turin: bool) -> TcbVersion:
        if turin:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0], raw=raw)
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7], fmc=None, raw=raw)


@dataclass(frozen=True)
class SnpReport:
    """A parsed ATTESTATION_REPORT. ``signed`` is exactly the bytes the VCEK/VLEK signed."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    signature_r: int
    signature_s: int
    signed: bytes

    @property
    def debug(self) -> bool:
        """POLICY.DEBUG (bit 19): the hypervisor may debug the guest, so its memory is not confidential."""
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)

    @property
    def is_turin(self) -> bool:
        return self.cpuid is not None and self.cpuid[0] == TURIN_FAMILY


def parse_snp_report(data: bytes) -> SnpReport:
    """Parse an SEV-SNP ATTESTATION_REPORT (versions 2-5); bytes after 0x4A0 are rejected."""
    data = bytes(data)
    if len(data) < 4:
        raise EvidenceInvalid(f"SEV-SNP report truncated: {len(data)} bytes, need {REPORT_SIZE}", reason="malformed")
    version = int.from_bytes(data[0:4], "little")
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceInvalid(f"unsupported SEV-SNP report version {version} (expected 2 to 5)", reason="unsupported")
    if len(data) != REPORT_SIZE:
        raise EvidenceInvalid(f"SEV-SNP report must be {REPORT_SIZE} bytes, got {len(data)}", reason="malformed")
    r = _Reader(data, "SEV-SNP report")
    r.u32("version")
    guest_svn = r.u32("guest_svn")
    policy = r.u64("policy")
    family_id = r.take(16, "family_id")
    image_id = r.take(16, "image_id")
    vmpl = r.u32("vmpl")
    signature_algo = r.u32("signature_algo")
    current_tcb_raw = r.take(8, "current_tcb")
    platform_info = r.u64("platform_info")
    key_flags = r.u32("author_key_en")
    r.skip_to(0x50, "reserved")
    report_data = r.take(64, "report_data")
    measurement = r.take(48, "measurement")
    host_data = r.take(32, "host_data")
    id_key_digest = r.take(48, "id_key_digest")
    author_key_digest = r.take(48, "author_key_digest")
    report_id = r.take(32, "report_id")
    report_id_ma = r.take(32, "report_id_ma")
    reported_tcb_raw = r.take(8, "reported_tcb")
    cpuid_raw = r.take(3, "cpuid")
    r.skip_to(0x1A0, "reserved")
    chip_id = r.take(64, "chip_id")
    committed_tcb_raw = r.take(8, "committed_tcb")
    r.skip_to(0x1F0, "build numbers")
    launch_tcb_raw = r.take(8, "launch_tcb")
    r.skip_to(SIGNED_SIZE, "reserved")
    sig_r = int.from_bytes(r.take(72, "signature r"), "little")
    sig_s = int.from_bytes(r.take(72, "signature s"), "little")

    # CPUID family/model/stepping exist from version 3 on; version 2 reports were Milan/Genoa only.
    cpuid = (cpuid_raw[0], cpuid_raw[1], cpuid_raw[2]) if version >= 3 else None
    turin = cpuid is not None and cpuid[0] == TURIN_FAMILY
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=family_id,
        image_id=image_id,
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=TcbVersion.parse(current_tcb_raw, turin=turin),
        platform_info=platform_info,
        author_key_en=bool(key_flags & 1),
        mask_chip_key=bool(key_flags >> 1 & 1),
        signing_key=key_flags >> 2 & 0b111,
        report_data=report_data,
        measurement=measurement,
        host_data=host_data,
        id_key_digest=id_key_digest,
        author_key_digest=author_key_digest,
        report_id=report_id,
        report_id_ma=report_id_ma,
        reported_tcb=TcbVersion.parse(reported_tcb_raw, turin=turin),
        cpuid=cpuid,
        chip_id=chip_id,
        committed_tcb=TcbVersion.parse(committed_tcb_raw, turin=turin),
        launch_tcb=TcbVersion.parse(launch_tcb_raw, turin=turin),
        signature_r=sig_r,
        signature_s=sig_s,
        signed=data[:SIGNED_SIZE],
    )


# --- certificates -------------------------------------------------------------------------------------------


def _load_certs(blob: bytes, what: str) -> list[x509.Certificate]:
    # AMD VCEKs carry serial number 0, which cryptography accepts with a deprecation warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if b"-----BEGIN" in blob:
                certs = x509.load_pem_x509_certificates(blob)
            else:
                certs = [x509.load_der_x509_certificate(blob)]
        except ValueError as exc:
            raise EvidenceInvalid(f"{what} is not a valid PEM or DER certificate: {exc}", reason="malformed") from exc
    if not certs:
        raise EvidenceInvalid(f"{what} contains no certificate", reason="malformed")
    return certs


def _cn(cert: x509.Certificate, *, issuer: bool = False) -> str:
    name = cert.issuer if issuer else cert.subject
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _pinned_product(cert: x509.Certificate) -> str | None:
    digest = _spki_sha256(cert)
    for product, pin in PINNED_ARK_SPKI_SHA256.items():
        if hmac.compare_digest(digest, pin):
            return product
    return None


def _verify_pss(child: x509.Certificate, parent: x509.Certificate, link: str) -> None:
    if child.issuer != parent.subject:
        raise EvidenceInvalid(f"{link}: issuer {child.issuer.rfc4514_string()} is not "
                              f"{parent.subject.rfc4514_string()}", reason="vcek_chain")
    if child.signature_algorithm_oid != _OID_RSASSA_PSS or not isinstance(child.signature_hash_algorithm,
                                                                          hashes.SHA384):
        raise EvidenceInvalid(f"{link}: not signed with RSASSA-PSS SHA-384", reason="vcek_chain")
    key = parent.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise EvidenceInvalid(f"{link}: issuer key is not RSA", reason="vcek_chain")
    try:
        key.verify(child.signature, child.tbs_certificate_bytes, _PSS_SHA384, hashes.SHA384())
    except InvalidSignature as exc:
        raise EvidenceInvalid(f"{link}: signature does not verify", reason="vcek_chain") from exc


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if now < cert.not_valid_before_utc:
        raise EvidenceInvalid(f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}", reason="expired")
    if now > cert.not_valid_after_utc:
        raise EvidenceInvalid(f"{what} expired at {cert.not_valid_after_utc.isoformat()}", reason="expired")


def _verify_chain(leaf: x509.Certificate, chain: list[x509.Certificate], now: datetime) -> tuple[str, str]:
    """Verify leaf <- ASK/ASVK <- pinned ARK; return (product, "VCEK" or "VLEK")."""
    arks = [c for c in chain if c.issuer == c.subject]
    if not arks:
        raise EvidenceInvalid("certificate chain has no AMD root key (ARK)", reason="vcek_chain")
    pinned = [(ark, p) for ark in arks if (p := _pinned_product(ark)) is not None]
    if not pinned:
        raise EvidenceInvalid(f"ARK {_cn(arks[0])!r} is not a pinned AMD root key", reason="untrusted_root")
    ark, product = pinned[0]
    if _cn(ark) != f"ARK-{product}":
        raise EvidenceInvalid(f"pinned {product} root key carries the name {_cn(ark)!r}", reason="untrusted_root")
    _verify_pss(ark, ark, f"ARK-{product} self-signature")

    issuer_cn = _cn(leaf, issuer=True)
    if issuer_cn == f"SEV-{product}":
        kind = "VCEK"
    elif issuer_cn == f"SEV-VLEK-{product}":
        kind = "VLEK"
    else:
        raise EvidenceInvalid(f"VCEK/VLEK issuer {issuer_cn!r} does not belong to ARK-{product}", reason="vcek_chain")
    intermediates = [c for c in chain if c.subject == leaf.issuer and c.issuer == ark.subject]
    if not intermediates:
        raise EvidenceInvalid(f"certificate chain has no {issuer_cn} certificate", reason="vcek_chain")
    inter = intermediates[0]
    inter_name = "ASK" if kind == "VCEK" else "ASVK"
    _verify_pss(inter, ark, f"{inter_name} {issuer_cn} by ARK-{product}")
    _verify_pss(leaf, inter, f"{kind} by {inter_name} {issuer_cn}")
    # Validity last, so that a certificate of the wrong product line is reported as such, not as expired.
    _check_validity(ark, now, f"ARK-{product}")
    _check_validity(inter, now, f"{inter_name} {issuer_cn}")
    _check_validity(leaf, now, kind)
    return product, kind


def _ext_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _der_small_int(raw: bytes, what: str) -> int:
    # A DER INTEGER (tag 2, short length) holding a small non-negative value.
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2:
        raise EvidenceInvalid(f"VCEK extension {what} is not a DER INTEGER", reason="vcek_binding")
    return int.from_bytes(raw[2:], "big", signed=True)


def _check_binding(leaf: x509.Certificate, report: SnpReport, kind: str) -> None:
    """The VCEK must be the one for this chip (hwID) and this reported TCB; VLEKs carry TCB only."""
    tcb = report.reported_tcb
    expected = {_OID_BL_SPL: ("blSPL", tcb.bootloader), _OID_TEE_SPL: ("teeSPL", tcb.tee),
                _OID_SNP_SPL: ("snpSPL", tcb.snp), _OID_UCODE_SPL: ("ucodeSPL", tcb.microcode)}
    if tcb.fmc is not None:
        expected[_OID_FMC_SPL] = ("fmcSPL", tcb.fmc)
    for oid, (name, want) in expected.items():
        raw = _ext_value(leaf, oid)
        if raw is None:
            continue
        got = _der_small_int(raw, name)
        if got != want:
            raise EvidenceInvalid(f"{kind} {name} is {got} but the report's REPORTED_TCB has {want}",
                                  reason="vcek_binding")
    if kind != "VCEK" or report.mask_chip_key:
        return
    hwid = _ext_value(leaf, _OID_HWID)
    if hwid is None:
        raise EvidenceInvalid("VCEK has no hwID extension", reason="vcek_binding")
    if len(hwid) >= 2 and hwid[0] == 0x04 and hwid[1] == len(hwid) - 2:
        hwid = hwid[2:]  # OCTET STRING-wrapped encoding
    if len(hwid) not in (8, 64) or not hmac.compare_digest(hwid, report.chip_id[: len(hwid)]):
        raise EvidenceInvalid("VCEK hwID does not match the report's CHIP_ID", reason="vcek_binding")


def _verify_report_signature(report: SnpReport, leaf: x509.Certificate, kind: str) -> None:
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise EvidenceInvalid(f"unsupported SEV-SNP signature algorithm {report.signature_algo}",
                              reason="unsupported")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise EvidenceInvalid(f"{kind} key is not an ECDSA P-384 key", reason="vcek_chain")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise EvidenceInvalid(f"SEV-SNP report signature does not verify with the {kind}",
                              reason="report_signature") from exc


def snp_claims(report: SnpReport) -> Claims:
    """Claims of an SEV-SNP report; only call after the report has verified."""
    tcb = report.reported_tcb
    svns = {
        "guest_svn": report.guest_svn,
        "vmpl": report.vmpl,
        "policy": report.policy,
        "tcb_bootloader": tcb.bootloader,
        "tcb_tee": tcb.tee,
        "tcb_snp": tcb.snp,
        "tcb_microcode": tcb.microcode,
    }
    if tcb.fmc is not None:
        svns["tcb_fmc"] = tcb.fmc
    return Claims(
        tee="snp",
        measurements={
            "measurement": report.measurement.hex(),
            "host_data": report.host_data.hex(),
            "family_id": report.family_id.hex(),
            "image_id": report.image_id.hex(),
            "id_key_digest": report.id_key_digest.hex(),
            "author_key_digest": report.author_key_digest.hex(),
            "chip_id": report.chip_id.hex(),
            "reported_tcb": tcb.raw.hex(),
            "policy": f"{report.policy:016x}",
        },
        svns=svns,
        debug=report.debug,
        report_data=report.report_data,
        quote_version=report.version,
    )


def verify_snp_report(report: bytes, *, vcek_pem_or_der: bytes, chain_pem: bytes, now: datetime) -> Claims:
    """Verify an SEV-SNP report and its VCEK/VLEK chain to a pinned ARK at ``now``; return its claims.

    ``vcek_pem_or_der``: the VCEK or VLEK (DER, or PEM whose first certificate is used). ``chain_pem``: the
    ASK (or ASVK) and ARK, as served by AMD KDS; extra certificates (e.g. the leaf itself) are ignored.
    Raises ``EvidenceInvalid`` (with a stable ``reason``) on the first failed check.
    """
    parsed = parse_snp_report(report)
    leaf = _load_certs(vcek_pem_or_der, "VCEK/VLEK")[0]
    chain = _load_certs(chain_pem, "ASK/ARK chain")
    _, kind = _verify_chain(leaf, chain, now)
    wanted = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK"}.get(parsed.signing_key)
    if wanted != kind:
        raise EvidenceInvalid(f"report says it is signed by {wanted or parsed.signing_key}, got a {kind}",
                              reason="vcek_binding")
    _check_binding(leaf, parsed, kind)
    _verify_report_signature(parsed, leaf, kind)
    return snp_claims(parsed)
