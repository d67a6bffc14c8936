"""Azurite, Microsoft's Azure Storage emulator, for tests and the demo: the real Blob API on loopback, no account.

``running_azurite(workdir)`` starts ``azurite-blob`` (installed into ``.work/tools/azurite`` by
``scripts/ensure-azurite.sh``) on a free loopback port, waits until it answers, yields an
``AzuriteEndpoint``, and stops it on exit: also when the block raises, and, through
``setpriv --pdeathsig``, when this process dies. The account is Azurite's well-known development account,
whose key is published by Microsoft: nothing here is a secret, and nothing here may protect real data.

Azurite's access log records every request with the bytes it sent, so tests can count ranged reads
(``AzuriteEndpoint.requests``). Azurite emulates the flat Blob API, not ADLS Gen2's hierarchical
namespace (atomic directory rename, ACLs); ppml relies on neither.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ppml.errors import ConfigError

VERSION = "3.37.0"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented development key (https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BIN_ENV = "PPML_AZURITE_BIN"
_ROOT = Path(__file__).resolve().parents[3]  # the source checkout (editable install)
INSTALL_SCRIPT = _ROOT / "scripts" / "ensure-azurite.sh"
_LOCAL_BIN = _ROOT / ".work" / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+|-)')
_STORAGE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_SAS_TOKEN")


@dataclass(frozen=True)
class Request:
    """One line of Azurite's access log."""

    method: str
    path: str  # without the query string
    status: int
    size: int  # response body bytes


