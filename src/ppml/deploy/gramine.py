"""A Gramine manifest that measures everything the workload runs, and takes nothing from the host.

BigDL's manifest imported the whole host environment (``loader.insecure__use_host_env``), took its command from
an environment variable, listed the JVM, the Spark jars and the Python code only as *allowed* (unchecked)
files, and let unlisted files open (``allow_all_but_log``): its MRENCLAVE said little about what ran. Here:

- every file under the given roots (Python, the JVM, the Spark jars, ppml) is a trusted file whose SHA-256 is
  computed by this renderer and written into the manifest, so the hashes are part of MRENCLAVE;
- the arguments come from a trusted file (``loader.argv_src_file``) rendered from the given argv;
- the environment is a fixed allow-list of ``loader.env.NAME = "value"``; no host variable passes through;
- ``sgx.file_check_policy = "strict"``, ``sgx.debug = false`` (unless asked, with a warning),
  ``sgx.remote_attestation = "dcap"``; ``/tmp`` is an in-enclave tmpfs; no ``insecure__`` option is emitted.

Paths are host paths; the manifest mounts each root at the same path, and Gramine's own glibc at ``/lib``.
Rendering happens where the files are (in the image build), and the output is then signed with
``gramine-sgx-sign``, which keeps the hashes given here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ppml.deploy._units import format_mib, parse_mib
from ppml.deploy.sparkconf import SECRET_NAME
from ppml.errors import ConfigError, InputError

log = logging.getLogger(__name__)

GRAMINE_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/gramine")  # Gramine's Debian/Ubuntu packages
LIBOS = GRAMINE_LIBDIR / "libsysdb.so"
RUNTIME_DIR = GRAMINE_LIBDIR / "runtime" / "glibc"
ARCH_LIBDIRS = (Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu"))  # one, on merged-/usr
DEFAULT_ENV: Mapping[str, str] = {
    "LD_LIBRARY_PATH": "/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/usr/local/lib",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",  # trusted files are read-only; do not even try to write .pyc files
    "MALLOC_ARENA_MAX": "4",  # glibc arenas per thread would exhaust a fixed-size enclave
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 1 << 20


def serialize_argv(argv: Sequence[str]) -> bytes:
    """What ``gramine-argv-serializer`` writes: each argument followed by a NUL byte."""
    if not argv:
        raise ConfigError("the enclave needs a command (argv) to run")
    for arg in argv:
        if "\0" in arg:
            raise ConfigError("an argument cannot contain a NUL byte")
    return b"".join(arg.encode("utf-8") + b"\0" for arg in argv)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents (following symlinks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def walk_files(roots: Sequence[Path], exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Regular files (and symlinks to them) under each root, sorted, without directory symlink loops."""
    seen: set[Path] = set()
    for root in roots:
        if root.is_file():
            candidates: list[Path] = [root]
        elif root.is_dir():
            candidates = []
            for directory, dirs, files in os.walk(root, followlinks=False):
                dirs.sort()
                candidates += [Path(directory, name) for name in sorted(files)]
                candidates += [Path(directory, name) for name in dirs if Path(directory, name).is_symlink()
                               and Path(directory, name).is_file()]
        else:
            raise InputError(f"trusted root {root} does not exist")
        for path in candidates:
            if path in seen or any(fnmatch.fnmatch(str(path), pattern) for pattern in exclude):
                continue
            if path.is_file():  # skips dangling symlinks, sockets, devices
                seen.add(path)
                yield path


