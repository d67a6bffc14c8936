"""``ppml submit``: run a Spark job on Kubernetes in a TEE, with hardened pods and no secrets."""

from __future__ import annotations

import click

from ppml.cli._common import console
from ppml.errors import ConfigError

_BIGDL_NOTE = ("note: {flag} is BigDL's spelling; ppml runs the whole JVM in the enclave, so it means {ours} "
               "(the EPC is sized from it unless --sgx-epc is given)")


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {value!r}: expected KEY=VALUE")
        result[key] = item
    return result


def _alias(ours: str | None, bigdl: str | None, flag: str, ours_flag: str) -> str | None:
    """Resolve a BigDL spelling to ours, refusing two different values."""
    if bigdl is None:
        return ours
    console.print(_BIGDL_NOTE.format(flag=flag, ours=ours_flag), soft_wrap=True)
    if ours is not None and ours != bigdl:
        raise ConfigError(f"{flag} {bigdl} contradicts {ours_flag} {ours}")
    return bigdl


@click.command(context_settings={"allow_interspersed_args": False})  # options after APPLICATION are its own
@click.option("--master", default=None, help="Kubernetes API server: k8s://https://HOST:PORT.")
@click.option("--deploy-mode", type=click.Choice(["client", "cluster"]), default="cluster", show_default=True,
              help="cluster runs the driver in a pod (in the TEE); client runs it here.")
@click.option("--name", default="ppml", show_default=True, help="Application name.")
@click.option("--tee", type=click.Choice(["sgx", "tdx", "snp", "coco", "none"]), default=None,
              help="TEE of the pods: SGX enclaves (Gramine), TDX or SEV-SNP confidential VMs, confidential "
                   "containers (kata-cc-isolation), or none [default: none].")
@click.option("--image", default=None, help="Workload image (deploy/docker/Dockerfile), ideally by digest.")
@click.option("--namespace", default="default", show_default=True, help="Namespace of the pods.")
@click.option("--service-account", default="ppml-spark", show_default=True, help="The driver's service account.")
@click.option("--driver-memory", default=None, help="Driver JVM heap, e.g. 4g [default: 2g].")
@click.option("--executor-memory", default=None, help="Executor JVM heap, e.g. 8g [default: 4g].")
@click.option("--executor-instances", type=int, default=2, show_default=True, help="Number of executors.")
@click.option("--executor-cores", type=int, default=2, show_default=True, help="Cores per executor.")
@click.option("--sgx-epc", default=None, help="Enclave (EPC) size per pod, e.g. 16G; must match the image's "
              "Gramine sgx.enclave_size [default: next power of two above heap + 1G].")
@click.option("--sgx-plugin", type=click.Choice(["aks", "intel"]), default="aks", show_default=True,
              help="SGX device plugin: AKS confcom (sgx_epc_mem_in_MiB) or Intel (sgx.intel.com/*).")
@click.option("--pccs-url", default=None, help="Intel PCCS for DCAP collateral (SGX; AKS uses az-dcap-client).")
@click.option("--node-selector", "node_selectors", multiple=True, metavar="KEY=VALUE",
              help="Extra node selector (repeatable); overrides the TEE's default label.")
@click.option("--kbs-url", default=None, envvar="PPML_KBS_URL", show_envvar=True,
              help="Key broker URL that pods attest to for kbs: keys.")
@click.option("--kbs-ca-secret", default=None, metavar="NAME[:KEY]",
              help="Secret holding the broker's CA certificate (key ca.pem), mounted read-only.")
@click.option("--attester", type=click.Choice(["auto", "gramine", "tsm", "simulated"]), default=None,
              help="How pods attest [default: gramine for sgx, tsm for tdx/snp, auto otherwise].")
@click.option("--keyvault-csi", default=None, metavar="SECRETPROVIDERCLASS",
              help="Mount this Azure Key Vault CSI SecretProviderClass read-only at /mnt/secrets-store.")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE",
              help="Extra Spark setting (repeatable); credentials are refused.")
@click.option("--dry-run", is_flag=True, help="Print the spark-submit command and every manifest; run nothing.")
@click.option("--templates-dir", type=click.Path(file_okay=False), default=None,
              help="With --dry-run: also write the pod templates here, so the printed command runs as is.")
