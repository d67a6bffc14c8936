"""Intel DCAP TCB collateral: PCK SGX extensions, TCB Info / QE Identity verification and TCB status.

Order of checks (each failure names the first broken link):

1. the TCB signing certificate chains to the pinned Intel SGX Root CA and is valid at ``now`` (and, if a
   root CRL is given, is not revoked);
2. the ECDSA signature (hex, raw r||s) over the *exact* bytes of the ``tcbInfo`` / ``enclaveIdentity`` JSON
   value as they appear in the document -- the JSON is never re-serialized before verification;
3. ``issueDate <= now < nextUpdate`` for both documents (``CollateralError`` reason ``expired`` /
   ``not_yet_valid``). Both documents are verified before any TCB matching, so an appraisal result (including
   "no TCB level matches") always rests on authentic, current collateral;
4. TCB Info FMSPC and PCE-ID equal those in the PCK certificate (reason ``fmspc_mismatch`` / ``pceid_mismatch``);
5. platform TCB level: the first level (Intel orders them newest first) whose 16 SGX component SVNs are all
   <= the PCK certificate's and whose ``pcesvn`` <= the PCK's PCESVN; none -> ``EvidenceInvalid``
   ``tcb_not_supported``;
6. QE identity: MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES (masked) must match the QE report (else
   ``EvidenceInvalid`` ``qe_identity``); the first QE TCB level with ``isvsvn <=`` the QE's ISVSVN gives the
   QE TCB status (none -> ``tcb_not_supported``).

TDX quotes (TCB Info v3 with ``id == "TDX"``, QE Identity ``id == "TD_QE"``) follow Intel's QVL:

7. platform TCB level: the TCB Info must be a TDX v3 one for the PCK's FMSPC and PCE-ID; the first level whose SGX
   components and ``pcesvn`` match as in 5. *and* whose 16 ``tdxtcbcomponents`` are all <= the TD report's
   TEE_TCB_SVN gives the platform status (none -> ``tcb_not_supported``). When the TDX module version
   TEE_TCB_SVN[1] is > 0, the first two components (module ISVSVN and version) are skipped there: step 8 judges them;
8. TDX module: TEE_TCB_SVN[1] == 0 is a TDX 1.0 module, checked against ``tdxModule`` only. Otherwise the module
   identity ``TDX_<TEE_TCB_SVN[1] as 2 hex digits>`` of ``tdxModuleIdentities`` must exist (else
   ``EvidenceInvalid`` ``tdx_module_mismatch``), and its first level with ``isvsvn <=`` TEE_TCB_SVN[0] gives the
   TDX module status (none -> ``tcb_not_supported``). In both cases the ``mrsigner`` must equal the TD report's
   MRSIGNERSEAM and ``attributes`` must equal SEAMATTRIBUTES under ``attributesMask`` (else
   ``tdx_module_mismatch``);
9. the QE is appraised as in 6., with the TD_QE identity.

Combined status (Intel QVL's convergence, which amounts to "the worse of the two"): an ``OutOfDate`` module or QE
turns ``UpToDate`` / ``SWHardeningNeeded`` into ``OutOfDate`` and ``ConfigurationNeeded`` /
``ConfigurationAndSWHardeningNeeded`` into ``OutOfDateConfigurationNeeded``; a ``Revoked`` one gives ``Revoked``;
any other leaves the platform status. TDX converges platform with module first, then with the QE. Advisory IDs are
the platform level's, followed by any additional ones of the module level and then of the QE level. A ``Revoked``
level is *reported*, not raised: judging the status is the policy module's job.

Not implemented: the "TD relaunch advised" refinement Intel's QVL applies to TDX 1.5 (v5, TEE_TCB_SVN2) quotes
whose module is out of date; such quotes are reported as ``OutOfDate`` (the conservative answer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ppml._json import STRICT_DECODER, strict_loads
from ppml.attestation import _dcap, _der
from ppml.attestation.errors import CollateralError, EvidenceInvalid

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_OID_TCB = SGX_EXTENSION_OID + ".2"
_OID_PCESVN = _OID_TCB + ".17"
_OID_CPUSVN = _OID_TCB + ".18"
_OID_PCEID = SGX_EXTENSION_OID + ".3"
_OID_FMSPC = SGX_EXTENSION_OID + ".4"
_OID_SGX_TYPE = SGX_EXTENSION_OID + ".5"
MAX_COLLATERAL_JSON = 1 << 20
TCB_SIGNING_CN = "Intel SGX TCB Signing"


# --- PCK certificate SGX extensions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PckExtensions:
    """The TCB-relevant fields of the PCK certificate's SGX extension (OID 1.2.840.113741.1.13.1)."""

    fmspc: bytes
    pceid: bytes
    cpusvn: bytes
    pcesvn: int
    comp_svns: tuple[int, ...]
    sgx_type: int | None = None


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Read FMSPC, PCE-ID, CPUSVN, the 16 TCB component SVNs and PCESVN from a PCK certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound as exc:
        raise EvidenceInvalid("PCK certificate has no SGX extension", reason="malformed") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise EvidenceInvalid("PCK SGX extension has an unexpected type", reason="malformed")
    top = _der.oid_pairs(_der.read_one(value.value, _der.TAG_SEQUENCE))

    def need(items: dict[str, _der.Tlv], oid: str, tag: int) -> bytes:
        item = items.get(oid)
        if item is None or item.tag != tag:
            raise EvidenceInvalid(f"PCK SGX extension lacks {oid} (tag {tag:#x})", reason="malformed")
        return item.value

    tcb = _der.oid_pairs(need(top, _OID_TCB, _der.TAG_SEQUENCE), depth=1)
    comp_svns = tuple(_der.decode_uint(need(tcb, f"{_OID_TCB}.{i}", _der.TAG_INTEGER)) for i in range(1, 17))
    if any(svn > 255 for svn in comp_svns):
        raise EvidenceInvalid("PCK TCB component SVN out of range", reason="malformed")
    cpusvn = need(tcb, _OID_CPUSVN, _der.TAG_OCTET_STRING)
    fmspc = need(top, _OID_FMSPC, _der.TAG_OCTET_STRING)
    pceid = need(top, _OID_PCEID, _der.TAG_OCTET_STRING)
    if len(cpusvn) != 16 or len(fmspc) != 6 or len(pceid) != 2:
        raise EvidenceInvalid("PCK SGX extension: CPUSVN/FMSPC/PCE-ID have wrong sizes", reason="malformed")
    sgx_type_item = top.get(_OID_SGX_TYPE)
    sgx_type = _der.decode_uint(sgx_type_item.value) if sgx_type_item is not None else None
    return PckExtensions(
        fmspc=fmspc,
        pceid=pceid,
        cpusvn=cpusvn,
        pcesvn=_der.decode_uint(need(tcb, _OID_PCESVN, _der.TAG_INTEGER)),
        comp_svns=comp_svns,
        sgx_type=sgx_type,
    )


