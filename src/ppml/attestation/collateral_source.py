"""Where Intel DCAP TCB collateral comes from: Intel PCS or a PCCS over HTTPS, or an offline directory.

Sources only fetch; they vouch for nothing. The verifier checks every document each time it is used (TCB Info and
QE Identity signatures against the pinned Intel root, CRL signatures against the quote's own chain, every
``nextUpdate`` against ``now``), so a stale cache or a compromised PCCS can make verification fail but can never
make bad evidence pass. Pass a source as ``collateral=`` to ``verify_sgx_quote`` / ``verify_tdx_quote``.

Offline bundle layout (one directory; FMSPC as 12 lower-case hex digits; ``<tee>`` is ``sgx`` or ``tdx``; ``<ca>``
is ``processor`` or ``platform``, the PCK CA that issued the platform's PCK certificate)::

    tcb_info_<tee>_<fmspc>.json   PCS TCB Info response body, byte for byte  ({"tcbInfo": ..., "signature": ...})
    qe_identity_<tee>.json        PCS QE Identity response body (enclaveIdentity id QE for sgx, TD_QE for tdx)
    pck_crl_<ca>.der              PCK CRL of that CA (DER or PEM)
    root_crl.der                  Intel SGX Root CA CRL (DER or PEM)
    tcb_signing_chain.pem         Intel SGX TCB Signing certificate (+ root), PEM: the TCB-Info-Issuer-Chain header

PCS API v4 endpoints used by :class:`PcsClient` (a PCCS serves the same paths)::

    GET {base}/{tee}/certification/v4/tcb?fmspc=<FMSPC>         body: TCB Info; header TCB-Info-Issuer-Chain
    GET {base}/{tee}/certification/v4/qe/identity              body: QE Identity
    GET {base}/sgx/certification/v4/pckcrl?ca=<ca>&encoding=der body: PCK CRL
    GET {root_crl_url}   PCCS: {base}/sgx/certification/v4/rootcacrl; Intel PCS: the pinned root's CRL
                         distribution point (https://certificates.trustedservices.intel.com/IntelSGXRootCA.der)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography import x509

from ppml._atomic import atomic_write_bytes
from ppml._tls import tls_context
from ppml.attestation import _dcap
from ppml.attestation.collateral import MAX_COLLATERAL_JSON, Collateral, parse_pck_extensions, signed_json_value
from ppml.attestation.errors import CollateralError, EvidenceInvalid
from ppml.errors import ConfigError

if TYPE_CHECKING:
    import httpx

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
TEES = ("sgx", "tdx")
PCK_CAS = ("processor", "platform")
TCB_INFO_ISSUER_CHAIN = "TCB-Info-Issuer-Chain"
_PCK_CA_NAMES = {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}
_CACHE_FORMAT = 1


@runtime_checkable
class CollateralSource(Protocol):
    """Returns the collateral for one TEE type, platform (FMSPC) and PCK CA, as current as possible at ``now``."""

    def collateral_for(self, *, tee: str, fmspc: bytes, ca: str, now: datetime) -> Collateral:
        """``tee``: ``"sgx"``/``"tdx"``; ``fmspc``: 6 bytes; ``ca``: ``"processor"``/``"platform"``."""
        ...


def pck_ca(leaf: x509.Certificate) -> str:
    """Which PCK CA issued a PCK certificate (``"processor"`` or ``"platform"``): it selects the PCK CRL."""
    names = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ca = _PCK_CA_NAMES.get(str(names[0].value)) if names else None
    if ca is None:
        raise EvidenceInvalid(f"PCK certificate issuer {leaf.issuer.rfc4514_string()} is not an Intel PCK CA",
                              reason="pck_chain")
    return ca


def fetch_for_quote(source: CollateralSource, quote: _dcap.Quote, *, now: datetime) -> Collateral:
    """Ask ``source`` for the collateral a parsed quote needs (TEE type, FMSPC and CA from its PCK certificate)."""
    leaf = _dcap.load_pck_chain(quote.certification.cert_data)[0]
    return source.collateral_for(tee=quote.tee, fmspc=parse_pck_extensions(leaf).fmspc, ca=pck_ca(leaf), now=now)


def _check_request(tee: str, fmspc: bytes, ca: str, now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if tee not in TEES:
        raise ValueError(f"tee must be one of {TEES}, got {tee!r}")
    if not isinstance(fmspc, bytes) or len(fmspc) != 6:
        raise ValueError(f"fmspc must be 6 bytes, got {fmspc!r}")
    if ca not in PCK_CAS:
        raise ValueError(f"ca must be one of {PCK_CAS}, got {ca!r}")


# --- offline directory ----------------------------------------------------------------------------------------


class OfflineBundle:
    """Collateral from a directory (layout in the module docstring), for verifiers without network access.

    Files are read on every call, so replacing them takes effect at once; ``now`` is not used here because the
    verifier checks each document's validity itself.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"OfflineBundle({str(self.directory)!r})"

    def collateral_for(self, *, tee: str, fmspc: bytes, ca: str, now: datetime) -> Collateral:
        _check_request(tee, fmspc, ca, now)
        return Collateral(
            tcb_info_json=self._read(f"tcb_info_{tee}_{fmspc.hex()}.json"),
            qe_identity_json=self._read(f"qe_identity_{tee}.json"),
            tcb_signing_chain=[self._read("tcb_signing_chain.pem")],
            root_crl=self._read("root_crl.der"),
            pck_crl=self._read(f"pck_crl_{ca}.der"),
        )

    def _read(self, name: str) -> bytes:
        path = self.directory / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CollateralError(f"offline collateral bundle: cannot read {path}: {exc.strerror or exc}",
                                  reason="missing") from exc


