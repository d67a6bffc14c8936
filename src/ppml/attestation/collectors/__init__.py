"""Evidence collectors, one module per source, and the choice among them.

* :mod:`~.gramine`: Gramine's ``/dev/attestation`` inside an SGX enclave (``Evidence.tee`` ``sgx``);
* :mod:`~.tsm`: Linux configfs-tsm in a TDX or SEV-SNP guest (``tdx`` or ``snp``);
* :mod:`~.maa`: Microsoft Azure Attestation, wrapping an SGX or SNP attester (``maa``, a JWT);
* :mod:`~.simulated`: a signed software report for development that proves nothing (``simulated``).

:func:`detect_attester` probes for Gramine, then configfs-tsm, and never falls back to the simulated TEE
unless asked to; MAA needs an endpoint, so it is always built explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ppml.attestation.collectors import gramine, tsm
from ppml.attestation.collectors.gramine import GramineAttester
from ppml.attestation.collectors.maa import MaaAttester
from ppml.attestation.collectors.simulated import SimulatedAttester, code_measurement, verify_simulated
from ppml.attestation.collectors.tsm import TsmAttester
from ppml.attestation.evidence import Attester
from ppml.errors import ConfigError, NoTeeError

__all__ = [
    "ATTESTER_NAMES",
    "GramineAttester",
    "MaaAttester",
    "SimulatedAttester",
    "TsmAttester",
    "attester_by_name",
    "code_measurement",
    "detect_attester",
    "verify_simulated",
]

log = logging.getLogger(__name__)

ATTESTER_NAMES = ("auto", "gramine", "simulated", "tsm")


def detect_attester(*, allow_simulated: bool = False, simulator_key_path: str | Path | None = None,
                    gramine_root: str | Path = gramine.DEFAULT_ROOT,
                    tsm_root: str | Path = tsm.DEFAULT_ROOT) -> Attester:
    """The attester for the TEE this process runs in: Gramine, then configfs-tsm, then (opt-in) simulated.

    Args:
        allow_simulated: fall back to the simulated TEE (with a warning) when no real one is found.
        simulator_key_path: the simulator key file; ``None`` uses an ephemeral key.
        gramine_root, tsm_root: where to probe; only tests change them.

    Raises:
        NoTeeError: no TEE was found and ``allow_simulated`` is false, or the TEE found is not attestable.
    """
    gramine_root, tsm_root = Path(gramine_root), Path(tsm_root)
    if (gramine_root / "quote").exists():
        return GramineAttester(gramine_root)
    if tsm_root.is_dir():
        return TsmAttester(tsm_root)
    if allow_simulated:
        log.warning("no TEE found (probed %s and %s); using the SIMULATED TEE, which proves nothing",
                    gramine_root / "quote", tsm_root)
        return _simulated(simulator_key_path)
    raise NoTeeError(f"no TEE found: probed {gramine_root / 'quote'} (Gramine SGX) and {tsm_root} (configfs-tsm: "
                     "TDX, SEV-SNP). To develop without a TEE, opt in to the simulated TEE, which proves nothing: "
                     "--attester simulated on the command line, attester='simulated' in kbs: options, or "
                     "detect_attester(allow_simulated=True)")


def attester_by_name(name: str, *, simulator_key_path: str | Path | None = None) -> Attester:
    """The attester called ``name``: ``auto`` (detect, no simulation), ``gramine``, ``simulated`` or ``tsm``.

    Raises:
        ConfigError: ``name`` is not one of :data:`ATTESTER_NAMES`.
        NoTeeError: the named TEE is not available here.
    """
    if name == "auto":
        return detect_attester()
    if name == "gramine":
        return GramineAttester()
    if name == "tsm":
        return TsmAttester()
    if name == "simulated":
        log.warning("using the SIMULATED TEE by name: its evidence proves nothing")
        return _simulated(simulator_key_path)
    raise ConfigError(f"unknown attester {name!r}; choose one of {', '.join(ATTESTER_NAMES)}")


def _simulated(key_path: str | Path | None) -> Attester:
    # Imported here: ppml.testing builds on this package, and only the opt-in path needs it.
    from ppml.testing.simulated_tee import simulated_attester

    return simulated_attester(key_path)
