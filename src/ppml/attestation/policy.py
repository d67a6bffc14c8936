"""Declarative per-resource attestation policy (STYLE practice 8: verify first, appraise separately).

A verifier turns evidence into :class:`~ppml.attestation.claims.Claims`; this module only compares those claims
with reference values. It is pure: no files, no network, no clock (``now`` and ``evidence_time`` are passed in).

A policy document is a JSON object (or YAML, if PyYAML is installed); see ``docs/policy.md`` for the schema.
Unknown or duplicated keys are rejected with :class:`~ppml.errors.ConfigError` so that a typo cannot silently
weaken a policy. :meth:`Policy.evaluate` returns a :class:`Decision` or raises :class:`PolicyDenied` naming the
first rule that failed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ppml._json import DuplicateKey, strict_loads
from ppml.errors import ConfigError, PolicyDenied

__all__ = ["Decision", "Policy", "PolicyDenied", "SgxReference", "SnpReference", "TdxReference"]

if TYPE_CHECKING:
    from ppml.attestation.claims import Claims

log = logging.getLogger(__name__)

KNOWN_TEES = ("sgx", "tdx", "snp", "simulated")
DEFAULT_TCB_STATUSES = ("UpToDate",)
DEFAULT_MAX_EVIDENCE_AGE_SECONDS = 300

# Reference value sizes in bytes: a truncated or over-long value in a policy is a typo, not a measurement.
_SGX_MEASUREMENT_SIZE = 32
_TDX_MEASUREMENT_SIZE = 48
_SNP_MEASUREMENT_SIZE = 48
_TDX_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
# Policy register name -> key in Claims.measurements (see claims.tdx_claims).
_TDX_CLAIM_KEYS = {"mrtd": "mr_td", "rtmr0": "rtmr0", "rtmr1": "rtmr1", "rtmr2": "rtmr2", "rtmr3": "rtmr3"}

# AMD SEV-SNP guest policy bits (SEV-SNP ABI specification, GUEST_POLICY); names may be used instead of numbers.
SNP_POLICY_BITS: Mapping[str, int] = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}


@dataclass(frozen=True)
class Decision:
    """A successful evaluation: which TEE, which rules were checked (in order), and whether it was simulated."""

    tee: str
    rules: tuple[str, ...]
    simulated: bool = False


@dataclass(frozen=True)
class SgxReference:
    """SGX reference values: ``mrenclave`` values, and/or ``mrsigner`` with ``isvprodid`` and ``min_isvsvn``."""

    mrenclave: tuple[str, ...] = ()
    mrsigner: tuple[str, ...] = ()
    isvprodid: int | None = None
    min_isvsvn: int | None = None

    def __post_init__(self) -> None:
        if not self.mrenclave and not self.mrsigner:
            raise ConfigError("policy key sgx: needs mrenclave, or mrsigner with isvprodid and min_isvsvn")
        signer_keys = (bool(self.mrsigner), self.isvprodid is not None, self.min_isvsvn is not None)
        if any(signer_keys) and not all(signer_keys):
            raise ConfigError("policy key sgx: mrsigner, isvprodid and min_isvsvn must be given together")


@dataclass(frozen=True)
class TdxReference:
    """TDX reference values: allowed values of MRTD and RTMR0..3; a register left empty is not checked."""

    mrtd: tuple[str, ...] = ()
    rtmr0: tuple[str, ...] = ()
    rtmr1: tuple[str, ...] = ()
    rtmr2: tuple[str, ...] = ()
    rtmr3: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not any(getattr(self, name) for name in _TDX_REGISTERS):
            raise ConfigError("policy key tdx: needs at least one of mrtd, rtmr0, rtmr1, rtmr2, rtmr3")


@dataclass(frozen=True)
class SnpReference:
    """SEV-SNP reference values: allowed launch measurements and guest policy bits that must be set / clear.

    The guest policy is read from ``claims.svns["policy"]`` (the 64-bit GUEST_POLICY as an int).
    """

    measurement: tuple[str, ...] = ()
    required_policy_bits: tuple[int, ...] = ()
    forbidden_policy_bits: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.measurement:
            raise ConfigError("policy key snp.measurement: at least one measurement is required")
        both = sorted(set(self.required_policy_bits) & set(self.forbidden_policy_bits))
        if both:
            raise ConfigError(f"policy key snp: policy bit(s) {both} are both required and forbidden")


@dataclass(frozen=True)
class Policy:
    """The attestation policy of one resource; build it with :meth:`from_dict` / :meth:`from_json`."""

    allowed_tees: tuple[str, ...]
    sgx: SgxReference | None = None
    tdx: TdxReference | None = None
    snp: SnpReference | None = None
    allow_debug: bool = False
    accepted_tcb_statuses: tuple[str | None, ...] = DEFAULT_TCB_STATUSES
    forbidden_advisory_ids: tuple[str, ...] = ()
    max_evidence_age_seconds: float = DEFAULT_MAX_EVIDENCE_AGE_SECONDS
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.allowed_tees:
            raise ConfigError("policy key allowed_tees: at least one TEE is required")
        for tee in self.allowed_tees:
            if tee not in KNOWN_TEES:
                raise ConfigError(f"policy key allowed_tees: unknown TEE {tee!r} (known: {', '.join(KNOWN_TEES)})")
        for tee in ("sgx", "tdx", "snp"):
            has_reference = getattr(self, tee) is not None
            if tee in self.allowed_tees and not has_reference:
                raise ConfigError(f"policy key {tee}: {tee} is in allowed_tees but has no reference values")
            checked_for_simulated = tee == "sgx" and "simulated" in self.allowed_tees
            if has_reference and tee not in self.allowed_tees and not checked_for_simulated:
                raise ConfigError(f"policy key {tee}: reference values given but {tee} is not in allowed_tees")
        if not self.accepted_tcb_statuses:
            raise ConfigError("policy key accepted_tcb_statuses: at least one status is required")
        if self.max_evidence_age_seconds <= 0:
            raise ConfigError("policy key max_evidence_age_seconds: must be positive")

    # -- loading -----------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Policy:
        """Build a policy from a parsed document; raise ``ConfigError`` naming the first bad or unknown key."""
        doc = _object(document, "policy")
        _reject_unknown(doc, _TOP_LEVEL_KEYS, "")
        if "allowed_tees" not in doc:
            raise ConfigError("policy key allowed_tees: is required")
        allowed = _strings(doc["allowed_tees"], "allowed_tees")
        kwargs: dict[str, Any] = {"allowed_tees": allowed}
        if "sgx" in doc:
            kwargs["sgx"] = _sgx_from_dict(doc["sgx"])
        if "tdx" in doc:
            kwargs["tdx"] = _tdx_from_dict(doc["tdx"])
        if "snp" in doc:
            kwargs["snp"] = _snp_from_dict(doc["snp"])
        if "allow_debug" in doc:
            kwargs["allow_debug"] = _bool(doc["allow_debug"], "allow_debug")
        if "accepted_tcb_statuses" in doc:
            value = doc["accepted_tcb_statuses"]
            if not isinstance(value, list) or not all(s is None or isinstance(s, str) for s in value):
                raise ConfigError("policy key accepted_tcb_statuses: must be a list of strings (or null)")
            kwargs["accepted_tcb_statuses"] = tuple(value)
        if "forbidden_advisory_ids" in doc:
            kwargs["forbidden_advisory_ids"] = _strings(doc["forbidden_advisory_ids"], "forbidden_advisory_ids")
        if "max_evidence_age_seconds" in doc:
            kwargs["max_evidence_age_seconds"] = _number(doc["max_evidence_age_seconds"], "max_evidence_age_seconds")
        if "description" in doc:
            if not isinstance(doc["description"], str):
                raise ConfigError("policy key description: must be a string")
            kwargs["description"] = doc["description"]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        """Parse a JSON policy document; duplicated keys are rejected like unknown ones."""
        try:
            document = strict_loads(text)
        except DuplicateKey as exc:
            raise ConfigError(f"policy key {exc.key}: given more than once") from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ConfigError(f"policy is not valid JSON: {exc}") from None
        return cls.from_dict(document)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Policy:
        """Parse a YAML policy document; needs PyYAML, which ppml does not depend on (use JSON otherwise)."""
        try:
            import yaml  # optional dependency, imported only when asked for YAML
        except ImportError:
            raise ConfigError("YAML policies need PyYAML, which is not installed; write the policy as JSON") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"policy is not valid YAML: {exc}") from None
        return cls.from_dict(document)

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-compatible document; ``from_dict(p.to_dict()) == p``."""
        doc: dict[str, Any] = {"allowed_tees": list(self.allowed_tees)}
        if self.description:
            doc["description"] = self.description
        if self.sgx is not None:
            sgx: dict[str, Any] = {}
            if self.sgx.mrenclave:
                sgx["mrenclave"] = list(self.sgx.mrenclave)
            if self.sgx.mrsigner:
                sgx.update(mrsigner=list(self.sgx.mrsigner), isvprodid=self.sgx.isvprodid,
                           min_isvsvn=self.sgx.min_isvsvn)
            doc["sgx"] = sgx
        if self.tdx is not None:
            doc["tdx"] = {name: list(getattr(self.tdx, name)) for name in _TDX_REGISTERS if getattr(self.tdx, name)}
        if self.snp is not None:
            doc["snp"] = {
                "measurement": list(self.snp.measurement),
                "required_policy_bits": list(self.snp.required_policy_bits),
                "forbidden_policy_bits": list(self.snp.forbidden_policy_bits),
            }
        doc["allow_debug"] = self.allow_debug
        doc["accepted_tcb_statuses"] = list(self.accepted_tcb_statuses)
        doc["forbidden_advisory_ids"] = list(self.forbidden_advisory_ids)
        doc["max_evidence_age_seconds"] = self.max_evidence_age_seconds
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- evaluation --------------------------------------------------------------------------------------------

    def evaluate(self, claims: Claims, *, now: datetime, evidence_time: datetime) -> Decision:
        """Check verified ``claims`` against this policy; return a :class:`Decision` or raise :class:`PolicyDenied`.

        Rules run in a fixed order and the first failure is reported: ``allowed_tees``, ``allow_debug``,
        ``max_evidence_age_seconds``, ``accepted_tcb_statuses``, ``forbidden_advisory_ids``, then the TEE's
        reference values. ``evidence_time`` is when the evidence was produced (or its challenge issued); both
        datetimes must be timezone-aware.
        """
        if now.tzinfo is None or evidence_time.tzinfo is None:
            raise ValueError("now and evidence_time must be timezone-aware datetimes")
        rules: list[str] = []
        tee = claims.tee
        simulated = tee == "simulated"
        if simulated:
            log.warning("evaluating claims from a SIMULATED TEE: they prove nothing about the code that runs "
                        "(allowed by this policy: %s)", "simulated" in self.allowed_tees)

        rules.append("allowed_tees")
        if tee not in self.allowed_tees:
            hint = "; simulated must be listed explicitly" if simulated else ""
            raise PolicyDenied(f"TEE {tee!r} is not among the allowed TEEs {list(self.allowed_tees)}{hint}",
                               rule="allowed_tees")

        rules.append("allow_debug")
        if claims.debug and not self.allow_debug:
            raise PolicyDenied(f"the {tee} TEE runs in debug mode, which this policy does not allow",
                               rule="allow_debug")

        rules.append("max_evidence_age_seconds")
        age = (now - evidence_time).total_seconds()
        if age < 0:
            raise PolicyDenied(f"evidence time {evidence_time.isoformat()} is {-age:.0f} s in the future",
                               rule="max_evidence_age_seconds")
        if age > self.max_evidence_age_seconds:
            raise PolicyDenied(f"evidence is {age:.0f} s old, more than the {self.max_evidence_age_seconds:g} s "
                               "allowed", rule="max_evidence_age_seconds")

        rules.append("accepted_tcb_statuses")
        if claims.tcb_status not in self.accepted_tcb_statuses:
            status = "not appraised" if claims.tcb_status is None else repr(claims.tcb_status)
            raise PolicyDenied(f"TCB status {status} is not among the accepted statuses "
                               f"{list(self.accepted_tcb_statuses)}", rule="accepted_tcb_statuses")

        rules.append("forbidden_advisory_ids")
        forbidden = {a.upper() for a in self.forbidden_advisory_ids}
        hits = sorted(a for a in claims.advisory_ids if a.upper() in forbidden)
        if hits:
            raise PolicyDenied(f"the platform is affected by forbidden advisories {hits}",
                               rule="forbidden_advisory_ids")

        if tee == "sgx":
            assert self.sgx is not None  # guaranteed by __post_init__
            _evaluate_sgx(self.sgx, claims, rules)
        elif simulated and self.sgx is not None:  # a simulated TEE reports SGX-shaped measurements
            _evaluate_sgx(self.sgx, claims, rules)
        elif tee == "tdx":
            assert self.tdx is not None
            _evaluate_tdx(self.tdx, claims, rules)
        elif tee == "snp":
            assert self.snp is not None
            _evaluate_snp(self.snp, claims, rules)
        return Decision(tee=tee, rules=tuple(rules), simulated=simulated)


