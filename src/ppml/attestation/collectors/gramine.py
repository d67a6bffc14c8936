"""SGX DCAP quotes from inside a Gramine enclave, through Gramine's ``/dev/attestation`` pseudo-filesystem.

Gramine facts this module relies on (Gramine documentation, "Attestation and Secret Provisioning"):

* ``attestation_type`` (read-only) is ``none``, ``epid`` or ``dcap``, from the manifest option
  ``sgx.remote_attestation``. Only ``dcap`` yields quotes that :mod:`ppml.attestation` can verify.
* ``user_report_data`` (write-only) takes exactly 64 bytes, which become REPORTDATA of the next quote.
* ``quote`` (read-only) returns a fresh quote whose REPORTDATA is the last value written above.

The pseudo-files are shared by every thread of the enclave, so a write and the matching read must not
interleave with another thread's: a process-wide lock serialises them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ppml.attestation.collectors._common import check_report_data
from ppml.attestation.evidence import Evidence
from ppml.errors import AttestationError, NoTeeError

__all__ = ["DEFAULT_ROOT", "GramineAttester"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/dev/attestation")

# One lock for the process: Gramine has one /dev/attestation per enclave, whatever root a caller passes.
_LOCK = threading.Lock()


class GramineAttester:
    """Collects SGX DCAP quotes inside Gramine; checks at construction that the enclave is attestable.

    Raises:
        NoTeeError: ``root`` is not a Gramine attestation directory, or the manifest disables attestation
            (``none``) or selects the unsupported EPID scheme (``epid``).
    """

    tee = "sgx"

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        kind = _attestation_type(self.root)
        if kind == "none":
            raise NoTeeError(f"{self.root}/attestation_type is 'none': this Gramine enclave is not attestable; "
                             "set sgx.remote_attestation = \"dcap\" in the manifest", reason="not_attestable")
        if kind == "epid":
            raise NoTeeError(f"{self.root}/attestation_type is 'epid': EPID attestation is not supported (Intel "
                             "retired it); set sgx.remote_attestation = \"dcap\" in the manifest",
                             reason="unsupported")
        if kind != "dcap":
            raise NoTeeError(f"{self.root}/attestation_type is {kind!r}, expected 'dcap'", reason="unsupported")

    def collect(self, report_data: bytes) -> Evidence:
        """An SGX DCAP quote whose REPORTDATA is exactly ``report_data`` (64 bytes).

        Raises:
            ValueError: ``report_data`` is not 64 bytes.
            AttestationError: Gramine refused the report data or returned no quote.
        """
        check_report_data(report_data)
        with _LOCK:
            try:
                (self.root / "user_report_data").write_bytes(report_data)
                quote = (self.root / "quote").read_bytes()
            except OSError as exc:
                raise AttestationError(f"Gramine quote generation through {self.root} failed: {exc}",
                                       reason="collection") from exc
        if not quote:
            raise AttestationError(f"{self.root}/quote returned no data", reason="collection")
        log.debug("collected a %d-byte SGX quote from %s", len(quote), self.root)
        return Evidence(tee=self.tee, quote=quote)


def _attestation_type(root: Path) -> str:
    try:
        return (root / "attestation_type").read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise NoTeeError(f"{root}/attestation_type does not exist: not running inside a Gramine SGX enclave",
                         reason="not_found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NoTeeError(f"cannot read {root}/attestation_type: {exc}", reason="not_found") from exc
