"""``ppml submit``: dry-run output per TEE, secret refusal, BigDL aliases, EPC sizing, running spark-submit."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ppml.cli.submit import submit
from ppml.deploy import submit as submit_module
from ppml.deploy.sparkconf import SECRET_NAME, SECRET_VALUE, SECURE_CONF
from ppml.deploy.submit import SubmitOptions, find_spark_submit, plan
from ppml.deploy.tee import Tee
from ppml.errors import ConfigError
from tests.deploy._k8s import documents, validate_all, walk

MASTER = "k8s://https://aks.example:443"
BASE = ["--master", MASTER, "--image", "ppmlacr.azurecr.io/ppml@sha256:" + "ab" * 32, "--namespace", "ppml",
        "--kbs-url", "https://ppml-kbs.ppml.svc:8443", "--kbs-ca-secret", "ppml-kbs-ca"]
APP = ["local:///opt/ppml/jobs/query.py", "abfss://in@acct.dfs.core.windows.net/x"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(submit, list(args))


def dry_run(*args: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The command lines (without the comment prefix) and the manifests of a dry run."""
    result = invoke(*BASE, *args, "--dry-run", *APP)
    assert result.exit_code == 0, result.output
    comments = [line[1:].strip() for line in result.stdout.splitlines() if line.startswith("#")]
    return comments, documents(result.stdout)


def pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "Pod"]


@pytest.mark.parametrize("tee", ["sgx", "tdx", "snp", "coco", "none"])
def test_dry_run_manifests_are_valid_and_hardened(tee: str) -> None:
    _, docs = dry_run("--tee", tee, "--keyvault-csi", "ppml-kv")
    validate_all(docs)
    assert [d["kind"] for d in docs] == ["Pod", "Pod", "ServiceAccount", "Role", "RoleBinding"]
    for pod in pods(docs):
        spec = pod["spec"]
        assert not spec["hostNetwork"] and not spec["hostPID"] and not spec["hostIPC"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert all("hostPath" not in volume for volume in spec["volumes"])
        container = spec["containers"][0]
        context = container["securityContext"]
        assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert all("valueFrom" not in env for env in container["env"])  # no secretKeyRef
        assert not any(SECRET_NAME.search(env["name"]) for env in container["env"])
        assert not any("kube" in mount["mountPath"] for mount in container["volumeMounts"])
        csi = next(v for v in spec["volumes"] if v["name"] == "secrets-store")["csi"]
        assert csi == {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                       "volumeAttributes": {"secretProviderClass": "ppml-kv"}}
        assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] in ("kbs-ca", "secrets-store"))
        assert {"name": "PPML_TEE", "value": tee} in container["env"]
    driver, executor = pods(docs)
    assert driver["spec"]["automountServiceAccountToken"] is True
    assert driver["spec"]["serviceAccountName"] == "ppml-spark"
    assert executor["spec"]["automountServiceAccountToken"] is False


def test_sgx_uses_device_plugin_resources_aks_by_default() -> None:
    _, docs = dry_run("--tee", "sgx", "--sgx-epc", "16G", "--executor-memory", "8g")
    for pod in pods(docs):
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources["limits"] == resources["requests"] == {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "16384"}
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert "/var/run/aesmd" in mounts  # an in-pod AESM's emptyDir, not the host's socket
        assert "nodeSelector" not in pod["spec"] and "runtimeClassName" not in pod["spec"]


def test_sgx_intel_plugin_and_pccs() -> None:
    _, docs = dry_run("--tee", "sgx", "--sgx-plugin", "intel", "--sgx-epc", "8G",
                      "--pccs-url", "https://pccs.example:8081/sgx/certification/v4/")
    for pod in pods(docs):
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"] == {
            "sgx.intel.com/epc": "8192Mi", "sgx.intel.com/enclave": "1", "sgx.intel.com/provision": "1"}
        assert {"name": "PCCS_URL", "value": "https://pccs.example:8081/sgx/certification/v4/"} in container["env"]
        assert {"name": "PPML_ATTESTER", "value": "gramine"} in container["env"]


@pytest.mark.parametrize("tee", ["tdx", "snp"])
def test_confidential_vms_are_selected_by_node_label(tee: str) -> None:
    _, docs = dry_run("--tee", tee, "--node-selector", "agentpool=cvmpool")
    for pod in pods(docs):
        assert pod["spec"]["nodeSelector"] == {"kubernetes.azure.com/security-type": "ConfidentialVM",
                                               "agentpool": "cvmpool"}
        assert "resources" not in pod["spec"]["containers"][0]
        assert {"name": "PPML_ATTESTER", "value": "tsm"} in pod["spec"]["containers"][0]["env"]


def test_confidential_containers_use_the_kata_runtime_class() -> None:
    _, docs = dry_run("--tee", "coco")
    assert all(pod["spec"]["runtimeClassName"] == "kata-cc-isolation" for pod in pods(docs))


