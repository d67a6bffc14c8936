"""Intel DCAP ECDSA quotes (SGX v3, SGX/TDX v4, TDX v5): parsing and signature/chain verification.

Shared by the SGX and TDX verifiers (STYLE practice 8), so the quote format and the Intel PKI are handled once.
Layouts follow Intel's "SGX ECDSA Quote Library API" (v3) and "TDX DCAP Quoting Library API" (v4/v5).
All integers are little-endian. Parsing checks every length against the bytes actually present, and
verification runs in a fixed order (chain, QE report signature, attestation-key binding, quote signature)
so that each failure names the first broken link.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ppml.attestation._reader import Reader as _Reader
from ppml.attestation.errors import CollateralError, EvidenceInvalid
from ppml.attestation.intel_root import INTEL_SGX_ROOT_CA_DER

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD10_REPORT_SIZE = 584
TD15_REPORT_SIZE = 648
ECDSA_P256 = 2
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
_V5_BODY_SIZES = {1: SGX_REPORT_SIZE, 2: TD10_REPORT_SIZE, 3: TD15_REPORT_SIZE}


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header; ``tee_type`` is 0 (SGX) for v3, whose header has no such field."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class SgxReportBody:
    """An SGX REPORT body: the enclave's own report in v3 quotes, and the QE's report in every quote."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes
    raw: bytes

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG (flags bit 1): a debugger can read the enclave's memory, so no secret is safe."""
        return bool(self.attributes[0] & 0x02)


