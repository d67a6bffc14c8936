"""The Gramine manifest: valid TOML, correct hashes, no host environment, strict and non-debug by default."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
from click.testing import CliRunner

from ppml.cli.gramine import gramine
from ppml.deploy.gramine import GramineManifest, serialize_argv
from ppml.errors import ConfigError
from tests.deploy._k8s import walk

ARGV = ("python3", "-m", "ppml.deploy.launch")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A miniature image: Gramine's LibOS and glibc, Python, a JVM, PySpark's jars and ppml."""
    files = {
        "gramine/libsysdb.so": b"libos", "gramine/runtime/glibc/libc.so.6": b"glibc",
        "usr/bin/python3.11": b"\x7fELF python", "usr/lib/python3.11/os.py": b"# os",
        "opt/java/lib/libjvm.so": b"jvm", "opt/java/lib/modules": b"modules",
        "site/pyspark/jars/spark-core_2.13-4.0.1.jar": b"PK jar", "site/ppml/__init__.py": b'"""ppml"""',
        "site/ppml/deploy/launch.py": b"# launcher",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "site/ppml/alias.py").symlink_to(tmp_path / "site/ppml/__init__.py")
    (tmp_path / "site/dangling").symlink_to(tmp_path / "nowhere")
    return {"root": tmp_path, "libos": tmp_path / "gramine/libsysdb.so", "runtime": tmp_path / "gramine/runtime/glibc",
            "python": tmp_path / "usr/bin/python3.11", "argv": tmp_path / "ppml/argv",
            "trusted": [tmp_path / "usr/lib/python3.11", tmp_path / "opt/java", tmp_path / "site"]}


def spec(tree: dict[str, Any], **overrides: Any) -> GramineManifest:  # noqa: ANN401
    fields: dict[str, Any] = dict(entrypoint=tree["python"], argv=ARGV, argv_file=tree["argv"],
                                  trusted=tree["trusted"], libos=tree["libos"], runtime_dir=tree["runtime"],
                                  env={"JAVA_HOME": "/opt/java"}, enclave_size="8G", max_threads=128,
                                  isvprodid=3, isvsvn=7)
    fields.update(overrides)
    manifest = GramineManifest(**fields)
    manifest.write_argv()
    return manifest


def render(tree: dict[str, Any], **overrides: Any) -> dict[str, Any]:  # noqa: ANN401
    return tomllib.loads(spec(tree, **overrides).render())


def test_manifest_parses_and_has_the_secure_settings(tree: dict[str, Any]) -> None:
    manifest = render(tree)
    sgx = manifest["sgx"]
    assert sgx["debug"] is False and sgx["edmm_enable"] is False
    assert sgx["remote_attestation"] == "dcap" and sgx["file_check_policy"] == "strict"
    assert sgx["enclave_size"] == "8G" and sgx["max_threads"] == 128
    assert sgx["isvprodid"] == 3 and sgx["isvsvn"] == 7
    assert "allowed_files" not in sgx
    assert manifest["libos"]["entrypoint"] == str(tree["python"])
    assert manifest["loader"]["entrypoint"]["uri"] == f"file:{tree['libos']}"
    assert manifest["loader"]["log_level"] == "error"
    assert {"type": "tmpfs", "path": "/tmp"} in manifest["fs"]["mounts"]
    assert {"path": "/lib", "uri": f"file:{tree['runtime']}"} in manifest["fs"]["mounts"]


def test_no_host_environment_and_no_insecure_options(tree: dict[str, Any]) -> None:
    manifest = render(tree)
    assert not [path for path, _ in walk(manifest) if "insecure" in path]
    assert "use_host_env" not in str(manifest)
    env = manifest["loader"]["env"]
    assert all(isinstance(value, str) for value in env.values())  # fixed values; no { passthrough = true }
    assert env["JAVA_HOME"] == "/opt/java" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "env_src_file" not in manifest["loader"]


def test_arguments_come_from_a_measured_file(tree: dict[str, Any]) -> None:
    manifest = render(tree)
    assert manifest["loader"]["argv_src_file"] == f"file:{tree['argv']}"
    assert "argv" not in manifest["loader"]
    assert tree["argv"].read_bytes() == b"python3\0-m\0ppml.deploy.launch\0"
    trusted = {entry["uri"]: entry["sha256"] for entry in manifest["sgx"]["trusted_files"]}
    assert trusted[f"file:{tree['argv']}"] == hashlib.sha256(tree["argv"].read_bytes()).hexdigest()