# --- PCS / PCCS over HTTPS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Document:
    """One fetched response: its body, the issuer chain header (if any), and when it stops being current."""

    body: bytes
    issuer_chain: bytes | None
    expires: datetime


def _json_document(key: str, name: str) -> Callable[[bytes, str], tuple[bytes, datetime]]:
    def parse(body: bytes, url: str) -> tuple[bytes, datetime]:
        signed, _ = signed_json_value(body, key, f"{name} from {url}")
        value = json.loads(signed)
        raw = value.get("nextUpdate") if isinstance(value, dict) else None
        try:
            expires = datetime.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError as exc:
            raise CollateralError(f"{url}: {name} nextUpdate is not an ISO time", reason="malformed") from exc
        if expires is None or expires.tzinfo is None:
            raise CollateralError(f"{url}: {name} has no nextUpdate with a time zone", reason="malformed")
        return body, expires

    return parse


def _crl_document(body: bytes, url: str) -> tuple[bytes, datetime]:
    """Accept a CRL as DER, PEM or hex text of the DER; return it as DER or PEM."""
    text = body.strip()
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        body = bytes.fromhex(text.decode("ascii"))
    try:
        crl = x509.load_pem_x509_crl(body) if body.lstrip().startswith(b"-----") else x509.load_der_x509_crl(body)
    except ValueError as exc:
        raise CollateralError(f"{url}: response is not a CRL: {exc}", reason="malformed") from exc
    if crl.next_update_utc is None:
        raise CollateralError(f"{url}: CRL has no nextUpdate", reason="malformed")
    return body, crl.next_update_utc


def _root_crl_distribution_point() -> str:
    """The pinned Intel SGX Root CA's CRL URL: where Intel PCS users fetch the root CRL."""
    points = _dcap.pinned_root().extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return str(name.value)
    raise ConfigError("the pinned Intel SGX Root CA has no CRL distribution point; pass root_crl_url")


def _https(url: str, what: str) -> str:
    if not url.startswith("https://"):
        raise ConfigError(f"{what} must be an https:// URL (TLS is always verified), got {url!r}")
    return url.rstrip("/")


def _tls_context(verify: str | os.PathLike[str] | None) -> ssl.SSLContext:
    if isinstance(verify, bool):
        raise ConfigError("verify must be a CA bundle path or None; TLS verification cannot be turned off")
    return tls_context(verify, what="Intel PCS/PCCS")