# --- collateral documents -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collateral:
    """TCB collateral as served by Intel PCS/PCCS.

    ``tcb_info_json`` and ``qe_identity_json`` are the complete response bodies (``{"tcbInfo": {...},
    "signature": "..."}`` and ``{"enclaveIdentity": {...}, "signature": "..."}``), byte for byte.
    ``tcb_signing_chain`` holds the TCB signing certificate (and optionally the root) as DER or PEM items.
    """

    tcb_info_json: bytes
    qe_identity_json: bytes
    tcb_signing_chain: Sequence[bytes]
    root_crl: bytes | None = None
    pck_crl: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tcb_signing_chain", tuple(self.tcb_signing_chain))

    def crls(self) -> _dcap.Crls:
        return _dcap.Crls(root_crl=self.root_crl, pck_crl=self.pck_crl)


@dataclass(frozen=True)
class TcbResult:
    """Outcome of the TCB appraisal: combined status and advisories, plus the inputs to the combination.

    ``tdx_module_*`` are set only for TDX quotes whose module is judged by a module identity (TEE_TCB_SVN[1] > 0).
    """

    status: str
    advisory_ids: tuple[str, ...]
    platform_status: str
    qe_status: str
    tcb_date: str | None = None
    qe_advisory_ids: tuple[str, ...] = field(default=(), compare=False)
    tdx_module_id: str | None = None
    tdx_module_status: str | None = None
    tdx_module_advisory_ids: tuple[str, ...] = field(default=(), compare=False)

    def statuses(self) -> dict[str, str]:
        """The inputs of the combined status by component (``platform``, ``tdx_module`` when judged, ``qe``)."""
        out = {"platform": self.platform_status}
        if self.tdx_module_status is not None:
            out["tdx_module"] = self.tdx_module_status
        out["qe"] = self.qe_status
        return out