# -- evaluation helpers ----------------------------------------------------------------------------------------


def _short(value: str) -> str:
    return value if len(value) <= 16 else f"{value[:8]}…{value[-4:]}"


def _match_hex(rule: str, claimed: object, allowed: Sequence[str], rules: list[str]) -> None:
    """Deny unless ``claimed`` (hex) equals one of ``allowed``: case-insensitive, constant time per comparison."""
    rules.append(rule)
    if not isinstance(claimed, str):
        raise PolicyDenied("the claims carry no value for this measurement", rule=rule)
    try:
        claimed_bytes = bytes.fromhex(claimed)
    except ValueError:
        raise PolicyDenied(f"claimed value {_short(claimed)!r} is not hex", rule=rule) from None
    found = False
    for reference in allowed:  # compare with every value: no early exit that would reveal which one matched
        found |= hmac.compare_digest(claimed_bytes, bytes.fromhex(reference))
    if not found:
        count = len(allowed)
        raise PolicyDenied(f"{_short(claimed.lower())} is not among the {count} allowed value{'s' * (count != 1)}",
                           rule=rule)


def _evaluate_sgx(ref: SgxReference, claims: Claims, rules: list[str]) -> None:
    if ref.mrenclave:
        _match_hex("mrenclave", claims.measurements.get("mr_enclave"), ref.mrenclave, rules)
    if ref.mrsigner:
        _match_hex("mrsigner", claims.measurements.get("mr_signer"), ref.mrsigner, rules)
        rules.append("isvprodid")
        prod_id = claims.svns.get("isv_prod_id")
        if prod_id != ref.isvprodid:
            raise PolicyDenied(f"ISVPRODID {prod_id} is not the required {ref.isvprodid}", rule="isvprodid")
        rules.append("min_isvsvn")
        svn = claims.svns.get("isv_svn")
        assert ref.min_isvsvn is not None
        if not isinstance(svn, int) or svn < ref.min_isvsvn:
            raise PolicyDenied(f"ISVSVN {svn} is below the minimum {ref.min_isvsvn}", rule="min_isvsvn")


