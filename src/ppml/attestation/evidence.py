"""Evidence as it travels from a TEE to the key broker, and how it is bound to one challenge and one key.

A workload makes an ephemeral key pair, asks the broker for a nonce, and collects evidence whose 64-byte report
data is :func:`report_data` of the two. The broker recomputes that hash from the nonce it issued and the public
key the workload sent; evidence bound to another nonce (a replay) or another key (a relay) fails there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ppml._b64 import b64url, unb64url
from ppml.attestation.errors import EvidenceInvalid

REPORT_DATA_SIZE = 64


def runtime_data(nonce: str, tee_pubkey: Mapping[str, Any]) -> bytes:
    """The canonical bytes of the Trustee ``runtime-data`` object ``{"nonce", "tee-pubkey"}``.

    Canonical JSON (sorted keys, no spaces) so that attester and verifier hash the same bytes whatever their
    JSON libraries do.
    """
    return json.dumps({"nonce": nonce, "tee-pubkey": dict(tee_pubkey)}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode("ascii")


def report_data(nonce: str, tee_pubkey: Mapping[str, Any]) -> bytes:
    """The 64 bytes a TEE must put in its report: SHA-512 of :func:`runtime_data` (fills SGX/TDX/SNP report data)."""
    return hashlib.sha512(runtime_data(nonce, tee_pubkey)).digest()


@dataclass(frozen=True)
class Evidence:
    """Hardware (or simulated) evidence: which TEE made it, its bytes, and any certificates it needs.

    ``tee`` is one of ``sgx``, ``tdx``, ``snp``, ``maa``, ``ita``, ``simulated``. ``quote`` is the SGX/TDX quote,
    the SNP report, the JWT (UTF-8) or the simulated report. ``certificates`` carries what the platform hands out
    next to the report (the SNP VCEK chain from configfs-tsm ``auxblob``), PEM or DER, possibly empty.
    """

    tee: str
    quote: bytes
    certificates: bytes = b""

    def to_json(self) -> dict[str, str]:
        """The Trustee ``tee-evidence`` shape, base64url without padding."""
        doc = {"tee": self.tee, "quote": b64url(self.quote)}
        if self.certificates:
            doc["certificates"] = b64url(self.certificates)
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Evidence:
        """Parse :meth:`to_json` output; raise :class:`EvidenceInvalid` naming the bad field."""
        if not isinstance(doc, Mapping):
            raise EvidenceInvalid("evidence must be a JSON object")
        unknown = set(doc) - {"tee", "quote", "certificates"}
        if unknown:
            raise EvidenceInvalid(f"evidence has unknown fields {sorted(unknown)}")
        tee = doc.get("tee")
        if not isinstance(tee, str) or not tee:
            raise EvidenceInvalid("evidence field 'tee' must be a non-empty string")
        return cls(tee=tee, quote=_unb64(doc.get("quote"), "quote"),
                   certificates=_unb64(doc.get("certificates", ""), "certificates"))


class Attester(Protocol):
    """Collects evidence inside one kind of TEE; every collector implements this."""

    tee: str

    def collect(self, report_data: bytes) -> Evidence:
        """Evidence whose report data is exactly ``report_data`` (64 bytes)."""
        ...


def _unb64(text: object, name: str) -> bytes:
    try:
        return unb64url(text)
    except ValueError:
        raise EvidenceInvalid(f"evidence field {name!r} is not a valid base64url string") from None
