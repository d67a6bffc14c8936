"""Verify attestation tokens from Microsoft Azure Attestation (MAA) and Intel Trust Authority (ITA) into ``Claims``.

A token is a JWT signed by the attestation service after *it* appraised the quote or report. Verifying it means:
the compact JWS parses strictly, its ``alg`` is on the issuer's allow-list (MAA: RS256; ITA: PS384, RS256), the
signature verifies with a key from a JWKS the caller trusts (selected by exact ``kid``), ``iss`` is exactly the
expected issuer and ``exp`` / ``nbf`` / ``iat`` hold at the injected ``now``. Only then are the TEE claims mapped
to the policy vocabulary of :class:`~ppml.attestation.claims.Claims` (see ``docs/attestation-tokens.md``).

Keys come from a :class:`JwksSource`: :class:`StaticJwks` (offline) or :class:`JwksUrl` (HTTPS, cached, refetched
once on an unknown ``kid`` to follow key rollover). The token's own ``jku`` header is never followed.
"""

from __future__ import annotations

import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Protocol

import httpx

from ppml._tls import tls_context
from ppml.attestation import _jws
from ppml.attestation._jws import Jwk
from ppml.attestation.claims import Claims
from ppml.attestation.errors import CollateralError, EvidenceInvalid
from ppml.errors import ConfigError

__all__ = [
    "ITA_ISSUER",
    "Jwk",
    "Jwks",
    "JwksSource",
    "JwksUrl",
    "StaticJwks",
    "VerifiedToken",
    "insecure_parse_unverified",
    "ita_claims",
    "maa_claims",
    "maa_jwks_url",
    "verify_ita_token",
    "verify_maa_token",
]