def default_roots() -> list[Path]:
    """Python (standard library, libpython, site-packages with PySpark's jars and ppml), ``$JAVA_HOME``, libs."""
    paths = sysconfig.get_paths()
    candidates = [Path(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    if sysconfig.get_config_var("LIBDIR"):  # libpython, when Python is built shared (the python images are)
        candidates.append(Path(sysconfig.get_config_var("LIBDIR")))
    candidates += [Path(os.path.realpath(sys.executable))]
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    candidates += list(ARCH_LIBDIRS)
    roots: list[Path] = []
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if candidate.exists() and not any(real == r or r in real.parents for r in roots):
            roots.append(real)
    return roots


@dataclass(frozen=True, kw_only=True)
class GramineManifest:
    """The inputs of one manifest; :meth:`render` hashes the files and returns the TOML text."""

    entrypoint: Path
    argv: Sequence[str]
    argv_file: Path
    trusted: Sequence[Path]
    exclude: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    enclave_size: str = "16G"
    max_threads: int = 256
    isvprodid: int = 0
    isvsvn: int = 0
    debug: bool = False
    libos: Path = LIBOS
    runtime_dir: Path = RUNTIME_DIR
    allowed_files: Sequence[str] = ()  # untrusted inputs, listed explicitly (none by default)
    start_dir: str | None = None

    def write_argv(self) -> None:
        """Write the argument file that :meth:`render` measures."""
        self.argv_file.parent.mkdir(parents=True, exist_ok=True)
        self.argv_file.write_bytes(serialize_argv(self.argv))

    def trusted_files(self) -> list[tuple[Path, str]]:
        """``(path, sha256)`` of every measured file: the LibOS, its glibc, the entrypoint, argv, the roots."""
        roots = [self.libos, self.runtime_dir, self.entrypoint, self.argv_file, *self.trusted]
        return [(path, sha256_file(path)) for path in walk_files(roots, self.exclude)]

    def mounts(self) -> list[dict[str, str]]:
        """Gramine's glibc at ``/lib``, an in-enclave tmpfs at ``/tmp``, then each root at its own path."""
        kept: list[str] = []
        for path in sorted({str(p.absolute()) for p in [self.entrypoint, self.argv_file, *self.trusted]}):
            if path in ("/", "/lib", "/tmp"):
                raise ConfigError(f"{path} cannot be a trusted root: name the directories under it")
            if not any(path.startswith(k + "/") for k in kept):
                kept.append(path)
        return [{"path": "/lib", "uri": f"file:{self.runtime_dir}"}, {"type": "tmpfs", "path": "/tmp"},
                *({"path": path, "uri": f"file:{path}"} for path in kept)]

    def render(self) -> str:
        """The manifest TOML. Hashes are computed now: render after the image's files are in place."""
        size = parse_mib(self.enclave_size, what="enclave size")
        if size & (size - 1):
            raise ConfigError(f"enclave size {self.enclave_size} must be a power of two (e.g. 8G, 16G, 32G)")
        if not self.entrypoint.is_absolute():
            raise ConfigError(f"entrypoint {self.entrypoint} must be an absolute path")
        if self.max_threads < 4:
            raise ConfigError("max threads must be at least 4 (Gramine's own helper threads need 3)")
        env = {**DEFAULT_ENV, **self.env}
        for name in env:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"environment variable name {name!r} is not valid")
            if SECRET_NAME.search(name):
                raise ConfigError(f"{name} looks like a secret: a manifest is public, provision it via the key broker")
        if self.debug:
            log.warning("sgx.debug = true: the host can read and change enclave memory; never use it with real data")
        lines = [
            "# Rendered by `ppml gramine manifest`. Every file in sgx.trusted_files is hashed into MRENCLAVE;",
            "# the arguments come from a trusted file and the environment only from loader.env below.",
            f"libos.entrypoint = {_str(str(self.entrypoint))}",
            f"loader.entrypoint.uri = {_str(f'file:{self.libos}')}",
            'loader.log_level = "error"',
            f"loader.argv_src_file = {_str(f'file:{self.argv_file}')}",
            *(f"loader.env.{name} = {_str(value)}" for name, value in sorted(env.items())),
            "sys.enable_extra_runtime_domain_names_conf = true",
            'sys.stack.size = "2M"',
        ]
        if self.start_dir:
            lines.append(f"fs.start_dir = {_str(self.start_dir)}")
        lines.append("fs.mounts = [")
        lines += [f"  {_table(mount)}," for mount in self.mounts()]
        lines += [
            "]",
            f"sgx.debug = {'true' if self.debug else 'false'}",
            "sgx.edmm_enable = false",
            f"sgx.enclave_size = {_str(format_mib(size))}",
            f"sgx.max_threads = {int(self.max_threads)}",
            'sgx.remote_attestation = "dcap"',
            f"sgx.isvprodid = {int(self.isvprodid)}",
            f"sgx.isvsvn = {int(self.isvsvn)}",
            'sgx.file_check_policy = "strict"',
        ]
        if self.allowed_files:
            lines.append("# Untrusted inputs (not measured): the measured program must validate what it reads.")
            lines.append("sgx.allowed_files = [")
            lines += [f"  {_str(uri if uri.startswith('file:') else f'file:{uri}')}," for uri in self.allowed_files]
            lines.append("]")
        lines.append("sgx.trusted_files = [")
        lines += [f"  {_table({'uri': f'file:{path}', 'sha256': digest})}," for path, digest in self.trusted_files()]
        lines.append("]")
        return "\n".join(lines) + "\n"


def _str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, except DEL, which TOML wants escaped)."""
    return json.dumps(value).replace("\x7f", "\\u007F")


def _table(items: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{key} = {_str(value)}" for key, value in items.items()) + " }"
