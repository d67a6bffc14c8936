"""TDX quotes and SEV-SNP reports through the Linux configfs-tsm report interface (kernel 6.7 and later).

Kernel ABI facts this module relies on (``Documentation/ABI/testing/configfs-tsm``, ``include/linux/tsm.h``):

* ``mkdir /sys/kernel/config/tsm/report/$name`` creates a report instance; the kernel fills it with attribute
  files, and ``rmdir`` releases it. A fresh, uniquely named instance per request avoids sharing one with
  another process.
* ``inblob`` (write-only) takes up to 64 bytes of user data; the TEE puts it in REPORTDATA.
* ``outblob`` (read-only) is generated when read, from ``inblob`` and the options, in the format that
  ``provider`` names.
* ``provider`` (read-only): ``tdx_guest`` (an Intel TDX quote) or ``sev_guest`` (an AMD SEV-SNP report).
  Other providers (``arm_cca_guest``) are rejected.
* ``auxblob`` (read-only, optional) is supplemental data; for ``sev_guest`` it is the GHCB certificate table
  (VCEK/VLEK, ASK, ARK), which :mod:`._snp_certs` turns into a PEM bundle.
* ``generation`` (read-only) increments on every write to ``inblob`` or an option. Reading it before the
  writes and after ``outblob`` and checking that it grew by exactly our number of writes detects another
  writer; we then retry once with a new instance.
* ``privlevel`` (write-only, SEV-SNP only) selects the VMPL of the report, between ``privlevel_floor`` and 3.

The SVSM service-provider attributes (``service_provider``, ``manifestblob``) are not used.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from ppml.attestation.collectors._common import check_report_data
from ppml.attestation.collectors._snp_certs import cert_table_to_pem
from ppml.attestation.evidence import Evidence
from ppml.errors import AttestationError, ConfigError, NoTeeError

__all__ = ["DEFAULT_ROOT", "PROVIDERS", "TsmAttester"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/kernel/config/tsm/report")
PROVIDERS = {"tdx_guest": "tdx", "sev_guest": "snp"}
PRIVLEVEL_MAX = 3


class _GenerationChanged(Exception):
    def __init__(self, before: int, after: int, writes: int) -> None:
        super().__init__(f"generation went from {before} to {after}, expected {before + writes}")


class TsmAttester:
    """Collects TDX or SEV-SNP evidence through configfs-tsm; ``tee`` is read from the provider at construction.

    Args:
        root: the configfs-tsm report directory.
        privlevel: SEV-SNP VMPL to request (0-3); ``None`` keeps the kernel's default.

    Raises:
        NoTeeError: ``root`` does not exist, or its provider is neither ``tdx_guest`` nor ``sev_guest``.
        ConfigError: ``privlevel`` is out of range, or given for a provider without privilege levels.
    """

    def __init__(self, root: str | Path = DEFAULT_ROOT, *, privlevel: int | None = None) -> None:
        self.root = Path(root)
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise ConfigError(f"privlevel must be between 0 and {PRIVLEVEL_MAX}, got {privlevel}")
        if not self.root.is_dir():
            raise NoTeeError(f"{self.root} does not exist: configfs-tsm is not available (needs Linux 6.7+ in a "
                             "TDX or SEV-SNP guest, with configfs mounted)", reason="not_found")
        self.privlevel = privlevel
        self.provider = self._probe_provider()
        self.tee = PROVIDERS[self.provider]
        if privlevel is not None and self.provider != "sev_guest":
            raise ConfigError(f"privlevel is only supported by the sev_guest provider, not {self.provider}")

    def collect(self, report_data: bytes) -> Evidence:
        """A TDX quote or SNP report (plus the SNP certificates, if any) whose REPORTDATA is ``report_data``.

        Raises:
            ValueError: ``report_data`` is not 64 bytes.
            AttestationError: the kernel failed, or another writer changed the report instance twice in a row.
        """
        check_report_data(report_data)
        try:
            return self._collect_once(report_data)
        except _GenerationChanged as first:
            log.warning("configfs-tsm report changed while it was generated (%s); retrying once", first)
        try:
            return self._collect_once(report_data)
        except _GenerationChanged as second:
            raise AttestationError(f"configfs-tsm report under {self.root}: {second}; another process is writing "
                                   "to our report instance concurrently", reason="concurrent_writer") from None

    def _collect_once(self, report_data: bytes) -> Evidence:
        entry = self._new_entry()
        try:
            before = _parse_generation(self._read(entry / "generation"), entry)
            self._write(entry / "inblob", report_data)
            writes = 1
            if self.privlevel is not None:
                self._write(entry / "privlevel", f"{self.privlevel}\n".encode("ascii"))
                writes += 1
            outblob = self._read(entry / "outblob")
            auxblob = self._read_optional(entry / "auxblob")
            after = _parse_generation(self._read(entry / "generation"), entry)
        except OSError as exc:
            raise AttestationError(f"configfs-tsm report generation in {entry} failed: {exc}",
                                   reason="collection") from exc
        finally:
            self._remove_entry(entry)
        if after != before + writes:
            raise _GenerationChanged(before, after, writes)
        if not outblob:
            raise AttestationError(f"{entry}/outblob was empty", reason="collection")
        certificates = cert_table_to_pem(auxblob) if self.tee == "snp" and auxblob else b""
        log.debug("collected a %d-byte %s report from configfs-tsm", len(outblob), self.tee)
        return Evidence(tee=self.tee, quote=outblob, certificates=certificates)

    def _probe_provider(self) -> str:
        entry = self._new_entry()
        try:
            provider = self._read(entry / "provider").decode("ascii", "replace").strip()
        except OSError as exc:
            raise NoTeeError(f"cannot read the configfs-tsm provider in {entry}: {exc}", reason="not_found") from exc
        finally:
            self._remove_entry(entry)
        if provider not in PROVIDERS:
            raise NoTeeError(f"configfs-tsm provider {provider!r} is not supported (supported: "
                             f"{', '.join(sorted(PROVIDERS))})", reason="unsupported")
        return provider

    def _new_entry(self) -> Path:
        entry = self.root / f"ppml-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._mkdir(entry)
        except OSError as exc:
            raise AttestationError(f"cannot create configfs-tsm report instance {entry}: {exc}",
                                   reason="collection") from exc
        return entry

    def _remove_entry(self, entry: Path) -> None:
        try:
            self._rmdir(entry)
        except OSError as exc:  # a leftover instance costs a little kernel memory; do not hide the real error
            log.warning("could not remove configfs-tsm report instance %s: %s", entry, exc)

    def _read_optional(self, path: Path) -> bytes:
        try:
            return self._read(path)
        except FileNotFoundError:
            return b""

    # File-system primitives: configfs attributes are plain files to user space. Tests override these four
    # to add the kernel's side effects (attribute files on mkdir, outblob on read, generation on write).

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700)

    def _rmdir(self, path: Path) -> None:
        path.rmdir()

    def _read(self, path: Path) -> bytes:
        return path.read_bytes()

    def _write(self, path: Path, data: bytes) -> None:
        # One write() call: configfs binary attributes take the whole value at once.
        with path.open("wb", buffering=0) as handle:
            handle.write(data)


def _parse_generation(raw: bytes, entry: Path) -> int:
    text = raw.decode("ascii", "replace").strip()
    if not text.isdigit():
        raise AttestationError(f"{entry}/generation is not a number: {text!r}", reason="collection")
    return int(text)