def _evaluate_tdx(ref: TdxReference, claims: Claims, rules: list[str]) -> None:
    for name in _TDX_REGISTERS:
        allowed = getattr(ref, name)
        if allowed:
            _match_hex(name, claims.measurements.get(_TDX_CLAIM_KEYS[name]), allowed, rules)


def _evaluate_snp(ref: SnpReference, claims: Claims, rules: list[str]) -> None:
    _match_hex("measurement", claims.measurements.get("measurement"), ref.measurement, rules)
    if not ref.required_policy_bits and not ref.forbidden_policy_bits:
        return
    guest_policy = claims.svns.get("policy")
    if not isinstance(guest_policy, int):
        rule = "required_policy_bits" if ref.required_policy_bits else "forbidden_policy_bits"
        rules.append(rule)
        raise PolicyDenied("the claims carry no SNP guest policy", rule=rule)
    rules.append("required_policy_bits")
    missing = [bit for bit in ref.required_policy_bits if not guest_policy >> bit & 1]
    if missing:
        raise PolicyDenied(f"guest policy {guest_policy:#x} lacks required bit(s) {missing}",
                           rule="required_policy_bits")
    rules.append("forbidden_policy_bits")
    present = [bit for bit in ref.forbidden_policy_bits if guest_policy >> bit & 1]
    if present:
        raise PolicyDenied(f"guest policy {guest_policy:#x} sets forbidden bit(s) {present}",
                           rule="forbidden_policy_bits")


