"""Microsoft Azure Attestation (MAA) as an evidence collector: an SGX quote or SEV-SNP report in, MAA's JWT out.

The 64-byte ``report_data`` passed to :meth:`MaaAttester.collect` becomes MAA's *runtime data* (``Binary``). MAA
checks that the first 32 bytes of the hardware report's REPORTDATA are SHA-256 of the runtime data, so the inner
attester is asked for ``SHA-256(report_data) || 32 zero bytes``; the token then carries the runtime data, and a
verifier compares it with the ``report_data`` it expects.

The requests themselves (shapes, errors, TLS) are :class:`ppml.azure.maa.MaaClient`'s; this is the thin adapter to
the :class:`~ppml.attestation.evidence.Attester` protocol. No ``nonce`` field is sent: freshness is already bound
through the runtime data, which holds the broker's nonce.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import TYPE_CHECKING

import httpx

from ppml.attestation.collectors._common import check_report_data
from ppml.attestation.evidence import Attester, Evidence
from ppml.errors import AttestationError, ConfigError

if TYPE_CHECKING:
    from ppml.azure.maa import MaaClient

__all__ = ["MaaAttester"]

log = logging.getLogger(__name__)

_TEES = frozenset({"sgx", "snp"})


def _azure_maa() -> ModuleType:
    """``ppml.azure.maa``, imported on use: ppml.azure imports ppml.attestation, whose package imports this module."""
    import ppml.azure.maa

    return ppml.azure.maa


class MaaAttester:
    """Wraps an SGX or SEV-SNP attester; ``collect`` returns MAA's token as ``Evidence(tee="maa")``.

    Args:
        endpoint: the attestation provider's URL, e.g. ``https://myprovider.eus.attest.azure.net``.
        inner: the attester that produces the hardware evidence (``tee`` ``sgx`` or ``snp``).
        http_client: an ``httpx.Client`` to reuse (it must verify TLS); by default one is made per request.

    Raises:
        ConfigError: the endpoint is not ``https://``, or ``inner`` is neither SGX nor SEV-SNP.
    """

    tee = "maa"

    def __init__(self, endpoint: str, inner: Attester, http_client: httpx.Client | None = None) -> None:
        self._client: MaaClient = _azure_maa().MaaClient(endpoint, http=http_client)
        if inner.tee not in _TEES:
            raise ConfigError(f"MAA attests SGX or SEV-SNP evidence, not {inner.tee!r}")
        self.endpoint = self._client.endpoint
        self.inner = inner

    def collect(self, report_data: bytes) -> Evidence:
        """Collect inner evidence bound to ``report_data`` as MAA requires, and exchange it for an MAA token.

        Raises:
            ValueError: ``report_data`` is not 64 bytes.
            AttestationError: the inner attester failed, MAA rejected the evidence, or the reply is malformed.
        """
        check_report_data(report_data)
        inner = self.inner.collect(_azure_maa().expected_report_data(report_data))
        if inner.tee == "sgx":
            token = self._client.attest_sgx(inner.quote, runtime_data=report_data)
        elif inner.tee == "snp":
            token = self._client.attest_sev_snp_vm(inner.quote, vcek_chain=inner.certificates or None,
                                                   runtime_data=report_data)
        else:
            raise AttestationError(f"inner attester returned {inner.tee!r} evidence, expected sgx or snp",
                                   reason="tee_type")
        log.debug("MAA at %s issued a %d-byte token for %s evidence", self.endpoint, len(token), inner.tee)
        return Evidence(tee=self.tee, quote=token.encode("ascii"))