def test_none_has_no_tee_placement_and_warns() -> None:
    comments, docs = dry_run("--tee", "none")
    for pod in pods(docs):
        assert "nodeSelector" not in pod["spec"] and "runtimeClassName" not in pod["spec"]
        assert "resources" not in pod["spec"]["containers"][0]
    assert any("outside any TEE" in line for line in comments)


def test_command_sets_secure_spark_conf_and_the_key_ring() -> None:
    comments, _ = dry_run("--tee", "sgx", "--conf", "spark.sql.shuffle.partitions=400", "--deploy-mode", "cluster")
    confs = dict(line.removeprefix("--conf ").rstrip(" \\").strip("'").split("=", 1)
                 for line in comments if line.startswith("--conf"))
    for key, value in SECURE_CONF.items():
        assert confs[key] == value
    assert confs["spark.io.encryption.keySizeBits"] == "256"
    assert confs["spark.kubernetes.driver.podTemplateFile"] == "$PPML_TEMPLATES/driver-pod-template.yaml"
    assert confs["spark.kubernetes.executor.podTemplateFile"] == "$PPML_TEMPLATES/executor-pod-template.yaml"
    assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == "ppml-spark"
    assert confs["spark.sql.shuffle.partitions"] == "400"
    assert json.loads(confs["spark.ppml.keyring"]) == {"kbs": {
        "url": "https://ppml-kbs.ppml.svc:8443", "ca_file": "/etc/ppml/kbs/ca.pem", "attester": "gramine"}}
    assert "spark.authenticate.secret" not in confs  # Spark on Kubernetes generates it per application


def test_key_ring_conf_is_what_the_data_source_reads() -> None:
    from ppml.engines.spark.source import keyring_options

    submission = plan(SubmitOptions(master=MASTER, application="app.py", image="img", tee=Tee.TDX,
                                    kbs_url="https://kbs:8443", kbs_ca_secret="ca:cert.pem"))
    options = keyring_options({"keyring": submission.conf["spark.ppml.keyring"]})
    assert options["kbs"] == {"url": "https://kbs:8443", "ca_file": "/etc/ppml/kbs/ca.pem", "attester": "tsm"}
    volume = next(v for v in submission.templates["driver"]["spec"]["volumes"] if v["name"] == "kbs-ca")
    assert volume["secret"]["items"] == [{"key": "cert.pem", "path": "ca.pem"}]


def test_secure_conf_matches_the_trusted_session() -> None:
    from ppml.deploy import sparkconf
    from ppml.engines.spark import session

    assert sparkconf.REDACTION == session.REDACTION
    for key, value in session.TRUSTED_CONF.items():
        assert {**sparkconf.SECURE_CONF, **sparkconf.DEFAULT_CONF}[key] == value


@pytest.mark.parametrize("conf", [
    "spark.foo.password=x",
    "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net=c2VjcmV0",
    "spark.hadoop.fs.azure.sas.token.provider.type=x",
    "spark.kubernetes.driver.secretKeyRef.DB_PASS=db:password",
    "spark.kubernetes.executor.secrets.spark-secret=/etc/secrets",
    "spark.ssl.keyStorePassword=changeit",
    "spark.hadoop.fs.s3a.access.key=AKIA0000",
    "spark.executorEnv.AZURE_CLIENT_SECRET=x",
    "spark.hadoop.fs.azure.oauth2.client.credential=x",
    "spark.foo=DefaultEndpointsProtocol=https;AccountName=a;AccountKey=bm90IGEga2V5",
    "spark.foo=https://a.blob.core.windows.net/c?sv=2022-11-02&sig=abc",
])
def test_secret_looking_conf_is_refused(conf: str) -> None:
    result = invoke(*BASE, "--conf", conf, "--dry-run", *APP)
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "key broker" in str(result.exception) and "Key Vault CSI" in str(result.exception)
    value = conf.split("=", 1)[1]
    assert len(value) < 4 or value not in str(result.exception)  # the value is not echoed


@pytest.mark.parametrize("conf", [
    "spark.authenticate=false", "spark.network.crypto.enabled=false", "spark.io.encryption.enabled=false",
    "spark.kubernetes.authenticate.driver.oauthTokenFile=/x", "spark.kubernetes.authenticate.driver.clientKeyFile=/k",
    "spark.kubernetes.driver.podTemplateFile=/t.yaml", "spark.kubernetes.executor.volumes.hostPath.d.mount.path=/d",
    "spark.executor.memory=64g", "spark.ppml.keyring={}", "no-equals-sign",
])
def test_weakening_or_bypassing_conf_is_refused(conf: str) -> None:
    result = invoke(*BASE, "--conf", conf, "--dry-run", *APP)
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_sasl_settings_are_not_mistaken_for_sas_tokens() -> None:
    comments, _ = dry_run("--conf", "spark.network.crypto.saslFallback=false")
    assert any("spark.network.crypto.saslFallback=false" in line for line in comments)