ITA_ISSUER = "Intel Trust Authority"
MAA_ALGS = frozenset({"RS256"})
ITA_ALGS = frozenset({"PS384", "RS256"})
MAX_JWKS_BYTES = 1 << 20
DEFAULT_LEEWAY_SECONDS = 60.0


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, issuer and lifetime verified; ``raw`` keeps every claim (``x-ms-runtime``, nonce).

    ``issued_at`` (``iat``) is the natural ``evidence_time`` for :meth:`Policy.evaluate`.
    """

    claims: Claims
    raw: Mapping[str, Any]
    issuer: str
    expires: datetime
    issued_at: datetime | None
    kid: str
    alg: str


# -- keys ----------------------------------------------------------------------------------------------------------


class Jwks:
    """The RSA signing keys of a JWKS document, looked up by exact ``kid`` (MAA kids contain ``/``, ``+``, ``=``).

    Entries that no accepted alg can use (other ``kty``, no ``kid``, ``use`` other than ``sig``) are skipped; a
    malformed RSA entry, or one whose ``n``/``e`` differ from its ``x5c[0]`` certificate, is a ``CollateralError``.
    """

    def __init__(self, document: Mapping[str, Any], *, source: str = "JWKS document") -> None:
        self.source = source
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise CollateralError(f"{source}: not a JWKS (no 'keys' list)", reason="jwks")
        self._keys = tuple(self._parse(entry, source) for entry in keys)

    @staticmethod
    def _parse(entry: object, source: str) -> Jwk | None:
        if not isinstance(entry, Mapping):
            raise CollateralError(f"{source}: a JWKS key is not a JSON object", reason="jwks")
        try:
            return _jws.parse_jwk(entry)
        except CollateralError as exc:
            raise CollateralError(f"{source}: {exc}", reason=exc.reason) from None

    @classmethod
    def from_json(cls, data: bytes | str, *, source: str = "JWKS document") -> Jwks:
        """Parse a JWKS document; duplicate JSON keys are rejected like in tokens."""
        try:
            return cls(_jws.strict_json_object(data, source), source=source)
        except ValueError as exc:
            raise CollateralError(str(exc), reason="jwks") from None

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k.kid for k in self._keys if k is not None))

    def find(self, kid: str) -> tuple[Jwk, ...]:
        """Every key published under ``kid`` (ITA publishes one key twice, for PS384 and RS256)."""
        return tuple(k for k in self._keys if k is not None and k.kid == kid)


def _unknown_kid(kid: str, where: str) -> EvidenceInvalid:
    return EvidenceInvalid(f"unknown kid {kid!r}: no signing key with this kid in {where}", reason="unknown_kid")


class JwksSource(Protocol):
    """Where a verifier gets signing keys: the one plug point between token verification and key distribution."""

    def lookup(self, kid: str) -> tuple[Jwk, ...]:
        """Keys published under ``kid``; raise ``EvidenceInvalid(reason="unknown_kid")`` when there are none."""
        ...


class StaticJwks:
    """A fixed JWKS (offline verification, pinned keys, tests); never refreshed."""

    def __init__(self, document: Jwks | Mapping[str, Any] | str | bytes, *, source: str = "the static JWKS") -> None:
        if isinstance(document, Jwks):
            self.jwks = document
        elif isinstance(document, str | bytes):
            self.jwks = Jwks.from_json(document, source=source)
        else:
            self.jwks = Jwks(document, source=source)

    def lookup(self, kid: str) -> tuple[Jwk, ...]:
        found = self.jwks.find(kid)
        if not found:
            raise _unknown_kid(kid, self.jwks.source)
        return found


def _tls_verify(url: str, verify: bool | str | os.PathLike[str]) -> ssl.SSLContext:
    """A context trusting the system roots (``True``) or only ``verify``; turning TLS checks off is refused."""
    return tls_context(verify, what=f"the JWKS at {url}")


class JwksUrl:
    """A JWKS fetched over HTTPS with ``httpx``, cached for ``ttl_seconds``, refetched once on an unknown ``kid``.

    The refetch on an unknown kid follows key rollover; it happens at most once per ``min_refetch_seconds`` so
    tokens with made-up kids cannot turn the verifier into a request amplifier against the issuer. Fetch and
    parse failures are ``CollateralError`` naming the URL. ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(self, url: str, *, verify: bool | str | os.PathLike[str] = True, ttl_seconds: float = 3600.0,
                 timeout_seconds: float = 10.0, min_refetch_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not url.startswith("https://"):
            raise ConfigError(f"JWKS URL {url!r} must use https://")
        if ttl_seconds <= 0 or timeout_seconds <= 0 or min_refetch_seconds < 0:
            raise ConfigError(f"JWKS at {url}: ttl_seconds and timeout_seconds must be > 0, "
                              "min_refetch_seconds >= 0")
        self.url = url
        self._verify = _tls_verify(url, verify)
        self._ttl, self._timeout, self._min_refetch = ttl_seconds, timeout_seconds, min_refetch_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks: Jwks | None = None
        self._fetched_at = -math.inf

    @classmethod
    def for_maa(cls, issuer: str, **kwargs: Any) -> JwksUrl:
        """The signing keys of an MAA instance, published at ``<issuer>/certs``."""
        return cls(maa_jwks_url(issuer), **kwargs)

    def lookup(self, kid: str) -> tuple[Jwk, ...]:
        with self._lock:
            age = self._clock() - self._fetched_at
            jwks = self._jwks if self._jwks is not None and age < self._ttl else self._fetch()
            found = jwks.find(kid)
            if not found and self._clock() - self._fetched_at >= self._min_refetch:
                found = self._fetch().find(kid)
        if not found:
            raise _unknown_kid(kid, f"the JWKS at {self.url}")
        return found

    def _fetch(self) -> Jwks:
        try:
            with httpx.Client(verify=self._verify, timeout=self._timeout, follow_redirects=False) as client:
                response = client.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CollateralError(f"cannot fetch the JWKS at {self.url}: {exc}", reason="jwks_fetch") from exc
        if response.status_code != 200:
            raise CollateralError(f"fetching the JWKS at {self.url} returned HTTP {response.status_code}",
                                  reason="jwks_fetch")
        if len(response.content) > MAX_JWKS_BYTES:
            raise CollateralError(f"the JWKS at {self.url} is larger than {MAX_JWKS_BYTES} bytes", reason="jwks")
        self._jwks = Jwks.from_json(response.content, source=f"the JWKS at {self.url}")
        self._fetched_at = self._clock()
        return self._jwks


def maa_jwks_url(issuer: str) -> str:
    """MAA publishes its token signing keys at ``<issuer>/certs`` (the issuer is ``https://<instance>``)."""
    if not issuer.startswith("https://") or issuer.endswith("/"):
        raise ConfigError(f"MAA issuer {issuer!r} must be https://<instance> without a trailing slash")
    return f"{issuer}/certs"


# -- claim mapping -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TeeSpec:
    """Which token claims hold which ``Claims`` field; for each field the first claim name present wins."""

    tee: str
    measurements: tuple[tuple[str, tuple[str, ...], int], ...]  # (Claims key, token claim names, size in bytes)
    svns: tuple[tuple[str, tuple[str, ...]], ...]
    debug: tuple[str, ...]
    report_data: tuple[str, ...]


def _claim_error(name: str, problem: str) -> EvidenceInvalid:
    return EvidenceInvalid(f"token claim {name} {problem}", reason="token_claims")


def _first(raw: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    return next(((name, raw[name]) for name in names if name in raw), None)


def _hex(name: str, value: Any, size: int) -> bytes:
    if not isinstance(value, str):
        raise _claim_error(name, "is not a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise _claim_error(name, "is not hex") from None
    if len(data) != size:
        raise _claim_error(name, f"is {len(data)} bytes, expected {size}")
    return data


def _uint(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _claim_error(name, "is not a non-negative integer")
    return value


def _claims_from(raw: Mapping[str, Any], spec: _TeeSpec) -> Claims:
    """Map ``raw`` with ``spec``. Absent measurements/SVNs stay absent, so a policy rule needing one denies."""
    measurements = {key: _hex(*found, size).hex() for key, names, size in spec.measurements
                    if (found := _first(raw, names)) is not None}
    svns = {key: _uint(*found) for key, names in spec.svns if (found := _first(raw, names)) is not None}
    debug = _first(raw, spec.debug)
    if debug is None or not isinstance(debug[1], bool):
        raise _claim_error(spec.debug[0], "is missing or not a boolean; debug mode must be stated")
    report_data = _first(raw, spec.report_data)
    return Claims(
        tee=spec.tee,
        measurements=measurements,
        svns=svns,
        debug=debug[1],
        report_data=b"" if report_data is None else _hex(*report_data, 64),
    )


# MAA: current x-ms-* names first, then the names of pre-2021 tokens (`gnkuks001` sample), which MAA still emits.
_MAA_SGX = _TeeSpec(
    tee="sgx",
    measurements=(("mr_enclave", ("x-ms-sgx-mrenclave", "sgx-mrenclave"), 32),
                  ("mr_signer", ("x-ms-sgx-mrsigner", "sgx-mrsigner"), 32)),
    svns=(("isv_prod_id", ("x-ms-sgx-product-id", "product-id")), ("isv_svn", ("x-ms-sgx-svn", "svn"))),
    debug=("x-ms-sgx-is-debuggable", "is-debuggable"),
    report_data=("x-ms-sgx-report-data",),
)
_MAA_SNP = _TeeSpec(
    tee="snp",
    measurements=(("measurement", ("x-ms-sevsnpvm-launchmeasurement",), 48),
                  ("host_data", ("x-ms-sevsnpvm-hostdata",), 32),
                  ("id_key_digest", ("x-ms-sevsnpvm-idkeydigest",), 48),
                  ("author_key_digest", ("x-ms-sevsnpvm-authorkeydigest",), 48),
                  ("family_id", ("x-ms-sevsnpvm-familyId",), 16),
                  ("image_id", ("x-ms-sevsnpvm-imageId",), 16)),
    svns=(("guest_svn", ("x-ms-sevsnpvm-guestsvn",)), ("vmpl", ("x-ms-sevsnpvm-vmpl",)),
          ("tcb_bootloader", ("x-ms-sevsnpvm-bootloader-svn",)), ("tcb_tee", ("x-ms-sevsnpvm-tee-svn",)),
          ("tcb_snp", ("x-ms-sevsnpvm-snpfw-svn",)), ("tcb_microcode", ("x-ms-sevsnpvm-microcode-svn",))),
    debug=("x-ms-sevsnpvm-is-debuggable",),
    report_data=("x-ms-sevsnpvm-reportdata",),
)
_MAA_TYPES = MappingProxyType({"sgx": _MAA_SGX, "sevsnpvm": _MAA_SNP})


def _maa_tee_claims(raw: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The attestation type and the claims that describe the TEE: top level, or nested for Azure CVM tokens."""
    kind = raw.get("x-ms-attestation-type", raw.get("tee"))
    if kind not in _MAA_TYPES and isinstance(raw.get("x-ms-isolation-tee"), Mapping):
        raw = raw["x-ms-isolation-tee"]
        kind = raw.get("x-ms-attestation-type")
    return kind, raw


def maa_claims(raw: Mapping[str, Any]) -> Claims:
    """Map the claims of a *verified* MAA token (SGX, SEV-SNP, or an Azure CVM's ``x-ms-isolation-tee``).

    MAA states no TCB status or advisories (it enforces its own TCB baseline), so ``tcb_status`` stays ``None``
    and a policy must list ``null`` in ``accepted_tcb_statuses`` to accept MAA claims. MAA states no full SNP
    guest policy either: ``svns["policy"]`` is absent, so SNP policy-bit rules deny (``x-ms-sevsnpvm-smt-allowed``
    and friends stay in ``raw``). Tokens without a report-data claim (pre-2021 SGX tokens) get ``report_data=b""``,
    which no binding check accepts.
    """
    kind, tee_raw = _maa_tee_claims(raw)
    spec = _MAA_TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise _claim_error("x-ms-attestation-type", f"is {kind!r}; supported: {', '.join(_MAA_TYPES)}")
    return _claims_from(tee_raw, spec)


def _ita(*names: str) -> tuple[str, ...]:
    """ITA claim names followed by their Project Amber (pre-2023) spelling, ``amber_<name>``."""
    return names + tuple(f"amber_{name}" for name in names)


_ITA_SGX = _TeeSpec(
    tee="sgx",
    measurements=(("mr_enclave", _ita("sgx_mrenclave"), 32), ("mr_signer", _ita("sgx_mrsigner"), 32)),
    svns=(("isv_prod_id", _ita("sgx_isvprodid")), ("isv_svn", _ita("sgx_isvsvn"))),
    debug=_ita("sgx_is_debuggable"),
    report_data=("sgx_report_data", "amber_report_data"),
)
_ITA_TDX = _TeeSpec(
    tee="tdx",
    measurements=(("mr_td", _ita("tdx_mrtd"), 48),
                  *((f"rtmr{i}", _ita(f"tdx_rtmr{i}"), 48) for i in range(4)),
                  ("mr_seam", _ita("tdx_mrseam"), 48),
                  ("mr_signer_seam", _ita("tdx_mrsignerseam"), 48),
                  ("mr_config_id", _ita("tdx_mrconfigid"), 48),
                  ("mr_owner", _ita("tdx_mrowner"), 48),
                  ("mr_owner_config", _ita("tdx_mrownerconfig"), 48),
                  ("td_attributes", _ita("tdx_td_attributes"), 8),
                  ("xfam", _ita("tdx_xfam"), 8),
                  ("tee_tcb_svn", _ita("tdx_tee_tcb_svn"), 16)),
    svns=(),
    debug=_ita("tdx_is_debuggable"),
    report_data=("tdx_report_data", "amber_report_data"),
)
_ITA_TYPES = MappingProxyType({"SGX": _ITA_SGX, "TDX": _ITA_TDX})
# Intel's TCB status vocabulary (PCS TCB Info, policy.md); ITA has also used UPPER_SNAKE_CASE spellings.
_INTEL_TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                       "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked", "TDRelaunchAdvised",
                       "TDRelaunchAdvisedConfigurationNeeded")
_TCB_BY_KEY = MappingProxyType({s.lower(): s for s in _INTEL_TCB_STATUSES})


def _tcb_status(raw: Mapping[str, Any]) -> str | None:
    """Intel's spelling of the status (``OUT_OF_DATE`` → ``OutOfDate``); an unknown status is kept as given."""
    found = _first(raw, ("attester_tcb_status", "amber_tcb_status"))
    if found is None:
        return None
    if not isinstance(found[1], str):
        raise _claim_error(found[0], "is not a string")
    return _TCB_BY_KEY.get(found[1].replace("_", "").lower(), found[1])


def _advisory_ids(raw: Mapping[str, Any]) -> tuple[str, ...]:
    found = _first(raw, ("attester_advisory_ids", "amber_advisory_ids"))
    if found is None:
        return ()
    if not isinstance(found[1], list) or not all(isinstance(a, str) for a in found[1]):
        raise _claim_error(found[0], "is not a list of strings")
    return tuple(found[1])


def ita_claims(raw: Mapping[str, Any]) -> Claims:
    """Map the claims of a *verified* Intel Trust Authority (or legacy Project Amber) token for SGX or TDX."""
    found = _first(raw, ("attester_type", "amber_evidence_type"))
    kind = found[1] if found is not None else None
    spec = _ITA_TYPES.get(kind.upper()) if isinstance(kind, str) else None
    if spec is None:
        raise _claim_error("attester_type", f"is {kind!r}; supported: {', '.join(_ITA_TYPES)}")
    return replace(_claims_from(raw, spec), tcb_status=_tcb_status(raw), advisory_ids=_advisory_ids(raw))


# -- verification core ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issuer:
    """What differs between MAA and ITA: the name in messages, the alg allow-list and the claim mapping."""

    service: str
    algs: frozenset[str]
    to_claims: Callable[[Mapping[str, Any]], Claims]


_MAA = _Issuer("MAA", MAA_ALGS, maa_claims)
_ITA = _Issuer("Intel Trust Authority", ITA_ALGS, ita_claims)


def _numeric_date(raw: Mapping[str, Any], name: str) -> datetime | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float)
                                                                         and not math.isfinite(value)):
        raise _claim_error(name, "is not a NumericDate (seconds since the epoch)")
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise _claim_error(name, f"({value}) is out of range") from None


def _check_lifetime(raw: Mapping[str, Any], now: datetime, leeway: float) -> tuple[datetime, datetime | None]:
    """Enforce ``exp`` (required), ``nbf`` and ``iat`` at ``now`` ± leeway; return ``(expires, issued_at)``."""
    expires, not_before, issued_at = (_numeric_date(raw, name) for name in ("exp", "nbf", "iat"))
    if expires is None:
        raise _claim_error("exp", "is missing; tokens without an expiry are not accepted")
    t = now.timestamp()
    if t >= expires.timestamp() + leeway:
        raise EvidenceInvalid(f"token expired at {expires.isoformat()} (now {now.isoformat()}, leeway {leeway:g} s)",
                              reason="token_expired")
    for name, start in (("nbf", not_before), ("iat", issued_at)):
        if start is not None and t < start.timestamp() - leeway:
            raise EvidenceInvalid(f"token is not valid before {start.isoformat()} ({name}; now {now.isoformat()}, "
                                  f"leeway {leeway:g} s)", reason="token_not_yet_valid")
    return expires, issued_at


def _verify(token: str, issuer_kind: _Issuer, *, issuer: str, keys: JwksSource, now: datetime,
            leeway_seconds: float) -> VerifiedToken:
    """The one verification path: parse, alg, key, signature, issuer, lifetime; map claims last."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not 0 <= leeway_seconds <= 600:
        raise ValueError("leeway_seconds must be between 0 and 600")
    jws = _jws.parse_compact(token)
    alg, kid = _jws.check_header(jws.header, issuer_kind.algs)
    key = _jws.verify_signature(jws, alg, keys.lookup(kid), now)
    if jws.payload.get("iss") != issuer:
        raise EvidenceInvalid(f"{issuer_kind.service} token issuer {jws.payload.get('iss')!r} is not the expected "
                              f"{issuer!r}", reason="token_issuer")
    expires, issued_at = _check_lifetime(jws.payload, now, leeway_seconds)
    return VerifiedToken(claims=issuer_kind.to_claims(jws.payload), raw=MappingProxyType(dict(jws.payload)),
                         issuer=issuer, expires=expires, issued_at=issued_at, kid=key.kid, alg=alg)


def verify_maa_token(token: str, *, issuer: str, keys: JwksSource, now: datetime,
                     leeway_seconds: float = DEFAULT_LEEWAY_SECONDS) -> VerifiedToken:
    """Verify an MAA token (RS256) from ``issuer`` (``https://<instance>``) at ``now``; raise ``EvidenceInvalid``.

    Use ``JwksUrl.for_maa(issuer)`` for ``keys`` unless the keys are pinned.
    """
    return _verify(token, _MAA, issuer=issuer, keys=keys, now=now, leeway_seconds=leeway_seconds)


def verify_ita_token(token: str, *, issuer: str = ITA_ISSUER, keys: JwksSource, now: datetime,
                     leeway_seconds: float = DEFAULT_LEEWAY_SECONDS) -> VerifiedToken:
    """Verify an Intel Trust Authority token (PS384 or RS256) at ``now``; raise ``EvidenceInvalid``.

    ITA's JWKS URL depends on the region/deployment (``https://portal.trustauthority.intel.com/certs``), so pass it.
    """
    return _verify(token, _ITA, issuer=issuer, keys=keys, now=now, leeway_seconds=leeway_seconds)


def insecure_parse_unverified(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(header, claims)`` of a token WITHOUT checking signature, issuer or lifetime: diagnostics and tests only.

    The parse is as strict as verification's; nothing returned may be trusted or used for a release decision.
    """
    jws = _jws.parse_compact(token)
    return MappingProxyType(dict(jws.header)), MappingProxyType(dict(jws.payload))
