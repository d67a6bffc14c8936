"""``ppml attest``: what this machine can prove, collect evidence, and verify evidence offline."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from ppml._atomic import atomic_write_bytes
from ppml.cli._common import console, out
from ppml.errors import ConfigError, InputError


@click.group()
def attest() -> None:
    """Collect and verify TEE evidence (SGX, TDX, SEV-SNP, MAA/ITA tokens, simulated)."""


@attest.command()
def measure() -> None:
    """Print the simulated TEE's measurement of the installed ppml code (its MRENCLAVE), for dev policies."""
    from ppml.attestation.collectors.simulated import code_measurement

    out.print(code_measurement().hex())


@attest.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--report-data", "report_data_hex", required=True, help="64 bytes, hex, to bind into the evidence.")
@click.option("--attester", type=click.Choice(["auto", "gramine", "tsm", "simulated"]), default="auto",
              show_default=True, help="Evidence source; auto probes Gramine, then configfs-tsm.")
@click.option("--simulator-key", type=click.Path(dir_okay=False), default=None,
              help="Signing key of the simulated TEE (created if missing).")
def collect(output: str, report_data_hex: str, attester: str, simulator_key: str | None) -> None:
    """Collect evidence bound to REPORT_DATA and write it as JSON to OUTPUT.

    \b
    Example:
      ppml attest collect evidence.json --report-data $(python -c 'print("00"*64)')
    """
    from ppml.attestation.collectors import attester_by_name

    data = _report_data(report_data_hex)
    evidence = attester_by_name(attester, simulator_key_path=simulator_key).collect(data)
    atomic_write_bytes(Path(output), json.dumps(evidence.to_json(), indent=2).encode() + b"\n", mode=0o644)
    console.print(f"wrote {evidence.tee} evidence ({len(evidence.quote)} bytes) to {output}")


@attest.command()
@click.argument("evidence_file", type=click.Path(dir_okay=False))
@click.option("--report-data", "report_data_hex", required=True, help="The 64 bytes (hex) the evidence must bind.")
@click.option("--collateral", type=click.Path(file_okay=False), default=None,
              help="Offline Intel collateral bundle directory (SGX/TDX TCB status).")
@click.option("--trust-simulator", type=click.Path(dir_okay=False), default=None,
              help="Public key of a simulated TEE to accept (development only).")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None,
              help="Also evaluate this policy (JSON/YAML) against the claims.")
@click.option("--at", "at", default=None, help="Verification time (ISO 8601, UTC) instead of now: for recorded "
              "evidence whose collateral has expired.")
def verify(evidence_file: str, report_data_hex: str, collateral: str | None, trust_simulator: str | None,
           policy_file: str | None, at: str | None) -> None:
    """Verify evidence offline and print its claims as JSON; with --policy, evaluate the policy too."""
    from ppml.attestation import Evidence, EvidenceVerifier, OfflineBundle, Policy, VerifierSettings
    from ppml.broker.server import load_public_keys

    try:
        document = json.loads(Path(evidence_file).read_text())
    except OSError as error:
        raise InputError(f"cannot read {evidence_file}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"{evidence_file} is not evidence JSON: {error}") from None
    now = _time(at)
    settings = VerifierSettings(
        collateral=OfflineBundle(collateral) if collateral else None,
        simulator_keys=tuple(load_public_keys((Path(trust_simulator),), "simulator")) if trust_simulator else ())
    claims = EvidenceVerifier(settings).verify(Evidence.from_json(document), report_data=_report_data(
        report_data_hex), now=now)
    out.print_json(json.dumps({"tee": claims.tee, "measurements": dict(claims.measurements),
                               "svns": dict(claims.svns), "debug": claims.debug, "tcb_status": claims.tcb_status,
                               "advisory_ids": list(claims.advisory_ids)}))
    if policy_file:
        text = Path(policy_file).read_text()
        policy = Policy.from_yaml(text) if policy_file.endswith((".yaml", ".yml")) else Policy.from_json(text)
        decision = policy.evaluate(claims, now=now, evidence_time=now)
        console.print(f"policy {policy_file}: allowed ({', '.join(decision.rules)})")


def _report_data(text: str) -> bytes:
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("--report-data must be hex") from None
    if len(data) != 64:
        raise ConfigError(f"--report-data must be 64 bytes (128 hex digits), got {len(data)}")
    return data


def _time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--at {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
