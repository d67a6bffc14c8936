"""``ppml submit``: spark-submit for Kubernetes with hardened pod templates, TEE placement and no secrets.

:func:`plan` turns :class:`SubmitOptions` into a :class:`Submission` (Spark settings, two pod templates, RBAC),
which renders the exact spark-submit command. :func:`run` writes the templates to a private temporary directory
and runs spark-submit (``$SPARK_HOME/bin`` or PySpark's bundled one). Nothing here reads a secret, so nothing
here can leak one: the command line is built only from options and names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml.deploy._units import format_mib, next_power_of_two, parse_mib
from ppml.deploy._yaml import dump_all
from ppml.deploy.pods import CONTAINER_NAMES, KBS_CA_FILE, PodTemplate
from ppml.deploy.rbac import rbac_manifests
from ppml.deploy.sparkconf import DEFAULT_CONF, SECURE_CONF, check_user_conf
from ppml.deploy.tee import DEFAULT_ATTESTER, Tee, placement
from ppml.errors import ConfigError

TEMPLATE_FILES = {"driver": "driver-pod-template.yaml", "executor": "executor-pod-template.yaml"}
KEYRING_CONF = "spark.ppml.keyring"  # the ``keyring`` data source option, as JSON; holds no secret
_ENCLAVE_OVERHEAD_MIB = 1024  # Gramine, the JVM's non-heap memory and Python workers, beyond the heap


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    """What ``ppml submit`` was asked to run, before anything is rendered."""

    master: str
    application: str
    image: str
    app_args: Sequence[str] = ()
    deploy_mode: str = "cluster"
    name: str = "ppml"
    tee: Tee = Tee.NONE
    namespace: str = "default"
    service_account: str = "ppml-spark"
    driver_memory: str = "2g"
    executor_memory: str = "4g"
    executor_instances: int = 2
    executor_cores: int = 2
    sgx_epc: str | None = None
    sgx_plugin: str = "aks"
    pccs_url: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    kbs_url: str | None = None
    kbs_ca_secret: str | None = None  # NAME or NAME:KEY (default key ca.pem)
    attester: str | None = None  # default: by TEE
    keyvault_csi: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    """A rendered job: Spark settings, pod templates and RBAC; ``warnings`` are for the user."""

    options: SubmitOptions
    conf: Mapping[str, str]
    templates: Mapping[str, dict[str, Any]]
    rbac: Sequence[dict[str, Any]]
    warnings: Sequence[str] = ()

    def command(self, spark_submit: str, template_dir: str) -> list[str]:
        """The spark-submit argv, with the pod templates at ``template_dir``."""
        return [arg for group in self._groups(spark_submit, template_dir) for arg in group]

    def _groups(self, spark_submit: str, template_dir: str) -> list[list[str]]:
        conf = {**self.conf, **{f"spark.kubernetes.{role}.podTemplateFile": f"{template_dir}/{file}"
                                for role, file in TEMPLATE_FILES.items()}}
        return [[spark_submit], ["--master", self.options.master], ["--deploy-mode", self.options.deploy_mode],
                ["--name", self.options.name], *(["--conf", f"{key}={conf[key]}"] for key in sorted(conf)),
                [self.options.application, *self.options.app_args]]

    def manifests(self) -> list[dict[str, Any]]:
        """Both pod templates, then the RBAC objects."""
        return [self.templates["driver"], self.templates["executor"], *self.rbac]

    def write_templates(self, directory: Path) -> None:
        """Write the two pod templates where :meth:`command` says they are."""
        for role, file in TEMPLATE_FILES.items():
            (directory / file).write_text(dump_all([self.templates[role]]), encoding="utf-8")

    def dry_run(self, spark_submit: str, template_dir: str) -> str:
        """The command (as YAML comments) and every manifest: one multi-document YAML stream."""
        lines = ["# spark-submit command (nothing was run):"]
        groups = [shlex.join(group) for group in self._groups(spark_submit, template_dir)]
        lines += [f"#   {group} \\" for group in groups[:-1]] + [f"#   {groups[-1]}"]
        lines += [f"# warning: {warning}" for warning in self.warnings]
        lines.append(f"# {template_dir}/{TEMPLATE_FILES['driver']}, {TEMPLATE_FILES['executor']}, then RBAC:")
        return "\n".join(lines) + "\n" + dump_all(self.manifests())


def epc_mib(options: SubmitOptions) -> int:
    """The enclave (EPC) size: ``--sgx-epc``, or the next power of two above the largest JVM heap + overhead."""
    heaps = [parse_mib(options.executor_memory, what="--executor-memory")]
    if options.deploy_mode == "cluster":
        heaps.append(parse_mib(options.driver_memory, what="--driver-memory"))
    need = max(heaps) + _ENCLAVE_OVERHEAD_MIB // 2
    if options.sgx_epc is None:
        return next_power_of_two(max(heaps) + _ENCLAVE_OVERHEAD_MIB)
    epc = parse_mib(options.sgx_epc, what="--sgx-epc")
    if epc < need:
        raise ConfigError(f"--sgx-epc {options.sgx_epc} cannot hold a {format_mib(max(heaps))} JVM heap in the "
                          f"enclave; use at least {format_mib(next_power_of_two(need))}")
    return epc


def plan(options: SubmitOptions) -> Submission:
    """Check the options and render everything the job needs."""
    if not options.master.startswith("k8s://"):
        raise ConfigError(f"--master {options.master!r}: ppml submit runs on Kubernetes only (k8s://https://HOST)")
    if options.deploy_mode not in ("client", "cluster"):
        raise ConfigError(f"--deploy-mode {options.deploy_mode!r}: choose client or cluster")
    if options.executor_instances < 1 or options.executor_cores < 1:
        raise ConfigError("--executor-instances and --executor-cores must be at least 1")
    warnings: list[str] = []
    epc = epc_mib(options) if options.tee is Tee.SGX else None
    where = placement(options.tee, sgx_plugin=options.sgx_plugin, epc_mib=epc, pccs_url=options.pccs_url,
                      node_selector=options.node_selector)
    attester = options.attester or DEFAULT_ATTESTER[options.tee]
    env = {**where.env, "PYSPARK_PYTHON": "python3"}
    ca_name, _, ca_key = (options.kbs_ca_secret or "").partition(":")
    keyring: dict[str, Any] = {}
    if options.kbs_url:
        keyring = {"url": options.kbs_url, "attester": attester}
        env.update(PPML_KBS_URL=options.kbs_url, PPML_ATTESTER=attester)
        if ca_name:
            keyring["ca_file"] = env["PPML_KBS_CA_FILE"] = KBS_CA_FILE
    if options.tee is Tee.NONE:
        warnings.append("--tee none: pods run outside any TEE; the key broker releases no key to them unless a "
                        "policy accepts them")
    if options.deploy_mode == "client":
        warnings.append("--deploy-mode client: the driver runs on this machine, outside the TEE, and sees query "
                        "plans and collected results")
    templates = {role: PodTemplate(role=role, image=options.image, placement=where,
                                   service_account=options.service_account, env=env,
                                   kbs_ca_secret=ca_name or None, kbs_ca_key=ca_key or "ca.pem",
                                   keyvault_csi=options.keyvault_csi).render()
                 for role in ("driver", "executor")}
    managed = {
        "spark.kubernetes.namespace": options.namespace,
        "spark.kubernetes.container.image": options.image,
        "spark.kubernetes.authenticate.driver.serviceAccountName": options.service_account,
        "spark.kubernetes.driver.podTemplateContainerName": CONTAINER_NAMES["driver"],
        "spark.kubernetes.executor.podTemplateContainerName": CONTAINER_NAMES["executor"],
        "spark.driver.memory": options.driver_memory,
        "spark.executor.memory": options.executor_memory,
        "spark.executor.instances": str(options.executor_instances),
        "spark.executor.cores": str(options.executor_cores),
        **({KEYRING_CONF: json.dumps({"kbs": keyring}, sort_keys=True, separators=(",", ":"))} if keyring else {}),
    }
    check_user_conf(options.conf, managed=[*managed, KEYRING_CONF])
    conf = {**DEFAULT_CONF, **options.conf, **managed, **SECURE_CONF}
    return Submission(options=options, conf=conf, templates=templates,
                      rbac=rbac_manifests(options.namespace, options.service_account), warnings=warnings)


def find_spark_submit(environ: Mapping[str, str] | None = None) -> Path:
    """``$SPARK_HOME/bin/spark-submit``, else the one bundled with PySpark; ``ConfigError`` if neither exists."""
    environ = os.environ if environ is None else environ
    candidates = []
    if environ.get("SPARK_HOME"):
        candidates.append(Path(environ["SPARK_HOME"]) / "bin" / "spark-submit")
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(location) / "bin" / "spark-submit" for location in spec.submodule_search_locations)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError("spark-submit not found: set SPARK_HOME to a Spark 3.4+ distribution, or pip install pyspark")


def run(submission: Submission, *, spark_submit: Path | None = None) -> int:
    """Write the pod templates to a private temporary directory, run spark-submit, return its exit code."""
    executable = spark_submit or find_spark_submit()
    with tempfile.TemporaryDirectory(prefix="ppml-submit-") as directory:
        submission.write_templates(Path(directory))
        return subprocess.call(submission.command(str(executable), directory))
