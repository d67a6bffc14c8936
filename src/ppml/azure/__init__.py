"""Microsoft Azure Attestation (MAA): the REST client, Azure CVM (vTPM / HCL) evidence, and SKR runtime keys.

* :mod:`~.maa`: :class:`MaaClient` sends SGX, Open Enclave, SEV-SNP and Azure CVM guest evidence to MAA and
  verifies the JWT it returns;
* :mod:`~.guest`, :mod:`~.hcl`, :mod:`~.vtpm`: the ``AzureGuest`` request of a confidential VM, assembled from its
  vTPM and HCL parts and checked offline (hardware report binds runtime data, TPM quote signed by the HCL's AK);
* :mod:`~.runtime_key`: an ephemeral RSA key carried in MAA runtime data, which Key Vault Secure Key Release wraps
  released keys to.

See ``docs/azure-attestation.md``.
"""

from __future__ import annotations

from ppml.azure.guest import OsInfo, TpmInfo, azure_guest_request
from ppml.azure.hcl import HclReport, parse_hcl_report
from ppml.azure.maa import MaaClient, RuntimeJson, check_runtime_data, expected_report_data
from ppml.azure.runtime_key import RuntimeKey, runtime_data_json, runtime_jwks, runtime_key_from_token
from ppml.azure.vtpm import TpmQuote, parse_tpm_quote, verify_tpm_quote

__all__ = [
    "HclReport",
    "MaaClient",
    "OsInfo",
    "RuntimeJson",
    "RuntimeKey",
    "TpmInfo",
    "TpmQuote",
    "azure_guest_request",
    "check_runtime_data",
    "expected_report_data",
    "parse_hcl_report",
    "parse_tpm_quote",
    "runtime_data_json",
    "runtime_jwks",
    "runtime_key_from_token",
    "verify_tpm_quote",
]