def test_command_line_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"PPML_KEYSTORE_PASSPHRASE": "correct horse battery staple", "AZURE_CLIENT_SECRET": "s3cr3t-client",
               "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=topsecretkey==", "_SPARK_AUTH_SECRET": "deadbeef" * 8}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    for tee in Tee:
        submission = plan(SubmitOptions(
            master=MASTER, application="local:///app.py", app_args=("in", "out"), image="img", tee=tee,
            kbs_url="https://kbs:8443", kbs_ca_secret="ca", keyvault_csi="spc", conf={"spark.sql.x": "1"}))
        argv = submission.command("/opt/spark/bin/spark-submit", "/tmp/t")
        text = " ".join(argv) + submission.dry_run("spark-submit", "/tmp/t")
        assert not any(value in text for value in secrets.values())
        assert not SECRET_VALUE.search(text)
        conf_keys = [arg.split("=", 1)[0] for arg in argv if arg.startswith("spark.")]
        assert not [key for key in conf_keys if SECRET_NAME.search(key)]
        assert not [path for path, value in walk(submission.manifests()) if path.endswith("secretKeyRef")]


def test_bigdl_aliases_map_to_ppml_options() -> None:
    result = invoke(*BASE, "--sgx-enabled", "true", "--sgx-driver-jvm-memory", "2g",
                    "--sgx-executor-jvm-memory", "7g", "--dry-run", *APP)
    assert result.exit_code == 0, result.output
    assert "BigDL's spelling" in result.stderr
    assert "--conf spark.driver.memory=2g" in result.stdout
    assert "--conf spark.executor.memory=7g" in result.stdout
    docs = documents(result.stdout)
    # 7g heap + 1G overhead -> an 8G enclave (a power of two, as Gramine needs)
    assert pods(docs)[1]["spec"]["containers"][0]["resources"]["limits"] == {
        "kubernetes.azure.com/sgx_epc_mem_in_MiB": "8192"}


def test_bigdl_alias_contradicting_ours_is_refused() -> None:
    result = invoke(*BASE, "--driver-memory", "4g", "--sgx-driver-jvm-memory", "2g", "--tee", "sgx",
                    "--dry-run", *APP)
    assert isinstance(result.exception, ConfigError)


def test_epc_too_small_for_the_heap_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16G"):
        plan(SubmitOptions(master=MASTER, application="a.py", image="i", tee=Tee.SGX, sgx_epc="4G",
                           executor_memory="8g"))


def test_options_after_the_application_are_its_own() -> None:
    result = invoke(*BASE, "--dry-run", "local:///opt/app.py", "--input", "x", "--tee", "sgx")
    assert result.exit_code == 0, result.output
    assert "#   local:///opt/app.py --input x --tee sgx" in result.stdout
    assert "ppml.io/tee: none" in result.stdout


def test_master_must_be_kubernetes() -> None:
    result = invoke("--master", "yarn", "--image", "i", "--dry-run", "app.py")
    assert isinstance(result.exception, ConfigError) and "k8s://" in str(result.exception)


def test_dry_run_can_write_the_templates(tmp_path: Path) -> None:
    result = invoke(*BASE, "--tee", "coco", "--dry-run", "--templates-dir", str(tmp_path), *APP)
    assert result.exit_code == 0
    written = documents((tmp_path / "executor-pod-template.yaml").read_text())
    assert written == [pods(documents(result.stdout))[1]]
    assert f"{tmp_path}/driver-pod-template.yaml" in result.stdout


def test_print_rbac_is_least_privilege() -> None:
    result = invoke("--print-rbac", "--namespace", "ppml", "--service-account", "spark-sa")
    assert result.exit_code == 0
    docs = documents(result.stdout)
    validate_all(docs)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert all(d["metadata"]["namespace"] == "ppml" for d in docs)
    role = docs[1]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and rule["apiGroups"] == [""]
        assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "patch", "delete", "deletecollection"}
    assert {r for rule in role["rules"] for r in rule["resources"]} == {
        "pods", "services", "configmaps", "persistentvolumeclaims"}
    assert docs[2]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "spark-sa"}
    assert docs[0]["automountServiceAccountToken"] is False


def test_submit_runs_spark_submit_with_the_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spark_home = tmp_path / "spark"
    (spark_home / "bin").mkdir(parents=True)
    script = spark_home / "bin" / "spark-submit"
    record = tmp_path / "argv.txt"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > {record}
for arg in "$@"; do case "$arg" in spark.kubernetes.*.podTemplateFile=*) test -s "${{arg#*=}}" || exit 9;; esac; done
exit 7
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SPARK_HOME", str(spark_home))
    assert find_spark_submit() == script
    result = invoke(*BASE, "--tee", "tdx", *APP)
    assert result.exit_code == 7, result.output  # spark-submit's own exit code, after the templates existed
    argv = record.read_text().splitlines()
    assert argv[:4] == ["--master", MASTER, "--deploy-mode", "cluster"] and argv[-2:] == APP
    template = next(a for a in argv if a.startswith("spark.kubernetes.driver.podTemplateFile="))
    assert not Path(template.split("=", 1)[1]).exists()  # the temporary directory is gone


def test_missing_spark_submit_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="SPARK_HOME"):
        find_spark_submit({"SPARK_HOME": os.devnull})
