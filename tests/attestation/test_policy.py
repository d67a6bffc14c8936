"""Attestation policy: each rule passes and fails with its name; policy documents are strict."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ppml.attestation.claims import Claims
from ppml.attestation.policy import Decision, Policy, PolicyDenied
from ppml.errors import AttestationError, ConfigError

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
FRESH = NOW - timedelta(seconds=10)

MRENCLAVE = "3e78" + "ab" * 28 + "0061"
MRENCLAVE_2 = "11" * 32
MRSIGNER = "cd" * 32
MRTD = "aa" * 48
RTMR = ["b0" * 48, "b1" * 48, "b2" * 48, "b3" * 48]
SNP_MEASUREMENT = "5e" * 48
SNP_GUEST_POLICY = 0x30000  # bit 17 (reserved, set) and bit 16 (SMT allowed)


def sgx_claims(**changes: Any) -> Claims:
    claims = Claims(
        tee="sgx",
        measurements={"mr_enclave": MRENCLAVE, "mr_signer": MRSIGNER, "attributes": "00" * 16, "cpu_svn": "00" * 16},
        svns={"isv_prod_id": 7, "isv_svn": 3},
        debug=False,
        report_data=bytes(64),
        tcb_status="UpToDate",
    )
    return replace(claims, **changes)


def tdx_claims(**changes: Any) -> Claims:
    claims = Claims(
        tee="tdx",
        measurements={"mr_td": MRTD, **{f"rtmr{i}": value for i, value in enumerate(RTMR)}, "mr_seam": "00" * 48},
        svns={},
        debug=False,
        report_data=bytes(64),
        tcb_status="UpToDate",
    )
    return replace(claims, **changes)


def snp_claims(**changes: Any) -> Claims:
    claims = Claims(
        tee="snp",
        measurements={"measurement": SNP_MEASUREMENT},
        svns={"policy": SNP_GUEST_POLICY},
        debug=False,
        report_data=bytes(64),
        tcb_status="UpToDate",
    )
    return replace(claims, **changes)


def simulated_claims() -> Claims:
    return Claims(tee="simulated", measurements={}, svns={}, debug=False, report_data=bytes(64), tcb_status="UpToDate")


def base_document() -> dict[str, Any]:
    return {
        "allowed_tees": ["sgx", "tdx", "snp"],
        "sgx": {"mrenclave": [MRENCLAVE, MRENCLAVE_2]},
        "tdx": {"mrtd": [MRTD], "rtmr0": [RTMR[0]], "rtmr1": [RTMR[1]], "rtmr2": [RTMR[2]], "rtmr3": [RTMR[3]]},
        "snp": {"measurement": [SNP_MEASUREMENT], "required_policy_bits": [17], "forbidden_policy_bits": ["debug"]},
    }


def policy(**changes: Any) -> Policy:
    document = base_document()
    document.update(changes)
    return Policy.from_dict(document)


def denied(p: Policy, claims: Claims, *, now: datetime = NOW, evidence_time: datetime = FRESH) -> PolicyDenied:
    with pytest.raises(PolicyDenied) as info:
        p.evaluate(claims, now=now, evidence_time=evidence_time)
    assert str(info.value).startswith(f"rule {info.value.rule}: ")
    return info.value


# -- TEE type -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [sgx_claims, tdx_claims, snp_claims])
def test_each_tee_passes_its_reference_values(make: Any) -> None:
    decision = policy().evaluate(make(), now=NOW, evidence_time=FRESH)
    assert isinstance(decision, Decision)
    assert decision.tee == make().tee
    assert not decision.simulated
    assert decision.rules[0] == "allowed_tees"


def test_tee_not_allowed() -> None:
    error = denied(Policy.from_dict({"allowed_tees": ["tdx"], "tdx": {"mrtd": [MRTD]}}), sgx_claims())
    assert error.rule == "allowed_tees"
    assert "'sgx'" in str(error)
    assert isinstance(error, AttestationError)
    assert error.reason == "policy"


def test_simulated_not_allowed_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ppml.attestation.policy"):
        error = denied(policy(), simulated_claims())
    assert error.rule == "allowed_tees"
    assert "simulated must be listed explicitly" in str(error)
    assert any("SIMULATED" in record.getMessage() for record in caplog.records)


def test_simulated_allowed_explicitly_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    p = Policy.from_dict({"allowed_tees": ["simulated"]})
    with caplog.at_level(logging.WARNING, logger="ppml.attestation.policy"):
        decision = p.evaluate(simulated_claims(), now=NOW, evidence_time=FRESH)
    assert decision.simulated
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "SIMULATED" in r.getMessage()]
    assert len(warnings) == 1


def test_unknown_tee_name_in_policy() -> None:
    with pytest.raises(ConfigError, match="unknown TEE 'sev'"):
        Policy.from_dict({"allowed_tees": ["sev"]})


def test_allowed_tee_without_reference_values_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="policy key sgx: sgx is in allowed_tees but has no reference values"):
        Policy.from_dict({"allowed_tees": ["sgx"]})


def test_reference_values_for_a_tee_that_is_not_allowed() -> None:
    with pytest.raises(ConfigError, match="policy key snp: reference values given but snp is not in allowed_tees"):
        policy(allowed_tees=["sgx", "tdx"])


# -- debug, freshness, TCB ---------------------------------------------------------------------------------------


def test_debug_forbidden_by_default() -> None:
    error = denied(policy(), sgx_claims(debug=True))
    assert error.rule == "allow_debug"
    assert "debug" in str(error)


def test_debug_allowed_explicitly() -> None:
    assert policy(allow_debug=True).evaluate(tdx_claims(debug=True), now=NOW, evidence_time=FRESH)


def test_evidence_age_default_is_300_seconds() -> None:
    p = policy()
    assert p.max_evidence_age_seconds == 300
    p.evaluate(sgx_claims(), now=NOW, evidence_time=NOW - timedelta(seconds=300))
    error = denied(p, sgx_claims(), evidence_time=NOW - timedelta(seconds=301))
    assert error.rule == "max_evidence_age_seconds"
    assert "301 s old" in str(error)


def test_evidence_from_the_future_is_denied() -> None:
    error = denied(policy(), sgx_claims(), evidence_time=NOW + timedelta(seconds=5))
    assert error.rule == "max_evidence_age_seconds"
    assert "future" in str(error)


def test_evidence_age_configurable() -> None:
    p = policy(max_evidence_age_seconds=30)
    assert denied(p, sgx_claims(), evidence_time=NOW - timedelta(seconds=31)).rule == "max_evidence_age_seconds"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy().evaluate(sgx_claims(), now=NOW.replace(tzinfo=None), evidence_time=FRESH)


@pytest.mark.parametrize("status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded", "Revoked", None])
def test_tcb_status_default_is_up_to_date_only(status: str | None) -> None:
    error = denied(policy(), sgx_claims(tcb_status=status))
    assert error.rule == "accepted_tcb_statuses"


def test_tcb_status_not_appraised_is_named() -> None:
    assert "not appraised" in str(denied(policy(), tdx_claims(tcb_status=None)))


def test_tcb_statuses_configurable() -> None:
    p = policy(accepted_tcb_statuses=["UpToDate", "SWHardeningNeeded"])
    p.evaluate(sgx_claims(tcb_status="SWHardeningNeeded"), now=NOW, evidence_time=FRESH)
    assert denied(p, sgx_claims(tcb_status="OutOfDate")).rule == "accepted_tcb_statuses"
    unappraised = policy(accepted_tcb_statuses=["UpToDate", None])
    unappraised.evaluate(tdx_claims(tcb_status=None), now=NOW, evidence_time=FRESH)


def test_forbidden_advisories() -> None:
    p = policy(accepted_tcb_statuses=["SWHardeningNeeded"], forbidden_advisory_ids=["INTEL-SA-00615"])
    p.evaluate(sgx_claims(tcb_status="SWHardeningNeeded", advisory_ids=("INTEL-SA-00334",)),
               now=NOW, evidence_time=FRESH)
    error = denied(p, sgx_claims(tcb_status="SWHardeningNeeded", advisory_ids=("intel-sa-00615",)))
    assert error.rule == "forbidden_advisory_ids"


# -- SGX ---------------------------------------------------------------------------------------------------------


def test_mrenclave_mismatch_message() -> None:
    p = policy(sgx={"mrenclave": [MRENCLAVE_2, "22" * 32]})
    error = denied(p, sgx_claims())
    assert error.rule == "mrenclave"
    assert str(error) == f"rule mrenclave: {MRENCLAVE[:8]}…{MRENCLAVE[-4:]} is not among the 2 allowed values"


def test_hex_compared_case_insensitively() -> None:
    p = policy(sgx={"mrenclave": [MRENCLAVE.upper()]})
    p.evaluate(sgx_claims(measurements={"mr_enclave": MRENCLAVE}), now=NOW, evidence_time=FRESH)
    policy().evaluate(sgx_claims(measurements={"mr_enclave": MRENCLAVE.upper()}), now=NOW, evidence_time=FRESH)


def test_missing_measurement_in_claims_is_denied() -> None:
    error = denied(policy(), sgx_claims(measurements={"mr_signer": MRSIGNER}))
    assert error.rule == "mrenclave"
    assert "no value" in str(error)


def signer_policy(**sgx_changes: Any) -> Policy:
    sgx = {"mrsigner": [MRSIGNER], "isvprodid": 7, "min_isvsvn": 3, **sgx_changes}
    return policy(sgx=sgx)


def test_mrsigner_policy_passes() -> None:
    decision = signer_policy().evaluate(sgx_claims(), now=NOW, evidence_time=FRESH)
    assert decision.rules[-3:] == ("mrsigner", "isvprodid", "min_isvsvn")
    signer_policy().evaluate(sgx_claims(svns={"isv_prod_id": 7, "isv_svn": 9}), now=NOW, evidence_time=FRESH)


def test_mrsigner_mismatch() -> None:
    assert denied(signer_policy(mrsigner=["ce" * 32]), sgx_claims()).rule == "mrsigner"


def test_isvprodid_mismatch() -> None:
    assert denied(signer_policy(isvprodid=8), sgx_claims()).rule == "isvprodid"


def test_isvsvn_below_minimum() -> None:
    error = denied(signer_policy(min_isvsvn=4), sgx_claims())
    assert error.rule == "min_isvsvn"
    assert "ISVSVN 3 is below the minimum 4" in str(error)


def test_mrenclave_and_mrsigner_both_checked() -> None:
    p = signer_policy(mrenclave=[MRENCLAVE_2])
    assert denied(p, sgx_claims()).rule == "mrenclave"


def test_mrsigner_needs_prodid_and_svn() -> None:
    with pytest.raises(ConfigError, match="mrsigner, isvprodid and min_isvsvn must be given together"):
        policy(sgx={"mrsigner": [MRSIGNER]})
    with pytest.raises(ConfigError, match="policy key sgx: needs mrenclave"):
        policy(sgx={})


# -- TDX ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("register", ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"])
def test_tdx_register_mismatch(register: str) -> None:
    document = base_document()
    document["tdx"][register] = ["ff" * 48]
    assert denied(Policy.from_dict(document), tdx_claims()).rule == register


def test_tdx_unlisted_registers_not_checked() -> None:
    p = policy(tdx={"mrtd": [MRTD]})
    decision = p.evaluate(tdx_claims(measurements={"mr_td": MRTD.upper()}), now=NOW, evidence_time=FRESH)
    assert decision.rules[-1] == "mrtd"


# -- SNP ---------------------------------------------------------------------------------------------------------


def test_snp_measurement_mismatch() -> None:
    assert denied(policy(), snp_claims(measurements={"measurement": "00" * 48})).rule == "measurement"


def test_snp_required_policy_bit_missing() -> None:
    error = denied(policy(), snp_claims(svns={"policy": 0x10000}))
    assert error.rule == "required_policy_bits"
    assert "[17]" in str(error)


def test_snp_forbidden_policy_bit_set() -> None:
    error = denied(policy(), snp_claims(svns={"policy": SNP_GUEST_POLICY | 1 << 19}))
    assert error.rule == "forbidden_policy_bits"
    assert "[19]" in str(error)


def test_snp_policy_missing_from_claims() -> None:
    assert denied(policy(), snp_claims(svns={})).rule == "required_policy_bits"


def test_snp_bit_both_required_and_forbidden() -> None:
    with pytest.raises(ConfigError, match="both required and forbidden"):
        policy(snp={"measurement": [SNP_MEASUREMENT], "required_policy_bits": [19], "forbidden_policy_bits": ["debug"]})


def test_snp_unknown_bit_name() -> None:
    with pytest.raises(ConfigError, match="unknown SNP policy bit 'debugg'"):
        policy(snp={"measurement": [SNP_MEASUREMENT], "forbidden_policy_bits": ["debugg"]})


# -- rule order ----------------------------------------------------------------------------------------------------


def test_first_failing_rule_is_reported() -> None:
    claims = sgx_claims(debug=True, tcb_status="OutOfDate", measurements={"mr_enclave": "00" * 32})
    assert denied(policy(), claims).rule == "allow_debug"
    assert denied(policy(allow_debug=True), claims).rule == "accepted_tcb_statuses"
    assert denied(policy(allow_debug=True, accepted_tcb_statuses=["OutOfDate"]), claims).rule == "mrenclave"


# -- policy documents ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"allow_debugg": False}, "allow_debugg"),
        ({"sgx": {"mrenclave": [MRENCLAVE], "mr_enclave": [MRENCLAVE]}}, "sgx.mr_enclave"),
        ({"tdx": {"mrtd": [MRTD], "rtmr4": [MRTD]}}, "tdx.rtmr4"),
        ({"snp": {"measurement": [SNP_MEASUREMENT], "policy_bits": []}}, "snp.policy_bits"),
    ],
)
def test_unknown_keys_rejected(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown policy key {key} "):
        policy(**changes)


def test_duplicate_json_keys_rejected() -> None:
    text = '{"allowed_tees": ["simulated"], "allow_debug": false, "allow_debug": true}'
    with pytest.raises(ConfigError, match="allow_debug: given more than once"):
        Policy.from_json(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"allow_debug": "no"}, "allow_debug: must be true or false"),
        ({"max_evidence_age_seconds": 0}, "max_evidence_age_seconds: must be positive"),
        ({"max_evidence_age_seconds": "300"}, "max_evidence_age_seconds: must be a finite number"),
        ({"max_evidence_age_seconds": float("nan")}, "max_evidence_age_seconds: must be a finite number"),
        ({"max_evidence_age_seconds": float("inf")}, "max_evidence_age_seconds: must be a finite number"),
        ({"accepted_tcb_statuses": []}, "at least one status"),
        ({"allowed_tees": []}, "at least one TEE"),
        ({"sgx": {"mrenclave": [MRENCLAVE[:-2]]}}, "sgx.mrenclave: .* is 31 bytes, expected 32"),
        ({"sgx": {"mrenclave": ["zz" * 32]}}, "sgx.mrenclave: .* is not hex"),
        ({"sgx": {"mrenclave": MRENCLAVE}}, "sgx.mrenclave: must be a non-empty list"),
        ({"sgx": {"mrenclave": []}}, "sgx.mrenclave: must be a non-empty list"),
        ({"sgx": {"mrsigner": [MRSIGNER], "isvprodid": True, "min_isvsvn": 1}}, "sgx.isvprodid: must be a non-neg"),
        ({"tdx": []}, "policy key tdx: must be an object"),
    ],
)
def test_bad_values_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(**changes)


def test_nan_age_in_json_rejected() -> None:
    with pytest.raises(ConfigError, match="NaN is not JSON"):
        Policy.from_json('{"allowed_tees": ["simulated"], "max_evidence_age_seconds": NaN}')


def test_missing_allowed_tees() -> None:
    with pytest.raises(ConfigError, match="allowed_tees: is required"):
        Policy.from_dict({})


def test_invalid_json() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        Policy.from_json("{allowed_tees: [}")
    with pytest.raises(ConfigError, match="must be an object"):
        Policy.from_json("[]")


def test_defaults() -> None:
    p = Policy.from_dict({"allowed_tees": ["sgx"], "sgx": {"mrenclave": [MRENCLAVE]}})
    assert p.allow_debug is False
    assert p.accepted_tcb_statuses == ("UpToDate",)
    assert p.max_evidence_age_seconds == 300
    assert "simulated" not in p.allowed_tees


def test_json_round_trip() -> None:
    original = policy(
        description="model weights for tenant A",
        sgx={"mrenclave": [MRENCLAVE.upper()], "mrsigner": [MRSIGNER], "isvprodid": 7, "min_isvsvn": 3},
        accepted_tcb_statuses=["UpToDate", None],
        forbidden_advisory_ids=["INTEL-SA-00615"],
        max_evidence_age_seconds=60,
        allow_debug=True,
    )
    text = original.to_json()
    again = Policy.from_json(text)
    assert again == original
    assert again.description == original.description
    assert again.to_dict() == json.loads(text)
    assert again.sgx is not None and again.sgx.mrenclave == (MRENCLAVE.lower(),)  # normalized
    assert again.snp is not None and again.snp.forbidden_policy_bits == (19,)


def test_policy_is_frozen() -> None:
    p = policy()
    with pytest.raises(AttributeError):
        p.allow_debug = True  # type: ignore[misc]


def test_yaml_without_pyyaml_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(ConfigError, match="PyYAML, which is not installed; write the policy as JSON"):
        Policy.from_yaml("allowed_tees: [simulated]\n")


def test_yaml_when_pyyaml_is_installed() -> None:
    pytest.importorskip("yaml")
    p = Policy.from_yaml("allowed_tees: [simulated]\nallow_debug: false\n")
    assert p.allowed_tees == ("simulated",)


def test_simulated_claims_are_checked_against_the_sgx_section() -> None:
    reference = "ab" * 32
    p = Policy.from_dict({"allowed_tees": ["simulated"], "sgx": {"mrenclave": [reference]},
                          "accepted_tcb_statuses": ["UpToDate"]})
    good = Claims(tee="simulated", measurements={"mr_enclave": reference}, svns={}, debug=False,
                  report_data=bytes(64), tcb_status="UpToDate")
    assert p.evaluate(good, now=NOW, evidence_time=FRESH).simulated
    other = Claims(tee="simulated", measurements={"mr_enclave": "cd" * 32}, svns={}, debug=False,
                   report_data=bytes(64), tcb_status="UpToDate")
    assert denied(p, other).rule == "mrenclave"
