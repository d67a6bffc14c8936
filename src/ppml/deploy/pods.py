"""Spark driver and executor pod templates, hardened: Spark fills in the rest (command, env, memory, CPU).

Every pod runs as a non-root user with no capabilities, no privilege escalation, the runtime's default seccomp
profile and a read-only root file system (``/tmp``, the working directory and ``/run/ppml`` are ``emptyDir``
volumes); none uses a host path, the host network, or a kubeconfig. Only the driver mounts a service-account
token (it creates the executors); executors talk to nothing but the driver, the key broker and storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ppml.deploy.tee import Placement

UID = 10001  # the image's ``ppml`` user (deploy/docker/Dockerfile)
WORK_DIR = "/opt/ppml/work"
RUN_DIR = "/run/ppml"  # the launcher's input (ppml.deploy.launch), in memory: it holds Spark's RPC secret
KBS_CA_DIR = "/etc/ppml/kbs"
KBS_CA_FILE = f"{KBS_CA_DIR}/ca.pem"
SECRETS_STORE_DIR = "/mnt/secrets-store"
CONTAINER_NAMES = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}


@dataclass(frozen=True, kw_only=True)
class PodTemplate:
    """The inputs of one pod template; ``env`` must hold no secret (it is visible to the control plane)."""

    role: str  # "driver" or "executor"
    image: str
    placement: Placement
    service_account: str
    env: Mapping[str, str] = field(default_factory=dict)
    kbs_ca_secret: str | None = None  # a Secret whose ``kbs_ca_key`` is the broker's CA certificate
    kbs_ca_key: str = "ca.pem"
    keyvault_csi: str | None = None  # a SecretProviderClass of the Azure Key Vault CSI driver

    def render(self) -> dict[str, Any]:
        """The pod template as a Kubernetes ``Pod`` object."""
        driver = self.role == "driver"
        mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"},
                                        {"name": "work", "mountPath": WORK_DIR},
                                        {"name": "run-ppml", "mountPath": RUN_DIR}]
        volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
                                         {"name": "work", "emptyDir": {"sizeLimit": "4Gi"}},
                                         {"name": "run-ppml", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
        for index, path in enumerate(self.placement.scratch_dirs):
            mounts.append({"name": f"scratch-{index}", "mountPath": path})
            volumes.append({"name": f"scratch-{index}", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}})
        if self.kbs_ca_secret:
            mounts.append({"name": "kbs-ca", "mountPath": KBS_CA_DIR, "readOnly": True})
            volumes.append({"name": "kbs-ca", "secret": {
                "secretName": self.kbs_ca_secret, "defaultMode": 0o444,
                "items": [{"key": self.kbs_ca_key, "path": "ca.pem"}]}})
        if self.keyvault_csi:
            mounts.append({"name": "secrets-store", "mountPath": SECRETS_STORE_DIR, "readOnly": True})
            volumes.append({"name": "secrets-store", "csi": {
                "driver": "secrets-store.csi.k8s.io", "readOnly": True,
                "volumeAttributes": {"secretProviderClass": self.keyvault_csi}}})
        container: dict[str, Any] = {
            "name": CONTAINER_NAMES[self.role],
            "image": self.image,
            "env": [{"name": name, "value": value} for name, value in sorted(self.env.items())],
            "securityContext": {
                "privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumeMounts": mounts,
        }
        if self.placement.resources:
            container["resources"] = {"requests": dict(self.placement.resources),
                                      "limits": dict(self.placement.resources)}
        spec: dict[str, Any] = {
            "automountServiceAccountToken": driver,
            "enableServiceLinks": False,
            "hostNetwork": False, "hostPID": False, "hostIPC": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": volumes,
        }
        if driver:
            spec["serviceAccountName"] = self.service_account
        if self.placement.node_selector:
            spec["nodeSelector"] = dict(self.placement.node_selector)
        if self.placement.runtime_class:
            spec["runtimeClassName"] = self.placement.runtime_class
        labels = {"app.kubernetes.io/name": "ppml-spark", "app.kubernetes.io/component": self.role,
                  "ppml.io/tee": str(self.placement.env.get("PPML_TEE", "none"))}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": labels}, "spec": spec}
