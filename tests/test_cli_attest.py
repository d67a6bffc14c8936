"""``ppml attest``: measure, collect (refusing to pretend without a TEE), verify offline with a policy."""

from __future__ import annotations

import json
from pathlib import Path

from ppml.attestation.collectors.simulated import code_measurement
from ppml.broker.jws import write_public_key
from ppml.testing.simulated_tee import load_or_create_simulator_key
from tests.conftest import Run

DATA = "ab" * 64


def _simulated_evidence(ppml: Run, tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "sim.key"
    result = ppml("attest", "collect", "ev.json", "--attester", "simulated", "--simulator-key", str(key),
                  "--report-data", DATA)
    assert result.code == 0, result.err
    write_public_key(tmp_path / "sim.pub", load_or_create_simulator_key(key).public_key())
    return tmp_path / "ev.json", tmp_path / "sim.pub"


def test_measure_prints_the_code_measurement(ppml: Run) -> None:
    result = ppml("attest", "measure")
    assert result.code == 0 and result.out.strip() == code_measurement().hex()


def test_collect_without_a_tee_fails_and_says_how_to_simulate(ppml: Run, tmp_path: Path) -> None:
    result = ppml("attest", "collect", "ev.json", "--report-data", DATA)
    assert result.code == 6 and "no TEE found" in result.err and "--attester simulated" in result.err
    assert not (tmp_path / "ev.json").exists()


def test_collect_then_verify_simulated_evidence(ppml: Run, tmp_path: Path) -> None:
    evidence, public = _simulated_evidence(ppml, tmp_path)
    result = ppml("attest", "verify", str(evidence), "--trust-simulator", str(public), "--report-data", DATA)
    assert result.code == 0, result.err
    claims = json.loads(result.out)
    assert claims["tee"] == "simulated" and claims["measurements"]["mr_enclave"] == code_measurement().hex()


def test_verify_refuses_untrusted_or_unbound_evidence(ppml: Run, tmp_path: Path) -> None:
    evidence, public = _simulated_evidence(ppml, tmp_path)
    untrusted = ppml("attest", "verify", str(evidence), "--report-data", DATA)
    assert untrusted.code == 6 and "trusts no simulator key" in untrusted.err
    unbound = ppml("attest", "verify", str(evidence), "--trust-simulator", str(public), "--report-data", "cd" * 64)
    assert unbound.code == 6 and "not bound" in unbound.err


def test_verify_evaluates_a_policy_naming_the_failing_rule(ppml: Run, tmp_path: Path) -> None:
    evidence, public = _simulated_evidence(ppml, tmp_path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"allowed_tees": ["simulated"], "sgx": {"mrenclave": [code_measurement().hex()]},
                                "accepted_tcb_statuses": [None]}))
    ok = ppml("attest", "verify", str(evidence), "--trust-simulator", str(public), "--report-data", DATA,
              "--policy", str(good))
    assert ok.code == 0 and "allowed" in ok.err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"allowed_tees": ["simulated"], "sgx": {"mrenclave": ["00" * 32]},
                               "accepted_tcb_statuses": [None]}))
    denied = ppml("attest", "verify", str(evidence), "--trust-simulator", str(public), "--report-data", DATA,
                  "--policy", str(bad))
    assert denied.code == 6 and "rule mrenclave" in denied.err


def test_bad_arguments(ppml: Run, tmp_path: Path) -> None:
    short = ppml("attest", "collect", "ev.json", "--attester", "simulated", "--report-data", "abcd")
    assert short.code == 2 and "64 bytes" in short.err
    assert ppml("attest", "collect", "ev.json", "--report-data", "xyz").code == 2
    missing = ppml("attest", "verify", "nope.json", "--report-data", DATA)
    assert missing.code == 3 and "nope.json" in missing.err
    (tmp_path / "junk.json").write_text("{not json")
    junk = ppml("attest", "verify", "junk.json", "--report-data", DATA)
    assert junk.code == 2 and "junk.json" in junk.err