def signed_json_value(document: bytes, key: str, name: str) -> tuple[bytes, bytes]:
    """Return (exact bytes of the top-level ``key`` value, raw signature) from a signed collateral document."""
    if len(document) > MAX_COLLATERAL_JSON:
        raise CollateralError(f"{name} is larger than {MAX_COLLATERAL_JSON} bytes", reason="malformed")
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollateralError(f"{name} is not UTF-8", reason="malformed") from exc
    decoder = STRICT_DECODER
    spans: dict[str, tuple[int, int, Any]] = {}

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    try:
        i = skip_ws(0)
        if text[i : i + 1] != "{":
            raise ValueError("not a JSON object")
        i = skip_ws(i + 1)
        while text[i : i + 1] != "}":
            if text[i : i + 1] != '"':
                raise ValueError("expected a key")
            k, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = skip_ws(i)
            if text[i : i + 1] != ":":
                raise ValueError("expected ':'")
            i = skip_ws(i + 1)
            value, end = decoder.raw_decode(text, i)
            if k in spans:
                raise ValueError(f"duplicate key {k!r}")
            spans[k] = (i, end, value)
            i = skip_ws(end)
            if text[i : i + 1] == ",":
                i = skip_ws(i + 1)
            elif text[i : i + 1] != "}":
                raise ValueError("expected ',' or '}'")
        if skip_ws(i + 1) != len(text):
            raise ValueError("trailing data after the JSON object")
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise CollateralError(f"{name} is not valid JSON: {exc}", reason="malformed") from exc
    if key not in spans or "signature" not in spans or not isinstance(spans["signature"][2], str):
        raise CollateralError(f"{name} lacks {key!r} or 'signature'", reason="malformed")
    try:
        signature = bytes.fromhex(spans["signature"][2])
    except ValueError as exc:
        raise CollateralError(f"{name} signature is not hex", reason="malformed") from exc
    if len(signature) != 64:
        raise CollateralError(f"{name} signature must be 64 bytes (r||s), got {len(signature)}", reason="malformed")
    start, end, _ = spans[key]
    return text[start:end].encode("utf-8"), signature