# -- parsing helpers -------------------------------------------------------------------------------------------

_TOP_LEVEL_KEYS = frozenset({
    "description", "allowed_tees", "sgx", "tdx", "snp", "allow_debug", "accepted_tcb_statuses",
    "forbidden_advisory_ids", "max_evidence_age_seconds",
})
_SGX_KEYS = frozenset({"mrenclave", "mrsigner", "isvprodid", "min_isvsvn"})
_TDX_KEYS = frozenset(_TDX_REGISTERS)
_SNP_KEYS = frozenset({"measurement", "required_policy_bits", "forbidden_policy_bits"})



def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"policy key {where}: must be an object, not {type(value).__name__}")
    return value


def _reject_unknown(doc: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
    for key in doc:
        if key not in known:
            raise ConfigError(f"unknown policy key {prefix}{key!s} (known: {', '.join(sorted(known))})")


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"policy key {where}: must be true or false")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"policy key {where}: must be a non-negative integer")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"policy key {where}: must be a finite number")  # NaN would never deny
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"policy key {where}: must be a list of strings")
    return tuple(value)


def _hex_values(value: object, where: str, size: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"policy key {where}: must be a non-empty list of hex strings")
    result = []
    for item in value:
        try:
            raw = bytes.fromhex(item)
        except ValueError:
            raise ConfigError(f"policy key {where}: {item[:20]!r} is not hex") from None
        if len(raw) != size:
            raise ConfigError(f"policy key {where}: {_short(item)!r} is {len(raw)} bytes, expected {size}")
        result.append(raw.hex())
    return tuple(result)


