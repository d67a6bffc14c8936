"""The enclave's entry program: start a Spark executor or driver from validated, untrusted pod parameters.

A Gramine manifest fixes argv and the environment, but each Spark pod gets its own driver URL, executor id,
pod IP and RPC secret from Kubernetes. The image's entrypoint (outside the enclave) writes them to a JSON file
(``--write``); this program, measured into MRENCLAVE, reads that file inside the enclave, accepts each value
only if it matches a strict pattern, and execs the JVM with the Spark security settings re-asserted after
anything the host supplied. A host that lies can point an executor at the wrong driver or deny service, but
cannot change what code runs or switch off encryption.

::

    python -m ppml.deploy.launch --write executor|driver [DRIVER ARGS...]   # outside: env -> /run/ppml/launch.json
    python -m ppml.deploy.launch                                         # inside: validate, exec java
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ppml.deploy.sparkconf import SECURE_CONF
from ppml.errors import ConfigError

INPUT = Path("/run/ppml/launch.json")
PROPERTIES_FILE = "/opt/spark/conf/spark.properties"  # where Spark on Kubernetes mounts the driver's settings
_HOST = r"[0-9A-Za-z.:\-\[\]]{1,253}"
EXECUTOR_FIELDS: Mapping[str, tuple[str, re.Pattern[str]]] = {
    "driver_url": ("SPARK_DRIVER_URL", re.compile(rf"^spark://CoarseGrainedScheduler@{_HOST}:\d{{1,5}}$")),
    "executor_id": ("SPARK_EXECUTOR_ID", re.compile(r"^\d{1,9}$")),
    "cores": ("SPARK_EXECUTOR_CORES", re.compile(r"^\d{1,4}$")),
    "app_id": ("SPARK_APPLICATION_ID", re.compile(r"^spark-[0-9a-z]{1,64}$")),
    "hostname": ("SPARK_EXECUTOR_POD_IP", re.compile(rf"^{_HOST}$")),
    "resource_profile_id": ("SPARK_RESOURCE_PROFILE_ID", re.compile(r"^\d{1,9}$")),
    "pod_name": ("SPARK_EXECUTOR_POD_NAME", re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")),
    "memory": ("SPARK_EXECUTOR_MEMORY", re.compile(r"^\d{1,7}[kmgtKMGT]?$")),
}
_AUTH = ("_SPARK_AUTH_SECRET", re.compile(r"^[0-9A-Za-z+/=_\-]{16,512}$"))
_BIND = ("SPARK_DRIVER_BIND_ADDRESS", re.compile(rf"^{_HOST}$"))
_CLASS = re.compile(r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$")


def collect(role: str, args: Sequence[str], environ: Mapping[str, str]) -> dict[str, object]:
    """Outside the enclave: the pod's parameters, as Spark passed them (unvalidated)."""
    if role == "executor":
        document: dict[str, object] = {key: environ.get(env, "") for key, (env, _) in EXECUTOR_FIELDS.items()}
    elif role == "driver":
        document = {"args": list(args), "bind_address": environ.get(_BIND[0], "")}
    else:
        raise ConfigError(f"unknown role {role!r}: expected driver or executor")
    document["role"] = role
    document["auth_secret"] = environ.get(_AUTH[0], "")
    return document


def _valid(value: object, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"launch input {name} is missing or malformed")
    return value


def command(document: Mapping[str, object], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Inside the enclave: the validated JVM command and its environment (the enclave's own plus Spark's)."""
    java = f"{environ['JAVA_HOME']}/bin/java"
    classpath = f"{environ['SPARK_HOME']}/jars/*"
    env = dict(environ)
    if document.get("auth_secret"):
        env[_AUTH[0]] = _valid(document["auth_secret"], _AUTH[1], "auth_secret")
    secure = [arg for key, value in SECURE_CONF.items() for arg in ("--conf", f"{key}={value}")]
    if document.get("role") == "executor":
        values = {key: _valid(document.get(key), pattern, key) for key, (_, pattern) in EXECUTOR_FIELDS.items()}
        return [java, f"-Xms{values['memory']}", f"-Xmx{values['memory']}", "-cp", classpath,
                "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
                "--driver-url", values["driver_url"], "--executor-id", values["executor_id"],
                "--cores", values["cores"], "--app-id", values["app_id"], "--hostname", values["hostname"],
                "--resourceProfileId", values["resource_profile_id"], "--podName", values["pod_name"]], env
    if document.get("role") == "driver":
        args = document.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError("launch input args must be a list of strings")
        if len(args) < 5 or args[:3] != ["--properties-file", PROPERTIES_FILE, "--class"] \
                or not _CLASS.fullmatch(args[3]):
            raise ConfigError("launch input args must be: --properties-file <spark.properties> --class C APP ...")
        bind = _valid(document.get("bind_address"), _BIND[1], "bind_address")
        return [java, "-cp", classpath, "org.apache.spark.deploy.SparkSubmit", "--deploy-mode", "client",
                *args[:4], "--conf", f"spark.driver.bindAddress={bind}", *secure, *args[4:]], env
    raise ConfigError("launch input role must be driver or executor")


def main(argv: Sequence[str] | None = None) -> None:
    """``--write ROLE [ARGS]`` outside the enclave; no argument inside it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--write"] and len(argv) >= 2:
        INPUT.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(INPUT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(collect(argv[1], argv[2:], os.environ), handle)
        return
    try:
        document = json.loads(INPUT.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(f"ppml launch: cannot read {INPUT}: {error}") from None
    try:
        cmd, env = command(document, os.environ)
    except ConfigError as error:
        raise SystemExit(f"ppml launch: {error}") from None
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