def _load_certs(items: Sequence[bytes]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    try:
        for item in items:
            if item.lstrip().startswith(b"-----"):
                certs.extend(x509.load_pem_x509_certificates(item))
            else:
                certs.append(x509.load_der_x509_certificate(item))
    except ValueError as exc:
        raise CollateralError(f"TCB signing chain does not parse: {exc}", reason="tcb_signing_chain") from exc
    return certs


def verify_tcb_signing_chain(
    items: Sequence[bytes], *, now: datetime, root: x509.Certificate, root_crl: bytes | None = None
) -> ec.EllipticCurvePublicKey:
    """Check the TCB signing certificate is issued by the pinned root, current, not revoked; return its key."""
    certs = [c for c in _load_certs(items) if c.public_key() != root.public_key()]
    if len(certs) != 1:
        raise CollateralError(f"TCB signing chain must hold exactly one non-root certificate, got {len(certs)}",
                              reason="tcb_signing_chain")
    signer = certs[0]
    try:
        signer.verify_directly_issued_by(root)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not issued by the pinned root"
        raise CollateralError("TCB signing certificate is not issued by the pinned Intel SGX Root CA",
                              reason="tcb_signing_chain") from exc
    names = signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != TCB_SIGNING_CN:
        raise CollateralError(f"TCB signing certificate subject is {signer.subject.rfc4514_string()}",
                              reason="tcb_signing_chain")
    if now < signer.not_valid_before_utc:
        raise CollateralError("TCB signing certificate is not yet valid", reason="not_yet_valid")
    if now > signer.not_valid_after_utc:
        raise CollateralError(f"TCB signing certificate expired at {signer.not_valid_after_utc.isoformat()}",
                              reason="expired")
    if root_crl is not None:
        _dcap.check_crl(root_crl, issuer=root, subject=signer, now=now, name="Intel SGX Root CA CRL")
    key = signer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollateralError("TCB signing key is not an EC key", reason="tcb_signing_chain")
    return key


def _time(body: dict[str, Any], field_name: str, name: str) -> datetime:
    raw = body.get(field_name)
    try:
        if not isinstance(raw, str):
            raise ValueError("missing")
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CollateralError(f"{name} {field_name} is not an ISO time: {raw!r}", reason="malformed") from exc
    if value.tzinfo is None:
        raise CollateralError(f"{name} {field_name} has no time zone", reason="malformed")
    return value


def _verified_body(document: bytes, key: str, name: str, *, signer: ec.EllipticCurvePublicKey,
                   now: datetime) -> dict[str, Any]:
    signed, signature = signed_json_value(document, key, name)
    if not _dcap._ecdsa_ok(signer, signature, signed):
        raise CollateralError(f"{name} signature does not verify with the TCB signing key", reason="signature")
    try:
        body = strict_loads(signed)
    except ValueError as exc:  # the signature verified, but a repeated key would still be ambiguous
        raise CollateralError(f"{name} {key} is not valid JSON: {exc}", reason="malformed") from None
    if not isinstance(body, dict):
        raise CollateralError(f"{name} {key} is not a JSON object", reason="malformed")
    issue, next_update = _time(body, "issueDate", name), _time(body, "nextUpdate", name)
    if now < issue:
        raise CollateralError(f"{name} is not valid before {issue.isoformat()}", reason="not_yet_valid")
    if now >= next_update:
        raise CollateralError(f"{name} expired at {next_update.isoformat()}", reason="expired")
    return body


def _hex(body: dict[str, Any], field_name: str, size: int, name: str) -> bytes:
    raw = body.get(field_name)
    try:
        if not isinstance(raw, str):
            raise ValueError("missing")
        value = bytes.fromhex(raw)
    except ValueError as exc:
        raise CollateralError(f"{name} {field_name} is not hex", reason="malformed") from exc
    if len(value) != size:
        raise CollateralError(f"{name} {field_name} must be {size} bytes", reason="malformed")
    return value


def _int(obj: Any, field_name: str, name: str) -> int:
    value = obj.get(field_name) if isinstance(obj, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CollateralError(f"{name} {field_name} is not a non-negative integer", reason="malformed")
    return value


def _levels(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    levels = body.get("tcbLevels")
    if not isinstance(levels, list) or not all(isinstance(level, dict) for level in levels):
        raise CollateralError(f"{name} tcbLevels is not a list of objects", reason="malformed")
    return levels


def _status_and_advisories(level: dict[str, Any], name: str) -> tuple[str, tuple[str, ...]]:
    status = level.get("tcbStatus")
    advisories = level.get("advisoryIDs", [])
    if not isinstance(status, str) or not isinstance(advisories, list) or \
            not all(isinstance(a, str) for a in advisories):
        raise CollateralError(f"{name} TCB level has a malformed tcbStatus/advisoryIDs", reason="malformed")
    return status, tuple(advisories)


def _sgx_components(tcb: Any, version: int, name: str) -> list[int]:
    if version == 2:
        return [_int(tcb, f"sgxtcbcomp{i:02d}svn", name) for i in range(1, 17)]
    comps = tcb.get("sgxtcbcomponents") if isinstance(tcb, dict) else None
    if not isinstance(comps, list) or len(comps) != 16:
        raise CollateralError(f"{name} sgxtcbcomponents must list 16 components", reason="malformed")
    return [_int(c, "svn", name) for c in comps]


def _check_tcb_info_header(body: dict[str, Any], pck: PckExtensions, *, tee: str) -> int:
    """Check the TCB Info is for this TEE, FMSPC and PCE-ID; return its version."""
    version, kind, tcb_type = body.get("version"), body.get("id", "SGX"), body.get("tcbType", 0)
    if tee == "sgx" and (version not in (2, 3) or kind != "SGX" or tcb_type != 0):
        raise CollateralError(f"TCB Info id {kind!r} / version {version!r} / tcbType {tcb_type!r} is not an SGX "
                              "TCB Info (SGX, 2 or 3, 0)", reason="unsupported")
    if tee == "tdx" and (version != 3 or kind != "TDX" or tcb_type != 0):
        raise CollateralError(f"TCB Info id {kind!r} / version {version!r} / tcbType {tcb_type!r} is not a TDX "
                              "TCB Info (TDX, 3, 0)", reason="unsupported")
    name = "TCB Info"
    if _hex(body, "fmspc", 6, name) != pck.fmspc:
        raise CollateralError(f"TCB Info is for FMSPC {body.get('fmspc')}, PCK has {pck.fmspc.hex()}",
                              reason="fmspc_mismatch")
    if _hex(body, "pceId", 2, name) != pck.pceid:
        raise CollateralError(f"TCB Info is for PCE-ID {body.get('pceId')}, PCK has {pck.pceid.hex()}",
                              reason="pceid_mismatch")
    return int(version)


def _sgx_level_matches(tcb: Any, version: int, pck: PckExtensions) -> bool:
    comps = _sgx_components(tcb, version, "TCB Info")
    return all(want <= have for want, have in zip(comps, pck.comp_svns, strict=True)) and \
        _int(tcb, "pcesvn", "TCB Info") <= pck.pcesvn


def _level_result(level: dict[str, Any]) -> tuple[str, tuple[str, ...], str | None]:
    status, advisories = _status_and_advisories(level, "TCB Info")
    tcb_date = level.get("tcbDate")
    return status, advisories, tcb_date if isinstance(tcb_date, str) else None


def platform_tcb(body: dict[str, Any], pck: PckExtensions) -> tuple[str, tuple[str, ...], str | None]:
    """Match a verified SGX TCB Info body against the PCK's TCB: (status, advisory IDs, tcbDate)."""
    version = _check_tcb_info_header(body, pck, tee="sgx")
    for level in _levels(body, "TCB Info"):
        if _sgx_level_matches(level.get("tcb"), version, pck):
            return _level_result(level)
    raise EvidenceInvalid("no TCB level in the TCB Info matches the PCK's TCB (TCB not supported)",
                          reason="tcb_not_supported")


# --- TDX: platform levels with TEE_TCB_SVN, TDX module identities ----------------------------------------------


def _tdx_components(tcb: Any) -> list[int]:
    comps = tcb.get("tdxtcbcomponents") if isinstance(tcb, dict) else None
    if not isinstance(comps, list) or len(comps) != 16:
        raise CollateralError("TCB Info tdxtcbcomponents must list 16 components", reason="malformed")
    return [_int(c, "svn", "TCB Info") for c in comps]


def tdx_platform_tcb(body: dict[str, Any], pck: PckExtensions,
                     td: _dcap.TdReportBody) -> tuple[str, tuple[str, ...], str | None]:
    """Match a verified TDX TCB Info body against the PCK's TCB and the TD's TEE_TCB_SVN: (status, advisories, date).

    With a TDX module version (TEE_TCB_SVN[1]) > 0 the module's two bytes are left to :func:`tdx_module_tcb`.
    """
    _check_tcb_info_header(body, pck, tee="tdx")
    start = 2 if td.tee_tcb_svn[1] > 0 else 0
    svns = td.tee_tcb_svn[start:]
    for level in _levels(body, "TCB Info"):
        tcb = level.get("tcb")
        if _sgx_level_matches(tcb, 3, pck) and \
                all(want <= got for want, got in zip(_tdx_components(tcb)[start:], svns, strict=True)):
            return _level_result(level)
    raise EvidenceInvalid(f"no TCB level in the TDX TCB Info matches the PCK's TCB and TEE_TCB_SVN "
                          f"{td.tee_tcb_svn.hex()} (TCB not supported)", reason="tcb_not_supported")


def _check_seam(module: Any, td: _dcap.TdReportBody, name: str) -> None:
    """The TDX module must be signed by the expected signer (MRSIGNERSEAM) and run with the expected attributes."""
    if not isinstance(module, dict):
        raise CollateralError(f"TCB Info {name} is not a JSON object", reason="malformed")
    if _hex(module, "mrsigner", 48, name) != td.mr_signer_seam:
        raise EvidenceInvalid(f"MRSIGNERSEAM {td.mr_signer_seam.hex()} does not match the {name}",
                              reason="tdx_module_mismatch")
    mask = _hex(module, "attributesMask", 8, name)
    if _masked(td.seam_attributes, mask) != _masked(_hex(module, "attributes", 8, name), mask):
        raise EvidenceInvalid(f"SEAMATTRIBUTES {td.seam_attributes.hex()} do not match the {name}",
                              reason="tdx_module_mismatch")


def _module_identity(body: dict[str, Any], module_id: str) -> dict[str, Any]:
    identities = body.get("tdxModuleIdentities", [])
    if not isinstance(identities, list) or not all(isinstance(i, dict) for i in identities):
        raise CollateralError("TCB Info tdxModuleIdentities is not a list of objects", reason="malformed")
    for identity in identities:
        if str(identity.get("id", "")).upper() == module_id:
            return identity
    raise EvidenceInvalid(f"the TCB Info has no TDX module identity {module_id} for the TD's TDX module",
                          reason="tdx_module_mismatch")


def tdx_module_tcb(body: dict[str, Any], td: _dcap.TdReportBody) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Check the TD's TDX module against a verified TDX TCB Info: (module identity id, its status, advisories).

    A TDX 1.0 module (TEE_TCB_SVN[1] == 0) is only checked against ``tdxModule`` and has no status of its own
    (``(None, None, ())``); its SVN is part of the platform levels.
    """
    version, isvsvn = td.tee_tcb_svn[1], td.tee_tcb_svn[0]
    if version == 0:
        _check_seam(body.get("tdxModule"), td, "tdxModule")
        return None, None, ()
    module_id = f"TDX_{version:02X}"
    identity = _module_identity(body, module_id)
    _check_seam(identity, td, f"TDX module identity {module_id}")
    level = _first_level_at_or_below(identity, isvsvn, f"TDX module identity {module_id}")
    if level is None:
        raise EvidenceInvalid(f"TDX module ISVSVN {isvsvn} is below every level of {module_id}",
                              reason="tcb_not_supported")
    status, advisories = _status_and_advisories(level, f"TDX module identity {module_id}")
    return module_id, status, advisories


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(v & m for v, m in zip(value, mask, strict=True))


def _first_level_at_or_below(owner: dict[str, Any], isvsvn: int, name: str) -> dict[str, Any] | None:
    """The first (newest) ``tcbLevels`` entry whose ``tcb.isvsvn`` is <= ``isvsvn``: QE and TDX module rule."""
    for level in _levels(owner, name):
        if _int(level.get("tcb"), "isvsvn", name) <= isvsvn:
            return level
    return None


def qe_tcb(body: dict[str, Any], qe: _dcap.SgxReportBody, *, enclave_id: str = "QE") -> tuple[str, tuple[str, ...]]:
    """Match the QE report against a verified QE Identity body: (QE TCB status, advisory IDs).

    ``enclave_id`` is the identity the quote's TEE needs: ``"QE"`` for SGX, ``"TD_QE"`` for TDX.
    """
    name = "QE Identity"
    if body.get("id") != enclave_id or body.get("version") != 2:
        raise CollateralError(f"QE Identity id {body.get('id')!r} version {body.get('version')!r} is not "
                              f"supported ({enclave_id}, 2)", reason="unsupported")
    misc = int.from_bytes(_hex(body, "miscselect", 4, name), "big")
    misc_mask = int.from_bytes(_hex(body, "miscselectMask", 4, name), "big")
    attributes = _hex(body, "attributes", 16, name)
    attr_mask = _hex(body, "attributesMask", 16, name)
    if _hex(body, "mrsigner", 32, name) != qe.mr_signer:
        raise EvidenceInvalid("QE MRSIGNER does not match the QE Identity", reason="qe_identity")
    if _int(body, "isvprodid", name) != qe.isv_prod_id:
        raise EvidenceInvalid("QE ISVPRODID does not match the QE Identity", reason="qe_identity")
    if qe.misc_select & misc_mask != misc & misc_mask:
        raise EvidenceInvalid("QE MISCSELECT does not match the QE Identity", reason="qe_identity")
    if _masked(qe.attributes, attr_mask) != _masked(attributes, attr_mask):
        raise EvidenceInvalid("QE ATTRIBUTES do not match the QE Identity", reason="qe_identity")
    level = _first_level_at_or_below(body, qe.isv_svn, name)
    if level is None:
        raise EvidenceInvalid(f"QE ISVSVN {qe.isv_svn} is below every QE Identity TCB level",
                              reason="tcb_not_supported")
    return _status_and_advisories(level, name)


def combine_status(platform: str, qe: str) -> str:
    """Intel QVL's convergence of a platform status with a QE (or TDX module) status (see the module docstring).

    QVL's module convergence and QE convergence are the same function, so one implementation serves both.
    """
    if qe == "Revoked":
        return "Revoked"
    if qe == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


_QE_IDENTITY_IDS = {"sgx": "QE", "tdx": "TD_QE"}


def _merged(*groups: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for group in groups:
        out.extend(a for a in group if a not in out)
    return tuple(out)


def appraise(
    quote: _dcap.Quote,
    pck_leaf: x509.Certificate,
    collateral: Collateral,
    *,
    now: datetime,
    root: x509.Certificate | None = None,
) -> TcbResult:
    """Verify the collateral and compute the TCB status of an already verified SGX or TDX quote."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    root = root if root is not None else _dcap.pinned_root()
    signer = verify_tcb_signing_chain(collateral.tcb_signing_chain, now=now, root=root,
                                      root_crl=collateral.root_crl)
    tcb_info = _verified_body(collateral.tcb_info_json, "tcbInfo", "TCB Info", signer=signer, now=now)
    qe_identity = _verified_body(collateral.qe_identity_json, "enclaveIdentity", "QE Identity", signer=signer,
                                 now=now)
    pck = parse_pck_extensions(pck_leaf)
    module_id, module_status, module_advisories = None, None, ()
    if isinstance(quote.body, _dcap.TdReportBody):
        platform_status, advisories, tcb_date = tdx_platform_tcb(tcb_info, pck, quote.body)
        module_id, module_status, module_advisories = tdx_module_tcb(tcb_info, quote.body)
    else:
        platform_status, advisories, tcb_date = platform_tcb(tcb_info, pck)
    qe_status, qe_advisories = qe_tcb(qe_identity, quote.certification.qe_report,
                                      enclave_id=_QE_IDENTITY_IDS[quote.tee])
    status = platform_status if module_status is None else combine_status(platform_status, module_status)
    return TcbResult(
        status=combine_status(status, qe_status),
        advisory_ids=_merged(advisories, module_advisories, qe_advisories),
        platform_status=platform_status,
        qe_status=qe_status,
        tcb_date=tcb_date,
        qe_advisory_ids=qe_advisories,
        tdx_module_id=module_id,
        tdx_module_status=module_status,
        tdx_module_advisory_ids=module_advisories,
    )