@click.option("--print-rbac", is_flag=True, help="Print the ServiceAccount, Role and RoleBinding, and exit.")
@click.option("--sgx-enabled", type=click.Choice(["true", "false"]), default=None,
              help="BigDL alias: true means --tee sgx.")
@click.option("--sgx-driver-jvm-memory", default=None, help="BigDL alias of --driver-memory (with --tee sgx).")
@click.option("--sgx-executor-jvm-memory", default=None, help="BigDL alias of --executor-memory (with --tee sgx).")
@click.argument("application", required=False)
@click.argument("app_args", nargs=-1, type=click.UNPROCESSED)
def submit(master: str | None, deploy_mode: str, name: str, tee: str | None, image: str | None, namespace: str,
           service_account: str, driver_memory: str | None, executor_memory: str | None, executor_instances: int,
           executor_cores: int, sgx_epc: str | None, sgx_plugin: str, pccs_url: str | None,
           node_selectors: tuple[str, ...], kbs_url: str | None, kbs_ca_secret: str | None, attester: str | None,
           keyvault_csi: str | None, confs: tuple[str, ...], dry_run: bool, templates_dir: str | None,
           print_rbac: bool, sgx_enabled: str | None, sgx_driver_jvm_memory: str | None,
           sgx_executor_jvm_memory: str | None, application: str | None, app_args: tuple[str, ...]) -> None:
    """Submit APPLICATION (local:///path/in/image.py, or a jar) to Spark on Kubernetes, in a TEE.

    Pods are never privileged, mount no host path and no kubeconfig, and get keys only from the key broker
    (after attestation) or the Azure Key Vault CSI driver.

    \b
    Example:
      ppml submit --master k8s://https://aks.example:443 --tee sgx --sgx-epc 16G \\
        --image ppmlacr.azurecr.io/ppml@sha256:... --namespace ppml \\
        --kbs-url https://ppml-kbs.ppml.svc:8443 --kbs-ca-secret ppml-kbs-ca --dry-run \\
        local:///opt/ppml/jobs/query.py
    """
    from pathlib import Path

    from ppml.deploy._yaml import dump_all
    from ppml.deploy.rbac import rbac_manifests
    from ppml.deploy.sparkconf import parse_conf
    from ppml.deploy.submit import SubmitOptions, find_spark_submit, plan, run
    from ppml.deploy.tee import Tee

    if print_rbac:
        click.echo(dump_all(rbac_manifests(namespace, service_account)), nl=False)
        return
    if sgx_enabled is not None:
        tee = _alias(tee, "sgx" if sgx_enabled == "true" else "none", "--sgx-enabled", "--tee")
    if sgx_driver_jvm_memory or sgx_executor_jvm_memory:
        driver_memory = _alias(driver_memory, sgx_driver_jvm_memory, "--sgx-driver-jvm-memory", "--driver-memory")
        executor_memory = _alias(executor_memory, sgx_executor_jvm_memory, "--sgx-executor-jvm-memory",
                                 "--executor-memory")
    if not master or not application or not image:
        raise ConfigError("ppml submit needs --master, --image and an APPLICATION (or --print-rbac)")
    submission = plan(SubmitOptions(
        master=master, application=application, app_args=app_args, image=image, deploy_mode=deploy_mode,
        name=name, tee=Tee(tee or "none"), namespace=namespace, service_account=service_account,
        driver_memory=driver_memory or "2g", executor_memory=executor_memory or "4g",
        executor_instances=executor_instances, executor_cores=executor_cores, sgx_epc=sgx_epc,
        sgx_plugin=sgx_plugin, pccs_url=pccs_url, node_selector=_pairs(node_selectors, "--node-selector"),
        kbs_url=kbs_url, kbs_ca_secret=kbs_ca_secret, attester=attester, keyvault_csi=keyvault_csi,
        conf=parse_conf(confs)))
    if dry_run:
        try:
            spark_submit = str(find_spark_submit())
        except ConfigError:
            spark_submit = "spark-submit"
        if templates_dir:
            Path(templates_dir).mkdir(parents=True, exist_ok=True)
            submission.write_templates(Path(templates_dir))
        click.echo(submission.dry_run(spark_submit, templates_dir or "$PPML_TEMPLATES"), nl=False)
        return
    for warning in submission.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    raise SystemExit(run(submission))