@dataclass(frozen=True)
class TdReportBody:
    """A TDX TD report body (TDX 1.0; ``tee_tcb_svn2`` and ``mr_servicetd`` only for TDX 1.5 v5 bodies)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_servicetd: bytes | None = None

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.DEBUG (bit 0): the host VMM can read and write the TD's state."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True)
class QeCertification:
    """What certifies the attestation key: the QE report, its PCK signature, QE auth data, PCK chain."""

    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_data_type: int
    cert_data: bytes


@dataclass(frozen=True)
class Quote:
    """A parsed DCAP quote. ``signed`` is exactly the bytes the attestation key signed."""

    header: QuoteHeader
    body: SgxReportBody | TdReportBody
    signed: bytes
    signature: bytes
    attestation_key: bytes
    certification: QeCertification
    trailing: int

    @property
    def tee(self) -> str:
        return "tdx" if isinstance(self.body, TdReportBody) else "sgx"


def _parse_header(r: _Reader) -> QuoteHeader:
    version = r.u16("version")
    att_key_type = r.u16("attestation key type")
    tee_type = r.u32("tee type")
    qe_svn = r.u16("QE SVN")
    pce_svn = r.u16("PCE SVN")
    vendor = r.take(16, "QE vendor id")
    user_data = r.take(20, "user data")
    if version not in (3, 4, 5):
        raise EvidenceInvalid(f"unsupported DCAP quote version {version} (expected 3, 4 or 5)", reason="unsupported")
    if att_key_type != ECDSA_P256:
        raise EvidenceInvalid(f"unsupported attestation key type {att_key_type} (expected 2, ECDSA P-256)",
                              reason="unsupported")
    if version == 3:
        tee_type = TEE_SGX  # v3 is SGX only; these four bytes are reserved
    elif tee_type not in (TEE_SGX, TEE_TDX):
        raise EvidenceInvalid(f"unknown TEE type {tee_type:#x} in quote header", reason="unsupported")
    if vendor != INTEL_QE_VENDOR_ID:
        raise EvidenceInvalid(f"QE vendor id {vendor.hex()} is not Intel's", reason="unsupported")
    return QuoteHeader(version, att_key_type, tee_type, qe_svn, pce_svn, vendor, user_data)


def parse_sgx_report(raw: bytes) -> SgxReportBody:
    """Parse a 384-byte SGX report body (offsets from the SGX SDK's ``sgx_report_body_t``)."""
    if len(raw) != SGX_REPORT_SIZE:
        raise EvidenceInvalid(f"SGX report body must be {SGX_REPORT_SIZE} bytes, got {len(raw)}", reason="malformed")
    return SgxReportBody(
        cpu_svn=raw[0:16],
        misc_select=int.from_bytes(raw[16:20], "little"),
        attributes=raw[48:64],
        mr_enclave=raw[64:96],
        mr_signer=raw[128:160],
        isv_prod_id=int.from_bytes(raw[256:258], "little"),
        isv_svn=int.from_bytes(raw[258:260], "little"),
        report_data=raw[320:384],
        raw=raw,
    )


def parse_td_report(raw: bytes) -> TdReportBody:
    """Parse a TDX 1.0 (584-byte) or TDX 1.5 (648-byte) TD report body."""
    if len(raw) not in (TD10_REPORT_SIZE, TD15_REPORT_SIZE):
        raise EvidenceInvalid(f"TD report body must be 584 or 648 bytes, got {len(raw)}", reason="malformed")
    rtmrs = (raw[328:376], raw[376:424], raw[424:472], raw[472:520])
    extended = len(raw) == TD15_REPORT_SIZE
    return TdReportBody(
        tee_tcb_svn=raw[0:16],
        mr_seam=raw[16:64],
        mr_signer_seam=raw[64:112],
        seam_attributes=raw[112:120],
        td_attributes=raw[120:128],
        xfam=raw[128:136],
        mr_td=raw[136:184],
        mr_config_id=raw[184:232],
        mr_owner=raw[232:280],
        mr_owner_config=raw[280:328],
        rtmrs=rtmrs,
        report_data=raw[520:584],
        tee_tcb_svn2=raw[584:600] if extended else None,
        mr_servicetd=raw[600:648] if extended else None,
    )


def _parse_body(r: _Reader, header: QuoteHeader) -> SgxReportBody | TdReportBody:
    if header.version == 5:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        expected = _V5_BODY_SIZES.get(body_type)
        if expected is None or body_size != expected:
            raise EvidenceInvalid(f"v5 quote body type {body_type} with size {body_size} is not supported",
                                  reason="unsupported")
        if (body_type == 1) != (header.tee_type == TEE_SGX):
            raise EvidenceInvalid(f"v5 body type {body_type} does not match TEE type {header.tee_type:#x}",
                                  reason="malformed")
    else:
        body_size = SGX_REPORT_SIZE if header.tee_type == TEE_SGX else TD10_REPORT_SIZE
    raw = r.take(body_size, "report body")
    return parse_sgx_report(raw) if header.tee_type == TEE_SGX else parse_td_report(raw)


def _parse_qe_certification(r: _Reader, *, nested: bool) -> QeCertification:
    qe_report = parse_sgx_report(r.take(SGX_REPORT_SIZE, "QE report"))
    qe_report_signature = r.take(64, "QE report signature")
    qe_auth_data = r.take(r.u16("QE auth data size"), "QE auth data")
    cert_type = r.u16("certification data type")
    cert_data = r.take(r.u32("certification data size"), "certification data")
    if nested and cert_type != CERT_DATA_PCK_CHAIN:
        raise EvidenceInvalid(f"QE report certification data has type {cert_type}, expected 5 (PCK chain)",
                              reason="unsupported")
    return QeCertification(qe_report, qe_report_signature, qe_auth_data, cert_type, cert_data)


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP ECDSA-P256 quote; raise :class:`EvidenceInvalid` for anything out of bounds or unknown.

    Bytes after the declared signature data are not signed and are ignored (some quote providers pad the
    quote buffer); their count is kept in ``trailing``.
    """
    r = _Reader(bytes(data), "quote")
    header = _parse_header(r)
    body = _parse_body(r, header)
    signed = bytes(data[: r.pos])
    sig_len = r.u32("signature data size")
    sig_start = r.pos
    s = _Reader(r.take(sig_len, "signature data"), "signature data", base=sig_start)
    signature = s.take(64, "quote signature")
    attestation_key = s.take(64, "attestation public key")
    if header.version == 3:
        certification = _parse_qe_certification(s, nested=False)
    else:
        outer_type = s.u16("certification data type")
        outer = s.take(s.u32("certification data size"), "certification data")
        if outer_type != CERT_DATA_QE_REPORT:
            raise EvidenceInvalid(f"v{header.version} certification data has type {outer_type}, expected 6",
                                  reason="unsupported")
        nested = _Reader(outer, "QE report certification data", base=sig_start + s.pos - len(outer))
        certification = _parse_qe_certification(nested, nested=True)
        if nested.remaining:
            raise EvidenceInvalid(f"{nested.remaining} unexpected bytes after QE report certification data",
                                  reason="malformed")
    if s.remaining:
        raise EvidenceInvalid(f"{s.remaining} unexpected bytes at the end of the signature data", reason="malformed")
    return Quote(header, body, signed, signature, attestation_key, certification, trailing=r.remaining)


# --- verification -------------------------------------------------------------------------------------------


def pinned_root() -> x509.Certificate:
    """The pinned Intel SGX Root CA certificate (shipped with ppml, never taken from the quote)."""
    return x509.load_der_x509_certificate(INTEL_SGX_ROOT_CA_DER)


def _p256_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as exc:
        raise EvidenceInvalid("attestation public key is not a point on P-256", reason="quote_signature") from exc


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, raw_sig: bytes, message: bytes) -> bool:
    """Verify a raw r||s P-256 signature, the encoding DCAP uses everywhere."""
    der = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _check_time(cert: x509.Certificate, now: datetime, role: str) -> None:
    if now < cert.not_valid_before_utc:
        raise EvidenceInvalid(f"{role} certificate is not valid before {cert.not_valid_before_utc.isoformat()}",
                              reason="not_yet_valid")
    if now > cert.not_valid_after_utc:
        raise EvidenceInvalid(f"{role} certificate expired at {cert.not_valid_after_utc.isoformat()}",
                              reason="expired")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_issued_by(child: x509.Certificate, issuer: x509.Certificate, role: str) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise EvidenceInvalid(f"{role} certificate is not signed by {issuer.subject.rfc4514_string()}",
                              reason="pck_chain") from exc


def load_pck_chain(cert_data: bytes) -> list[x509.Certificate]:
    """Load the PEM PCK chain from certification data type 5 (leaf first); the NUL terminator is optional."""
    try:
        certs = x509.load_pem_x509_certificates(cert_data.rstrip(b"\x00"))
    except ValueError as exc:
        raise EvidenceInvalid(f"PCK certificate chain does not parse: {exc}", reason="pck_chain") from exc
    if len(certs) not in (2, 3):
        raise EvidenceInvalid(f"PCK certificate chain has {len(certs)} certificates, expected 3",
                              reason="pck_chain")
    return certs


def verify_pck_chain(certs: list[x509.Certificate], *, now: datetime, root: x509.Certificate) -> None:
    """Check leaf <- intermediate <- pinned root: names, signatures, CA flags and validity at ``now``.

    The root inside the quote is only accepted if it carries the pinned root's key; it is never trusted
    on its own (older quotes embed an earlier issuance of the same root certificate).
    """
    leaf, intermediate = certs[0], certs[1]
    if len(certs) == 3 and certs[2].public_key() != root.public_key():
        raise EvidenceInvalid("PCK chain ends in a root that is not the pinned Intel SGX Root CA",
                              reason="pck_chain")
    _check_issued_by(intermediate, root, "PCK CA")
    _check_issued_by(leaf, intermediate, "PCK")
    if not _is_ca(intermediate):
        raise EvidenceInvalid("PCK CA certificate is not a CA (basicConstraints)", reason="pck_chain")
    if _is_ca(leaf):
        raise EvidenceInvalid("PCK certificate must not be a CA (basicConstraints)", reason="pck_chain")
    if not isinstance(leaf.public_key(), ec.EllipticCurvePublicKey):
        raise EvidenceInvalid("PCK certificate key is not an EC key", reason="pck_chain")
    for cert, role in ((root, "Intel SGX Root CA"), (intermediate, "PCK CA"), (leaf, "PCK")):
        _check_time(cert, now, role)


def _load_crl(data: bytes, name: str) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CollateralError(f"{name} does not parse: {exc}", reason="crl") from exc


def check_crl(data: bytes, *, issuer: x509.Certificate, subject: x509.Certificate, now: datetime, name: str) -> None:
    """Check a CRL is from ``issuer``, current at ``now``, and does not list ``subject``."""
    crl = _load_crl(data, name)
    if crl.issuer != issuer.subject:
        raise CollateralError(f"{name} is issued by {crl.issuer.rfc4514_string()}, expected "
                              f"{issuer.subject.rfc4514_string()}", reason="crl")
    public_key = issuer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise CollateralError(f"{name} signature does not verify", reason="crl")
    next_update = crl.next_update_utc
    if now < crl.last_update_utc or next_update is None or now > next_update:
        raise CollateralError(f"{name} is not current at {now.isoformat()}", reason="crl")
    if crl.get_revoked_certificate_by_serial_number(subject.serial_number) is not None:
        raise EvidenceInvalid(f"certificate {subject.subject.rfc4514_string()} (serial "
                              f"{subject.serial_number:x}) is revoked by {name}", reason="revoked")


@dataclass(frozen=True)
class Crls:
    """Revocation lists for a PCK chain (DER or PEM). Either may be omitted; a supplied one must verify."""

    root_crl: bytes | None = None
    pck_crl: bytes | None = None


def verify_quote(
    quote: Quote, *, now: datetime, crls: Crls | None = None, root: x509.Certificate | None = None
) -> x509.Certificate:
    """Verify a parsed quote end to end against the pinned root and return the verified PCK leaf.

    ``root`` exists for tests with a synthetic PKI; production callers leave it unset.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    root = root if root is not None else pinned_root()
    cert = quote.certification
    if cert.cert_data_type != CERT_DATA_PCK_CHAIN:
        raise EvidenceInvalid(f"certification data type {cert.cert_data_type} is not supported "
                              "(only 5, PCK certificate chain)", reason="unsupported")
    chain = load_pck_chain(cert.cert_data)
    verify_pck_chain(chain, now=now, root=root)
    leaf, intermediate = chain[0], chain[1]
    if crls is not None:
        if crls.root_crl is not None:
            check_crl(crls.root_crl, issuer=root, subject=intermediate, now=now, name="Intel SGX Root CA CRL")
        if crls.pck_crl is not None:
            check_crl(crls.pck_crl, issuer=intermediate, subject=leaf, now=now, name="PCK CRL")
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey)  # checked in verify_pck_chain
    if not _ecdsa_ok(leaf_key, cert.qe_report_signature, cert.qe_report.raw):
        raise EvidenceInvalid("QE report signature does not verify with the PCK key", reason="qe_report_signature")
    expected = hashlib.sha256(quote.attestation_key + cert.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(cert.qe_report.report_data, expected):
        raise EvidenceInvalid("QE report data does not bind the attestation key", reason="attestation_key_binding")
    if not _ecdsa_ok(_p256_key(quote.attestation_key), quote.signature, quote.signed):
        raise EvidenceInvalid("quote signature does not verify with the attestation key", reason="quote_signature")
    return leaf