def _sgx_from_dict(value: object) -> SgxReference:
    doc = _object(value, "sgx")
    _reject_unknown(doc, _SGX_KEYS, "sgx.")
    kwargs: dict[str, Any] = {}
    for name in ("mrenclave", "mrsigner"):
        if name in doc:
            kwargs[name] = _hex_values(doc[name], f"sgx.{name}", _SGX_MEASUREMENT_SIZE)
    for name in ("isvprodid", "min_isvsvn"):
        if name in doc:
            kwargs[name] = _int(doc[name], f"sgx.{name}")
    return SgxReference(**kwargs)


def _tdx_from_dict(value: object) -> TdxReference:
    doc = _object(value, "tdx")
    _reject_unknown(doc, _TDX_KEYS, "tdx.")
    return TdxReference(**{name: _hex_values(doc[name], f"tdx.{name}", _TDX_MEASUREMENT_SIZE) for name in doc})


def _policy_bits(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"policy key {where}: must be a list of bit numbers or names")
    bits = []
    for item in value:
        if isinstance(item, str):
            if item.lower() not in SNP_POLICY_BITS:
                raise ConfigError(f"policy key {where}: unknown SNP policy bit {item!r} "
                                  f"(known: {', '.join(SNP_POLICY_BITS)})")
            bits.append(SNP_POLICY_BITS[item.lower()])
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 64:
            bits.append(item)
        else:
            raise ConfigError(f"policy key {where}: {item!r} is not a bit number 0..63 or a bit name")
    return tuple(sorted(set(bits)))


def _snp_from_dict(value: object) -> SnpReference:
    doc = _object(value, "snp")
    _reject_unknown(doc, _SNP_KEYS, "snp.")
    if "measurement" not in doc:
        raise ConfigError("policy key snp.measurement: is required")
    kwargs: dict[str, Any] = {"measurement": _hex_values(doc["measurement"], "snp.measurement", _SNP_MEASUREMENT_SIZE)}
    for name in ("required_policy_bits", "forbidden_policy_bits"):
        if name in doc:
            kwargs[name] = _policy_bits(doc[name], f"snp.{name}")
    return SnpReference(**kwargs)
