"""The enclave launcher: pod parameters from the host are validated before they reach the JVM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppml.deploy import launch
from ppml.deploy.sparkconf import SECURE_CONF
from ppml.errors import ConfigError

ENCLAVE_ENV = {"JAVA_HOME": "/opt/java/openjdk", "SPARK_HOME": "/opt/spark", "PATH": "/usr/bin"}
POD_ENV = {
    "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@query-abc-driver-svc.ppml.svc:7078",
    "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "4", "SPARK_APPLICATION_ID": "spark-" + "0123abcd" * 4,
    "SPARK_EXECUTOR_POD_IP": "10.244.1.7", "SPARK_RESOURCE_PROFILE_ID": "0",
    "SPARK_EXECUTOR_POD_NAME": "query-abc-exec-3", "SPARK_EXECUTOR_MEMORY": "8g",
    "_SPARK_AUTH_SECRET": "9f" * 32,
}
DRIVER_ARGS = ["--properties-file", launch.PROPERTIES_FILE, "--class", "org.apache.spark.deploy.PythonRunner",
               "local:///opt/ppml/jobs/query.py", "abfss://x"]


def test_executor_command_from_valid_parameters() -> None:
    command, env = launch.command(launch.collect("executor", [], POD_ENV), ENCLAVE_ENV)
    assert command[:5] == ["/opt/java/openjdk/bin/java", "-Xms8g", "-Xmx8g", "-cp", "/opt/spark/jars/*"]
    assert command[command.index("--driver-url") + 1] == POD_ENV["SPARK_DRIVER_URL"]
    assert command[command.index("--podName") + 1] == "query-abc-exec-3"
    assert env["_SPARK_AUTH_SECRET"] == POD_ENV["_SPARK_AUTH_SECRET"] and env["JAVA_HOME"] == "/opt/java/openjdk"
    assert POD_ENV["_SPARK_AUTH_SECRET"] not in " ".join(command)


@pytest.mark.parametrize("name, value", [
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@host:7078 -Djava.security.manager=allow"),
    ("SPARK_DRIVER_URL", "http://evil:80"),
    ("SPARK_EXECUTOR_ID", "1; rm -rf /"),
    ("SPARK_EXECUTOR_MEMORY", "8g -XX:+UnlockDiagnosticVMOptions"),
    ("SPARK_EXECUTOR_POD_NAME", "../../etc"),
    ("SPARK_EXECUTOR_CORES", ""),
    ("SPARK_EXECUTOR_ID", "1\n"),
    ("_SPARK_AUTH_SECRET", "short"),
])
def test_malformed_executor_parameters_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        launch.command(launch.collect("executor", [], {**POD_ENV, name: value}), ENCLAVE_ENV)


def test_driver_reasserts_secure_settings_after_the_host_supplied_ones() -> None:
    document = launch.collect("driver", DRIVER_ARGS, {"SPARK_DRIVER_BIND_ADDRESS": "10.244.0.5"})
    command, _ = launch.command(document, ENCLAVE_ENV)
    assert command[3:6] == ["org.apache.spark.deploy.SparkSubmit", "--deploy-mode", "client"]
    app = command.index("local:///opt/ppml/jobs/query.py")
    for key, value in SECURE_CONF.items():
        assert command.index(f"{key}={value}") < app  # command-line settings override the properties file
    assert command[app:] == DRIVER_ARGS[4:]


@pytest.mark.parametrize("args", [
    ["--properties-file", "/tmp/evil.properties", "--class", "C", "app.py"],
    ["--properties-file", launch.PROPERTIES_FILE, "--class", "C; id", "app.py"],
    ["--properties-file", launch.PROPERTIES_FILE, "--class", "C"],
])
def test_malformed_driver_arguments_are_refused(args: list[str]) -> None:
    with pytest.raises(ConfigError):
        launch.command(launch.collect("driver", args, {"SPARK_DRIVER_BIND_ADDRESS": "10.0.0.1"}), ENCLAVE_ENV)


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigError):
        launch.collect("shell", [], {})
    with pytest.raises(ConfigError):
        launch.command({"role": "shell"}, ENCLAVE_ENV)


def test_write_mode_keeps_the_input_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "INPUT", tmp_path / "run" / "launch.json")
    for name, value in POD_ENV.items():
        monkeypatch.setenv(name, value)
    launch.main(["--write", "executor"])
    assert (launch.INPUT.stat().st_mode & 0o777) == 0o600
    assert json.loads(launch.INPUT.read_text())["executor_id"] == "3"