class PcsClient:
    """Collateral from Intel PCS (API v4) or a PCCS, cached in memory (and in ``cache_dir``) until it expires.

    Each response is kept until its own ``nextUpdate`` (TCB Info / QE Identity JSON, CRL) and fetched again at
    the first call whose ``now`` is at or after it. The disk cache is written atomically and read back only as a
    hint: a damaged entry is fetched again. TLS is always verified, against the system trust store or the CA
    bundle file ``verify`` (e.g. a PCCS's own CA). ``root_crl_url`` defaults to the pinned root's CRL distribution
    point for Intel PCS and to ``{base_url}/sgx/certification/v4/rootcacrl`` for a PCCS.
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        verify: str | os.PathLike[str] | None = None,
        root_crl_url: str | None = None,
    ) -> None:
        import httpx  # imported here so that verifying with offline collateral does not load an HTTP stack

        self.base_url = _https(base_url, "base_url")
        if root_crl_url is None and self.base_url == INTEL_PCS_URL:
            root_crl_url = _root_crl_distribution_point()
        elif root_crl_url is None:
            root_crl_url = f"{self.base_url}/sgx/certification/v4/rootcacrl"
        self.root_crl_url = _https(root_crl_url, "root_crl_url")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._client: httpx.Client = httpx.Client(verify=_tls_context(verify), timeout=timeout, follow_redirects=True)
        self._memory: dict[str, _Document] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PcsClient({self.base_url!r})"

    def __enter__(self) -> PcsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool; the client cannot fetch afterwards."""
        self._client.close()

    def collateral_for(self, *, tee: str, fmspc: bytes, ca: str, now: datetime) -> Collateral:
        _check_request(tee, fmspc, ca, now)
        base = self.base_url
        tcb = self._get(f"{base}/{tee}/certification/v4/tcb?fmspc={fmspc.hex().upper()}", now,
                        _json_document("tcbInfo", "TCB Info"), chain_header=TCB_INFO_ISSUER_CHAIN)
        qe = self._get(f"{base}/{tee}/certification/v4/qe/identity", now,
                       _json_document("enclaveIdentity", "QE Identity"))
        pck_crl = self._get(f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der", now, _crl_document)
        root_crl = self._get(self.root_crl_url, now, _crl_document)
        assert tcb.issuer_chain is not None  # _fetch and _get require the header
        return Collateral(tcb_info_json=tcb.body, qe_identity_json=qe.body, tcb_signing_chain=[tcb.issuer_chain],
                          root_crl=root_crl.body, pck_crl=pck_crl.body)

    def _get(self, url: str, now: datetime, parse: Callable[[bytes, str], tuple[bytes, datetime]], *,
             chain_header: str | None = None) -> _Document:
        """The cached document for ``url`` while ``now`` is before its ``nextUpdate``, else a fresh one."""
        with self._lock:
            doc = self._memory.get(url) or self._load(url)
            if doc is None or now >= doc.expires or (chain_header and doc.issuer_chain is None):
                doc = self._fetch(url, parse, chain_header)
                self._store(url, doc)
            self._memory[url] = doc
            return doc

    def _fetch(self, url: str, parse: Callable[[bytes, str], tuple[bytes, datetime]],
               chain_header: str | None) -> _Document:
        import httpx

        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise CollateralError(f"{url}: HTTP {response.status_code} {response.reason_phrase}",
                                          reason="fetch")
                body = _read_limited(response.iter_bytes(), url)
                chain = response.headers.get(chain_header) if chain_header else None
        except httpx.HTTPError as exc:
            raise CollateralError(f"{url}: request failed: {exc}", reason="fetch") from exc
        if chain_header and not chain:
            raise CollateralError(f"{url}: response lacks the {chain_header} header", reason="malformed")
        body, expires = parse(body, url)
        issuer_chain = urllib.parse.unquote(chain).encode() if chain else None
        return _Document(body=body, issuer_chain=issuer_chain, expires=expires)

    def _path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.json"

    def _load(self, url: str) -> _Document | None:
        path = self._path(url)
        if path is None or not path.is_file():
            return None
        try:
            entry: Any = json.loads(path.read_bytes())
            if entry.get("format") != _CACHE_FORMAT or entry.get("url") != url:
                return None
            chain = entry.get("issuer_chain")
            return _Document(body=base64.b64decode(entry["body"], validate=True),
                             issuer_chain=chain.encode() if isinstance(chain, str) else None,
                             expires=datetime.fromisoformat(entry["expires"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # a damaged cache entry is only a miss

    def _store(self, url: str, doc: _Document) -> None:
        path = self._path(url)
        if path is None:
            return
        entry = {"format": _CACHE_FORMAT, "url": url, "expires": doc.expires.isoformat(),
                 "issuer_chain": doc.issuer_chain.decode() if doc.issuer_chain is not None else None,
                 "body": base64.b64encode(doc.body).decode("ascii")}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(entry).encode())


def _read_limited(chunks: Iterator[bytes], url: str) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > MAX_COLLATERAL_JSON:
            raise CollateralError(f"{url}: response is larger than {MAX_COLLATERAL_JSON} bytes", reason="malformed")
    return bytes(out)