def test_every_trusted_file_is_listed_with_its_right_hash(tree: dict[str, Any]) -> None:
    manifest = render(tree)
    trusted = {entry["uri"].removeprefix("file:"): entry["sha256"] for entry in manifest["sgx"]["trusted_files"]}
    root: Path = tree["root"]
    expected = {p for p in root.rglob("*") if p.is_file() and p != root / "ppml/argv"} | {tree["argv"]}
    assert set(trusted) == {str(p) for p in expected}
    for path, digest in trusted.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert str(root / "site/dangling") not in trusted  # dangling links are skipped
    assert trusted[str(root / "site/ppml/alias.py")] == trusted[str(root / "site/ppml/__init__.py")]


def test_changing_a_measured_file_changes_the_manifest(tree: dict[str, Any]) -> None:
    before = spec(tree).render()
    jar = tree["root"] / "site/pyspark/jars/spark-core_2.13-4.0.1.jar"
    jar.write_bytes(b"PK jar with a backdoor")
    after = spec(tree).render()
    assert before != after
    changed = set(after.splitlines()) - set(before.splitlines())
    assert len(changed) == 1 and str(jar) in changed.pop()
    assert spec(tree).render() == after  # and rendering is deterministic


def test_changing_the_arguments_changes_the_manifest(tree: dict[str, Any]) -> None:
    assert spec(tree).render() != spec(tree, argv=("python3", "-c", "print(1)")).render()


def test_debug_must_be_asked_for_and_warns(tree: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert render(tree, debug=True)["sgx"]["debug"] is True
    assert "sgx.debug = true" in caplog.text


def test_untrusted_inputs_are_explicit(tree: dict[str, Any]) -> None:
    manifest = render(tree, allowed_files=("/run/ppml/launch.json",))
    assert manifest["sgx"]["allowed_files"] == ["file:/run/ppml/launch.json"]


@pytest.mark.parametrize("overrides, message", [
    ({"enclave_size": "12G"}, "power of two"),
    ({"max_threads": 2}, "at least 4"),
    ({"env": {"DB_PASSWORD": "x"}}, "looks like a secret"),
    ({"env": {"BAD NAME": "x"}}, "not valid"),
    ({"trusted": [Path("/tmp")]}, "cannot be a trusted root"),
])
def test_bad_settings_are_refused(tree: dict[str, Any], overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec(tree, **overrides).render()


def test_argv_serialization_refuses_nul() -> None:
    assert serialize_argv(["a", "b c"]) == b"a\0b c\0"
    with pytest.raises(ConfigError):
        serialize_argv(["a\0b"])
    with pytest.raises(ConfigError):
        serialize_argv([])


def test_cli_writes_the_manifest_and_argv(tree: dict[str, Any], tmp_path: Path) -> None:
    output = tmp_path / "out" / "ppml.manifest"
    output.parent.mkdir()
    args = ["manifest", "-o", str(output), "--argv-file", str(tree["argv"]), "--entrypoint", str(tree["python"]),
            "--libos", str(tree["libos"]), "--runtime-dir", str(tree["runtime"]), "--enclave-size", "4G",
            "--env", "SPARK_HOME=/opt/spark", "--allowed-file", "/run/ppml/launch.json",
            *[arg for root in tree["trusted"] for arg in ("--trusted", str(root))], "--", *ARGV]
    result = CliRunner().invoke(gramine, args)
    assert result.exit_code == 0, result.output
    manifest = tomllib.loads(output.read_text())
    assert manifest["sgx"]["enclave_size"] == "4G" and manifest["loader"]["env"]["SPARK_HOME"] == "/opt/spark"
    assert tree["argv"].read_bytes() == serialize_argv(ARGV)
    assert "trusted files" in result.stderr


def test_add_trusted_measures_extra_files_on_top_of_the_roots(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ppml.cli.gramine import gramine

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tpch.py").write_text("print('job')\n")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "x.so").write_bytes(b"\x7fELF")
    (lib / "gramine" / "runtime").mkdir(parents=True)
    (lib / "gramine" / "libsysdb.so").write_bytes(b"libos")
    out = tmp_path / "m.manifest"
    result = CliRunner().invoke(gramine, ["manifest", "-o", str(out), "--argv-file", str(tmp_path / "argv"),
                                          "--entrypoint", sys.executable, "--trusted", str(lib),
                                          "--add-trusted", str(jobs), "--libos", str(lib / "gramine" / "libsysdb.so"),
                                          "--runtime-dir", str(lib / "gramine" / "runtime"),
                                          "--", "python3", "-c", "pass"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert str(jobs / "tpch.py") in text and str(lib / "x.so") in text