@dataclass(frozen=True)
class AzuriteEndpoint:
    """A running Azurite blob service and the ways to authenticate to it."""

    port: int
    location: Path
    log: Path
    ca_file: Path | None = None  # set for HTTPS: the self-signed certificate to trust
    host: str = "127.0.0.1"
    account_name: str = ACCOUNT_NAME
    account_key: str = ACCOUNT_KEY

    @property
    def https(self) -> bool:
        return self.ca_file is not None

    @property
    def blob_endpoint(self) -> str:
        """Path-style endpoint: Azurite takes the account from the first path segment."""
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        scheme = "https" if self.https else "http"
        return (f"DefaultEndpointsProtocol={scheme};AccountName={self.account_name};AccountKey={self.account_key};"
                f"BlobEndpoint={self.blob_endpoint};")

    def sas_connection_string(self, sas_token: str) -> str:
        """A connection string that authenticates with a SAS only (no account key)."""
        return f"BlobEndpoint={self.blob_endpoint};SharedAccessSignature={sas_token.lstrip('?')}"

    def environ(self, auth: str = "connection_string", *, sas_token: str | None = None) -> dict[str, str]:
        """Environment variables that make adlfs (hence ppml, and Spark's Python workers) use this Azurite.

        ``connection_string`` (the usual way with Azurite), or ``account_key`` / ``sas`` through
        ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` / ``AZURE_STORAGE_SAS_TOKEN``. The
        latter two need HTTPS: adlfs builds ``https://{account_host}``, set through fsspec's
        ``FSSPEC_ABFS_ACCOUNT_HOST``, which fsspec reads when it is imported (so: new processes only), as
        Python's TLS reads ``SSL_CERT_FILE``.
        """
        if auth == "connection_string":
            env = {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}
        elif auth in ("account_key", "sas"):
            if not self.https:
                raise ConfigError("account-name authentication needs Azurite over HTTPS: running_azurite(https=True)")
            env = {"AZURE_STORAGE_ACCOUNT_NAME": self.account_name,
                   "FSSPEC_ABFS_ACCOUNT_HOST": f"{self.host}:{self.port}/{self.account_name}"}
            if auth == "account_key":
                env["AZURE_STORAGE_ACCOUNT_KEY"] = self.account_key
            elif sas_token:
                env["AZURE_STORAGE_SAS_TOKEN"] = sas_token
            else:
                raise ConfigError("auth='sas' needs a sas_token (see AzuriteEndpoint.sas_token)")
        else:
            raise ConfigError(f"unknown auth {auth!r}; choose connection_string, account_key or sas")
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env

    def sas_token(self, container: str, *, permission: str = "racwdl", hours: float = 1) -> str:
        """A container SAS signed with the account key, as a data owner would hand one out."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)
        return generate_container_sas(self.account_name, container, account_key=self.account_key,
                                      permission=ContainerSasPermissions.from_string(permission), expiry=expiry)

    def create_container(self, name: str) -> None:
        """Create container ``name`` unless it exists."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        verify = str(self.ca_file) if self.ca_file else True
        with BlobServiceClient.from_connection_string(self.connection_string, connection_verify=verify) as client, \
                suppress(ResourceExistsError):
            client.create_container(name)

    def requests(self, path_contains: str = "") -> list[Request]:
        """Requests served so far (from the access log), optionally only those whose path contains a string."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _ACCESS.search(line)
            if match and path_contains in match["path"]:
                size = 0 if match["size"] == "-" else int(match["size"])
                found.append(Request(match["method"], match["path"].split("?", 1)[0], int(match["status"]), size))
        return found


def azurite_binary() -> Path:
    """The ``azurite-blob`` executable: ``$PPML_AZURITE_BIN``, the project's ``.work/tools``, or ``PATH``."""
    candidates = [Path(os.environ[BIN_ENV])] if os.environ.get(BIN_ENV) else []
    candidates.append(_LOCAL_BIN)
    on_path = shutil.which("azurite-blob")
    candidates += [Path(on_path)] if on_path else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(f"azurite-blob not found (looked for {', '.join(map(str, candidates))}): run `make test` "
                      f"or {INSTALL_SCRIPT} to install azurite@{VERSION} into {_LOCAL_BIN.parents[2]}, "
                      f"or set {BIN_ENV}")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """A throwaway certificate for ``host`` (and localhost), so Azurite can serve HTTPS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azurite (ppml tests)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "azurite-cert.pem", directory / "azurite-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _command(binary: Path, endpoint: AzuriteEndpoint, key_file: Path | None) -> list[str]:
    command = [str(binary), "--blobHost", endpoint.host, "--blobPort", str(endpoint.port),
               "--location", str(endpoint.location), "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    if endpoint.ca_file is not None and key_file is not None:
        command += ["--cert", str(endpoint.ca_file), "--key", str(key_file)]
    setpriv = shutil.which("setpriv")  # util-linux: Azurite dies with us even if we are killed
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def _wait_until_up(process: subprocess.Popen[bytes], endpoint: AzuriteEndpoint, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = endpoint.log.read_text(errors="replace")[-2000:]
            raise ConfigError(f"azurite-blob exited with status {process.returncode} on port {endpoint.port}:\n{tail}")
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ConfigError(f"azurite-blob did not answer on {endpoint.blob_endpoint} within {timeout:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_azurite(workdir: str | Path, *, https: bool = False, timeout: float = 30) -> Iterator[AzuriteEndpoint]:
    """Run Azurite's blob service on a free loopback port, keeping its data in ``workdir``, for the block."""
    binary = azurite_binary()
    location = Path(workdir)
    location.mkdir(parents=True, exist_ok=True)
    ca_file, key_file = _self_signed(location, "127.0.0.1") if https else (None, None)
    for attempt in range(3):  # another process may take the free port before Azurite binds it
        endpoint = AzuriteEndpoint(port=_free_port("127.0.0.1"), location=location,
                                   log=location / "access.log", ca_file=ca_file)
        with open(endpoint.log, "ab") as log:
            process = subprocess.Popen(_command(binary, endpoint, key_file), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            try:
                _wait_until_up(process, endpoint, timeout)
            except ConfigError:
                if attempt < 2 and process.poll() is not None and "EADDRINUSE" in endpoint.log.read_text():
                    continue
                raise
            yield endpoint
            return
        finally:
            _stop(process)


@contextmanager
def exported(env: Mapping[str, str]) -> Iterator[None]:
    """Set storage variables in ``os.environ`` for the block (Spark sessions started inside inherit them),
    clearing the other ``AZURE_STORAGE_*`` ones and adlfs' cached filesystems, which captured the old values."""
    saved = {name: os.environ.get(name) for name in (*_STORAGE_ENV, *env)}
    for name in _STORAGE_ENV:
        os.environ.pop(name, None)
    os.environ.update(env)
    _forget_filesystems()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _forget_filesystems()


def _forget_filesystems() -> None:
    from adlfs import AzureBlobFileSystem

    AzureBlobFileSystem.clear_instance_cache()


__all__ = ["ACCOUNT_KEY", "ACCOUNT_NAME", "AzuriteEndpoint", "Request", "azurite_binary", "exported",
           "running_azurite"]
