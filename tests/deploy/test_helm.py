"""The key broker's chart, rendered by the real ``helm template`` and validated against Kubernetes' schemas."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ppml.broker.config import BrokerConfig
from tests.deploy._k8s import documents, validate_all, walk

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ppml-kbs"
REQUIRED = ["tls.existingSecret=ppml-kbs-tls", "tokenKey.existingSecret=ppml-kbs-token",
            "storage.local.existingSecret=ppml-kbs-storage", "adminPublicKeys[0]=-----BEGIN PUBLIC KEY-----"]


@functools.cache
def helm() -> str:
    """The pinned helm that scripts/ensure-helm.sh builds (run here if make has not run it yet)."""
    path = os.environ.get("PPML_HELM") or str(ROOT / ".work" / "tools" / "bin" / "helm")
    if not Path(path).exists():
        subprocess.run([str(ROOT / "scripts" / "ensure-helm.sh")], check=True, timeout=900)
    return path


def render(*values: str, required: list[str] = REQUIRED) -> subprocess.CompletedProcess[str]:
    args = [helm(), "template", "kbs", str(CHART), "--namespace", "ppml", "--kube-version", "1.30.0"]
    for value in [*required, *values]:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def objects(*values: str, required: list[str] = REQUIRED) -> dict[str, dict[str, Any]]:
    result = render(*values, required=required)
    assert result.returncode == 0, result.stderr
    docs = documents(result.stdout)
    validate_all(docs)
    return {doc["kind"]: doc for doc in docs}


def broker(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]


CASES = {
    "sgx-aks": ["nodeSelection=sgx"],
    "sgx-intel": ["nodeSelection=sgx", "sgx.plugin=intel", "sgx.epcMiB=8192"],
    "cvm-azurekv": ["nodeSelection=cvm", "storage.kms=azurekv", "storage.azurekv.vaultUrl=https://v.vault.azure.net",
                    "storage.azurekv.clientId=00000000-0000-0000-0000-000000000001"],
    "coco": ["nodeSelection=coco"],
    "none-cert-manager": ["tls.existingSecret=", "tls.certManager.enabled=true", "tls.certManager.issuerRef.name=ca"],
    "digest-existing-claim": ["image.digest=sha256:" + "ab" * 32, "persistence.existingClaim=kbs-data"],
}


@pytest.mark.parametrize("case", CASES)
def test_chart_renders_valid_hardened_objects(case: str) -> None:
    docs = objects(*CASES[case])
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
    assert not [path for path, _ in walk(spec) if path.endswith("hostPath") or path.endswith("hostNetwork")]
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True and context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert all("valueFrom" not in env for env in container.get("env", []))
    container = broker(docs)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert docs["Service"]["spec"]["ports"][0]["port"] == 8443


def test_sgx_requests_epc_under_the_chosen_plugin() -> None:
    aks = broker(objects(*CASES["sgx-aks"]))["resources"]
    assert aks["limits"]["kubernetes.azure.com/sgx_epc_mem_in_MiB"] == "4096"
    assert aks["requests"]["kubernetes.azure.com/sgx_epc_mem_in_MiB"] == "4096"
    intel = broker(objects(*CASES["sgx-intel"]))["resources"]["limits"]
    assert intel["sgx.intel.com/epc"] == "8192Mi" and intel["sgx.intel.com/provision"] == "1"
    assert intel["sgx.intel.com/enclave"] == "1"


def test_cvm_and_coco_placement() -> None:
    cvm = objects(*CASES["cvm-azurekv"])["Deployment"]["spec"]["template"]["spec"]
    assert cvm["nodeSelector"] == {"kubernetes.azure.com/security-type": "ConfidentialVM"}
    coco = objects(*CASES["coco"])["Deployment"]["spec"]["template"]["spec"]
    assert coco["runtimeClassName"] == "kata-cc-isolation"
    none = objects()["Deployment"]["spec"]["template"]["spec"]
    assert "nodeSelector" not in none and "runtimeClassName" not in none
    assert "resources" in none["containers"][0] and not any(
        "sgx" in key for key in none["containers"][0]["resources"]["limits"])


def test_azure_key_vault_uses_workload_identity() -> None:
    docs = objects(*CASES["cvm-azurekv"])
    assert docs["ServiceAccount"]["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000001"}
    pod = docs["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert {"name": "PPML_KEYVAULT_URL", "value": "https://v.vault.azure.net"} in broker(docs)["env"]
    config = json.loads(docs["ConfigMap"]["data"]["broker.json"])
    assert config["storage"] == {"key_uri": "azurekv:kbs-storage",
                                 "kms": {"azurekv": {"vault_url": "https://v.vault.azure.net"}}}
    assert all(v["name"] != "storage" for v in pod["spec"]["volumes"])


def test_tls_from_an_existing_secret_or_cert_manager() -> None:
    existing = objects()
    tls = next(v for v in existing["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "ppml-kbs-tls" and "Certificate" not in existing
    issued = objects(*CASES["none-cert-manager"])
    certificate = issued["Certificate"]
    assert certificate["apiVersion"] == "cert-manager.io/v1" and certificate["spec"]["secretName"] == "kbs-ppml-kbs-tls"
    assert certificate["spec"]["dnsNames"] == ["kbs-ppml-kbs", "kbs-ppml-kbs.ppml.svc"]
    assert certificate["spec"]["issuerRef"] == {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}
    volumes = issued["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "tls")["secret"]["secretName"] == "kbs-ppml-kbs-tls"


def test_broker_configuration_is_one_the_broker_accepts(tmp_path: Path) -> None:
    docs = objects()
    (tmp_path / "broker.json").write_text(docs["ConfigMap"]["data"]["broker.json"])
    config = BrokerConfig.load(tmp_path / "broker.json")
    assert config.listen == "0.0.0.0:8443" and str(config.database) == "/var/lib/ppml-kbs/broker.db"
    assert config.storage_key_uri == "local:kbs-storage"
    assert config.storage_kms["local"]["passphrase_file"] == "/etc/ppml-kbs/storage/storage.passphrase"
    assert [str(p) for p in config.admin_public_keys] == ["/etc/ppml-kbs/admin/admin-0.pub"]
    assert str(config.token_key) == "/run/ppml-kbs/keys/token-key.pem"
    assert docs["ConfigMap"]["data"]["admin-0.pub"].startswith("-----BEGIN PUBLIC KEY-----")
    text = docs["ConfigMap"]["data"]["broker.json"]
    assert "passphrase" not in text.replace("passphrase_file", "").replace("storage.passphrase", "")


def test_private_keys_are_copied_to_owner_only_files() -> None:
    init = objects()["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]
    script = init["args"][0]
    assert "install -m 0600 /secrets/tls/tls.key" in script and "install -m 0600 /secrets/token/" in script


@pytest.mark.parametrize("values, message", [
    (["tls.existingSecret="], "tls.existingSecret"),
    (["replicas=2"], "replicas must be 1"),
    (["nodeSelection=gpu"], "nodeSelection"),
    (["storage.kms=vault"], "storage.kms"),
    (["storage.kms=azurekv"], "vaultUrl"),
    (["nodeSelection=sgx", "sgx.plugin=other"], "sgx.plugin"),
])
def test_bad_values_fail_to_render(values: list[str], message: str) -> None:
    result = render(*values)
    assert result.returncode != 0 and message in result.stderr


def test_required_values_are_named() -> None:
    result = render(required=[])
    assert result.returncode != 0 and "set " in result.stderr
