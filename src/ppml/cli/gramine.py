"""``ppml gramine manifest``: render a Gramine manifest that measures Python, the JVM, Spark and ppml."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ppml.cli._common import console
from ppml.errors import ConfigError


@click.group()
def gramine() -> None:
    """Gramine (SGX) manifests for the workload image."""


@gramine.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="Manifest file to write.")
@click.option("--argv-file", type=click.Path(dir_okay=False), default="/opt/ppml/gramine/argv", show_default=True,
              help="Where to write the measured argument file (loader.argv_src_file).")
@click.option("--entrypoint", type=click.Path(dir_okay=False), default=None,
              help="Executable the enclave starts [default: ARGV[0] on PATH, resolved].")
@click.option("--trusted", "trusted", multiple=True, type=click.Path(exists=True),
              help="File or directory to measure (repeatable) [default: Python, site-packages, $JAVA_HOME, "
                   "system libraries].")
@click.option("--add-trusted", "add_trusted", multiple=True, type=click.Path(exists=True),
              help="File or directory to measure in addition to --trusted or the defaults (repeatable), e.g. the "
                   "job files.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths matching GLOB (repeatable).")
@click.option("--env", "envs", multiple=True, metavar="NAME=VALUE",
              help="Fixed environment variable inside the enclave (repeatable); host values never pass.")
@click.option("--enclave-size", default="16G", show_default=True, help="sgx.enclave_size (a power of two).")
@click.option("--max-threads", type=int, default=256, show_default=True, help="sgx.max_threads.")
@click.option("--isvprodid", type=int, default=0, show_default=True, help="sgx.isvprodid.")
@click.option("--isvsvn", type=int, default=0, show_default=True, help="sgx.isvsvn (raise it with each release).")
@click.option("--allowed-file", "allowed", multiple=True, metavar="PATH",
              help="Untrusted input the measured program validates (repeatable; not measured).")
@click.option("--start-dir", default=None, help="Working directory inside the enclave (fs.start_dir).")
@click.option("--libos", type=click.Path(dir_okay=False), default=None, help="Gramine's libsysdb.so.")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None, help="Gramine's glibc runtime dir.")
@click.option("--debug", is_flag=True, help="Debuggable enclave (sgx.debug = true): development only, warns.")
@click.argument("argv", nargs=-1, required=True)
def manifest(output: str, argv_file: str, entrypoint: str | None, trusted: tuple[str, ...],
             add_trusted: tuple[str, ...], exclude: tuple[str, ...], envs: tuple[str, ...], enclave_size: str,
             max_threads: int, isvprodid: int, isvsvn: int, allowed: tuple[str, ...], start_dir: str | None,
             libos: str | None, runtime_dir: str | None, debug: bool, argv: tuple[str, ...]) -> None:
    """Render a manifest that runs ARGV in an enclave, measuring every file it may load.

    \b
    Example (in the image build, then sign with gramine-sgx-sign):
      ppml gramine manifest -o /opt/ppml/gramine/ppml.manifest --enclave-size 16G \\
        -- python3 -m ppml.deploy.launch
    """
    from ppml.deploy import gramine as g

    env = {}
    for pair in envs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    program = entrypoint or shutil.which(argv[0])
    if not program:
        raise ConfigError(f"{argv[0]} is not on PATH: give --entrypoint")
    if debug:
        console.print("[yellow]warning:[/] --debug makes a debuggable enclave: the host can read its memory")
    spec = g.GramineManifest(
        entrypoint=Path(program).resolve(), argv=argv, argv_file=Path(argv_file).absolute(),
        trusted=[*([Path(p).absolute() for p in trusted] or g.default_roots()),
                 *(Path(p).absolute() for p in add_trusted)], exclude=exclude, env=env,
        enclave_size=enclave_size, max_threads=max_threads, isvprodid=isvprodid, isvsvn=isvsvn, debug=debug,
        libos=Path(libos) if libos else g.LIBOS, runtime_dir=Path(runtime_dir) if runtime_dir else g.RUNTIME_DIR,
        allowed_files=allowed, start_dir=start_dir)
    spec.write_argv()
    text = spec.render()
    Path(output).write_text(text, encoding="utf-8")
    console.print(f"wrote {output}: {text.count('sha256 = ')} trusted files; sign it with gramine-sgx-sign")
