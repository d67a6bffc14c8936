"""Where each TEE's pods run: device-plugin resources, node selectors, runtime class, attester.

No TEE needs a privileged pod or a host path here. SGX enclaves get ``/dev/sgx_*`` from a device plugin when the
pod requests its resources, and quotes are made in the pod with DCAP (the az-dcap-client library on AKS, or an
Intel PCCS), so the aesmd socket is never mounted. Confidential VMs are whole nodes chosen by a label, and
confidential containers (Kata) are chosen by their runtime class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from ppml.errors import ConfigError


class Tee(str, Enum):
    """The TEE a Spark job's pods run in."""

    SGX = "sgx"
    TDX = "tdx"
    SNP = "snp"
    COCO = "coco"
    NONE = "none"


# AKS confidential-computing add-on: the EPC in integer MiB (its plugin also mounts the SGX devices).
AKS_SGX_EPC = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
# Intel's SGX device plugin: EPC bytes, plus one enclave and one provision device (DCAP's quoting enclave).
INTEL_SGX_EPC = "sgx.intel.com/epc"
INTEL_SGX_ENCLAVE = "sgx.intel.com/enclave"
INTEL_SGX_PROVISION = "sgx.intel.com/provision"
# AKS labels the nodes of confidential-VM node pools (DCasv5/ECasv5 SEV-SNP, DCesv5 TDX) with this.
CVM_LABEL = ("kubernetes.azure.com/security-type", "ConfidentialVM")
# AKS confidential containers: each pod is its own SEV-SNP utility VM.
COCO_RUNTIME_CLASS = "kata-cc-isolation"

DEFAULT_ATTESTER: Mapping[Tee, str] = {
    Tee.SGX: "gramine", Tee.TDX: "tsm", Tee.SNP: "tsm", Tee.COCO: "auto", Tee.NONE: "auto",
}


@dataclass(frozen=True)
class Placement:
    """What a pod template needs for one TEE."""

    resources: Mapping[str, str] = field(default_factory=dict)  # extended resources: requests == limits
    node_selector: Mapping[str, str] = field(default_factory=dict)
    runtime_class: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    scratch_dirs: tuple[str, ...] = ()  # writable emptyDir mounts the TEE's runtime needs


# The in-pod AESM (DCAP quoting) keeps its socket and state here; emptyDirs, never the host's.
AESM_DIRS = ("/var/run/aesmd", "/var/opt/aesmd")


def sgx_resources(plugin: str, epc_mib: int) -> dict[str, str]:
    """The device-plugin resources for an enclave of ``epc_mib`` MiB, under AKS's or Intel's names."""
    if plugin == "aks":
        return {AKS_SGX_EPC: str(epc_mib)}
    if plugin == "intel":
        return {INTEL_SGX_EPC: f"{epc_mib}Mi", INTEL_SGX_ENCLAVE: "1", INTEL_SGX_PROVISION: "1"}
    raise ConfigError(f"unknown SGX device plugin {plugin!r}; choose aks or intel")


def placement(tee: Tee, *, sgx_plugin: str = "aks", epc_mib: int | None = None,
              pccs_url: str | None = None, node_selector: Mapping[str, str] | None = None) -> Placement:
    """Resources, selectors and environment for ``tee``; ``node_selector`` adds to (or overrides) ours."""
    env = {"PPML_TEE": tee.value}
    extra = dict(node_selector or {})
    if tee is Tee.SGX:
        if epc_mib is None:
            raise ConfigError("--tee sgx needs an EPC size (--sgx-epc)")
        if pccs_url:
            env["PCCS_URL"] = pccs_url
        return Placement(resources=sgx_resources(sgx_plugin, epc_mib), node_selector=extra, env=env,
                         scratch_dirs=AESM_DIRS)
    if tee in (Tee.TDX, Tee.SNP):
        return Placement(node_selector={CVM_LABEL[0]: CVM_LABEL[1], **extra}, env=env)
    if tee is Tee.COCO:
        return Placement(node_selector=extra, runtime_class=COCO_RUNTIME_CLASS, env=env)
    return Placement(node_selector=extra, env=env)
