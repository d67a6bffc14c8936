"""The ``azurekv:`` backend, secrets and Secure Key Release, through the real Azure SDK against ppml's emulator.

Two emulators run for the module (a vault, and a Managed HSM for ``oct-HSM`` keys); each test starts from an empty
vault. The emulator follows Key Vault's published REST API; see ``ppml.testing.keyvault`` for what it does not do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml._secrets import SecretKey
from ppml._tls import tls_context
from ppml.attestation.policy import Policy
from ppml.errors import ConfigError, KeyDisabled, KeyNotFound, KeyProviderError, PolicyDenied
from ppml.kms import KeyRing, backend_class, known_backends
from ppml.kms.azure_skr import (
    create_exportable_key,
    evaluate_release_policy,
    release_key,
    release_policy_from,
    rsa_aes_key_unwrap,
    rsa_aes_key_wrap,
    unwrap_data_key,
    validate_release_policy,
)
from ppml.kms.azurekv import AzureKeyVault, pack_wrapped, parse_wrapped
from ppml.kms.azurekv_secrets import AzureKeyVaultSecrets
from ppml.testing.keyvault import (
    FakeAttestationAuthority,
    KeyVaultEmulator,
    StaticTokenCredential,
    running_keyvault,
    write_tls_files,
)
from tests.kms.conformance import KeyManagementConformance

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "azure" / "skr-policies"
MRENCLAVE = "3e7830a35057b9938d0fd849d13e3d82dc4abba812f8ffebbbb3d0e5ff1dd661"
MRSIGNER = "60d7778210f93769ad6d1d26698df018f95d321fc64f750fdd286ed15882c58e"
MEASUREMENT = "ab" * 48
SGX_CLAIMS = {"x-ms-attestation-type": "sgx", "x-ms-sgx-is-debuggable": False, "x-ms-sgx-mrenclave": MRENCLAVE,
              "x-ms-sgx-mrsigner": MRSIGNER, "x-ms-sgx-product-id": 1, "x-ms-sgx-svn": 3}


class Vault(NamedTuple):
    url: str
    ca_file: str
    emulator: KeyVaultEmulator


@pytest.fixture(scope="module")
def authority() -> FakeAttestationAuthority:
    return FakeAttestationAuthority()


def _serve(tmp_path_factory: pytest.TempPathFactory, authority: FakeAttestationAuthority,
           managed_hsm: bool) -> Iterator[Vault]:
    emulator = KeyVaultEmulator(managed_hsm=managed_hsm, authorities={authority.issuer: authority.jwks})
    with running_keyvault(tls_dir=tmp_path_factory.mktemp("tls"), emulator=emulator) as (url, ca_file):
        yield Vault(url, ca_file, emulator)


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory: pytest.TempPathFactory, authority: FakeAttestationAuthority) -> Iterator[Vault]:
    yield from _serve(tmp_path_factory, authority, managed_hsm=False)


@pytest.fixture(scope="module")
def hsm_server(tmp_path_factory: pytest.TempPathFactory, authority: FakeAttestationAuthority) -> Iterator[Vault]:
    yield from _serve(tmp_path_factory, authority, managed_hsm=True)


@pytest.fixture
def vault(vault_server: Vault) -> Vault:
    vault_server.emulator.reset()
    return vault_server


@pytest.fixture
def hsm(hsm_server: Vault) -> Vault:
    hsm_server.emulator.reset()
    return hsm_server


def backend(vault: Vault, **options: Any) -> AzureKeyVault:
    options.setdefault("credential", StaticTokenCredential())
    options.setdefault("key_size", 2048 if options.get("key_type", "RSA") != "oct-HSM" else 256)
    return AzureKeyVault(vault.url, ca_file=vault.ca_file, **options)


def sent(vault: Vault, operation: str) -> list[str]:
    """Paths of the requests for ``operation`` (``wrapkey``, ``unwrapkey``, ``release`` ...) the vault received."""
    return [path for method, path in vault.emulator.requests if path.endswith(f"/{operation}")]


class TestAzureKeyVault(KeyManagementConformance):
    """RSA keys in a vault: every KMS behaviour, through the Azure SDK."""

    @pytest.fixture
    def kms(self, vault: Vault) -> AzureKeyVault:
        return backend(vault)


class TestManagedHsmOctKeys(KeyManagementConformance):
    """AES-256 ``oct-HSM`` keys in a Managed HSM, wrapping with A256KW."""

    @pytest.fixture
    def kms(self, hsm: Vault) -> AzureKeyVault:
        return backend(hsm, key_type="oct-HSM")

    def test_wrapping_is_randomized(self, kms: AzureKeyVault) -> None:
        """AES key wrap (RFC 3394) is deterministic by design; data keys are fresh, so nothing is revealed."""
        kms.create_key("alpha")
        data_key = SecretKey(os.urandom(32))
        assert kms.wrap_key(data_key, "alpha") == kms.wrap_key(data_key, "alpha")


# -- the backend -----------------------------------------------------------------------------------------------


def test_registered_lazily_and_options_are_picklable(vault: Vault) -> None:
    assert list(known_backends) == sorted(known_backends)
    assert known_backends["azurekv"] == ("ppml.kms.azurekv:AzureKeyVault", "")
    assert backend_class("azurekv") is AzureKeyVault
    options = {"azurekv": {"vault_url": vault.url, "ca_file": vault.ca_file, "key_type": "RSA-HSM",
                           "managed_identity_client_id": "00000000-0000-0000-0000-000000000001"}}
    ring = pickle.loads(pickle.dumps(KeyRing(options)))
    kms, name = ring.resolve("azurekv:sales")
    assert isinstance(kms, AzureKeyVault) and name == "sales" and kms.key_type == "RSA-HSM"


def test_follows_the_vault_challenge_and_sends_the_token(vault: Vault) -> None:
    credential = StaticTokenCredential()
    backend(vault, credential=credential).create_key("alpha")
    assert set(credential.scopes) == {"https://vault.azure.net/.default"}
    response = httpx.get(f"{vault.url}/keys/alpha?api-version=7.5", verify=tls_context(vault.ca_file))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"
    assert 'resource="https://vault.azure.net"' in response.headers["WWW-Authenticate"]


def test_errors_have_key_vaults_shape(vault: Vault) -> None:
    headers = {"Authorization": "Bearer ppml-emulator-token"}
    with httpx.Client(verify=tls_context(vault.ca_file), headers=headers, base_url=vault.url) as client:
        missing = client.get("/keys/nosuch?api-version=7.5")
        bad = client.post("/keys/k/create?api-version=7.5", json={"kty": "EC"})
        secret = client.get("/secrets/nosuch?api-version=7.5")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "KeyNotFound")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "BadParameter")
    assert (secret.status_code, secret.json()["error"]["code"]) == (404, "SecretNotFound")


def test_rotation_records_the_version_each_wrapping_needs(vault: Vault) -> None:
    kms = backend(vault)
    kms.create_key("alpha")
    old_key, old_wrapped = kms.generate_data_key("alpha")
    kms.rotate_key("alpha")
    new_key, new_wrapped = kms.generate_data_key("alpha")
    versions = [p.version for p in kms.key_client.list_properties_of_key_versions("alpha")]
    assert parse_wrapped(old_wrapped)[:2] == ("RSA-OAEP-256", versions[0])
    assert parse_wrapped(new_wrapped)[:2] == ("RSA-OAEP-256", versions[1])
    assert kms.unwrap_key(old_wrapped, "alpha") == old_key
    assert kms.unwrap_key(new_wrapped, "alpha") == new_key
    assert sent(vault, "unwrapkey") == [f"/keys/alpha/{versions[0]}/unwrapkey", f"/keys/alpha/{versions[1]}/unwrapkey"]
    assert len(sent(vault, "wrapkey")) == 2  # wrapped in the vault, not locally by the SDK


def test_rotation_keeps_the_key_type_and_size(vault: Vault) -> None:
    kms = backend(vault, key_type="RSA-HSM", key_size=2048)
    kms.create_key("alpha")
    backend(vault, key_size=3072).rotate_key("alpha")  # another default size does not change the key
    latest = kms.key_client.get_key("alpha")
    assert (str(latest.key_type.value), len(latest.key.n) * 8) == ("RSA-HSM", 2048)


def test_disabled_version_names_key_and_vault(vault: Vault) -> None:
    kms = backend(vault)
    kms.create_key("alpha")
    _, wrapped = kms.generate_data_key("alpha")
    kms.disable_key("alpha", version=1)
    with pytest.raises(KeyDisabled, match=rf"version 1 .* of azurekv:alpha is disabled in Azure Key Vault {vault.url}"):
        kms.unwrap_key(wrapped, "alpha")
    with pytest.raises(KeyProviderError, match="no version 3"):
        kms.disable_key("alpha", version=3)


def test_unknown_key_names_key_and_vault(vault: Vault) -> None:
    kms = backend(vault)
    with pytest.raises(KeyNotFound, match=rf"no key azurekv:nosuch in Azure Key Vault {re.escape(vault.url)}"):
        kms.generate_data_key("nosuch")
    with pytest.raises(KeyNotFound, match="azurekv:nosuch"):
        kms.rotate_key("nosuch")


def test_names_key_vault_cannot_hold_are_refused(vault: Vault) -> None:
    with pytest.raises(ConfigError, match="letters, digits and '-'"):
        backend(vault).create_key("sales_2024")


def test_wrapped_key_from_elsewhere_is_refused(vault: Vault) -> None:
    kms = backend(vault)
    kms.create_key("alpha")
    _, wrapped = kms.generate_data_key("alpha")
    for bad in (b"x" * 40, wrapped[:-1], wrapped + b"\0", b"ppKV\x02" + wrapped[5:]):
        with pytest.raises(KeyProviderError, match="not an azurekv: wrapped data key"):
            kms.unwrap_key(bad, "alpha")
    assert parse_wrapped(pack_wrapped("A256KW", "abc123", b"w" * 40)) == ("A256KW", "abc123", b"w" * 40)


def test_a_rejected_credential_is_a_clear_error(vault: Vault) -> None:
    backend(vault).create_key("alpha")
    with pytest.raises(KeyProviderError, match=r"rejected the credential .*HTTP 401"):
        backend(vault, credential=StaticTokenCredential("someone-elses-token")).generate_data_key("alpha")


class NoCredential:
    """What ``DefaultAzureCredential`` does where no identity is available."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:  # noqa: ANN401
        raise CredentialUnavailableError(message="DefaultAzureCredential failed to retrieve a token")


def test_no_credential_is_a_clear_error(vault: Vault) -> None:
    backend(vault).create_key("alpha")
    with pytest.raises(KeyProviderError, match="no Azure credential could get a token") as raised:
        backend(vault, credential=NoCredential()).generate_data_key("alpha")
    assert isinstance(raised.value.__cause__, ClientAuthenticationError)


def test_a_missing_permission_names_what_to_grant(vault: Vault) -> None:
    kms = backend(vault)
    kms.key_client.create_rsa_key("limited", size=2048, key_operations=["wrapKey"])  # no unwrapKey
    _, wrapped = kms.generate_data_key("limited")
    with pytest.raises(KeyProviderError, match=rf"Azure Key Vault {vault.url} refused to unwrap a data key with "
                                               r"azurekv:limited \(HTTP 403: .*\); the identity needs "
                                               r"keys/unwrapKey \(RBAC role Key Vault Crypto User"):
        kms.unwrap_key(wrapped, "limited")


def test_an_unreachable_vault_is_named() -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{probe.getsockname()[1]}"
    kms = AzureKeyVault(url, credential=StaticTokenCredential(), max_retries=0)
    with pytest.raises(KeyProviderError, match=f"Azure Key Vault {url} is unreachable, cannot look up "
                                               "azurekv:alpha"):
        kms.create_key("alpha")


def test_tls_with_an_untrusted_ca_fails(vault: Vault, tmp_path: Path) -> None:
    other_ca, _, _ = write_tls_files(tmp_path)
    for ca_file in (other_ca, None):  # another private CA; the system roots
        kms = AzureKeyVault(vault.url, credential=StaticTokenCredential(), ca_file=ca_file, max_retries=0)
        with pytest.raises(KeyProviderError, match=f"TLS certificate of Azure Key Vault {vault.url} is not trusted"):
            kms.list_keys()
    with pytest.raises(ConfigError, match="cannot be loaded"):
        AzureKeyVault(vault.url, ca_file=tmp_path / "absent.pem")


def test_configuration_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="must be https://"):
        AzureKeyVault("http://myvault.vault.azure.net")
    with pytest.raises(ConfigError, match="key_type 'EC'"):
        AzureKeyVault("https://myvault.vault.azure.net", key_type="EC")
    with pytest.raises(ConfigError, match="must be 2048 or 3072 or 4096 bits"):
        AzureKeyVault("https://myvault.vault.azure.net", key_size=1024)


def test_vault_mode_refuses_oct_keys(vault: Vault) -> None:
    with pytest.raises(KeyProviderError, match="HTTP 400.*Managed HSM"):
        backend(vault, key_type="oct-HSM").create_key("alpha")


def test_oct_hsm_wraps_in_the_hsm_with_a256kw(hsm: Vault) -> None:
    credential = StaticTokenCredential()
    kms = backend(hsm, key_type="oct-HSM", credential=credential)
    kms.create_key("alpha")
    assert set(credential.scopes) == {"https://managedhsm.azure.net/.default"}
    data_key, wrapped = kms.generate_data_key("alpha")
    assert parse_wrapped(wrapped)[0] == "A256KW" and len(parse_wrapped(wrapped)[2]) == 40
    assert kms.unwrap_key(wrapped, "alpha") == data_key
    assert len(sent(hsm, "wrapkey")) == 1 and len(sent(hsm, "unwrapkey")) == 1


def test_sdk_cryptography_client_would_wrap_oct_keys_locally(hsm: Vault) -> None:
    """Why the backend calls wrapkey itself: the SDK wraps with a random local key, nothing reaches the HSM."""
    from azure.keyvault.keys.crypto import KeyWrapAlgorithm

    kms = backend(hsm, key_type="oct-HSM")
    kms.create_key("alpha")
    version = kms.key_client.get_key("alpha").properties.version
    client = kms.key_client.get_cryptography_client("alpha", key_version=version)
    client.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32))
    assert sent(hsm, "wrapkey") == []


def test_secrets_round_trip(vault: Vault) -> None:
    secrets = AzureKeyVaultSecrets(vault.url, credential=StaticTokenCredential(), ca_file=vault.ca_file)
    first = secrets.set_secret("kbs-admin-token", "first value")
    secrets.set_secret("kbs-admin-token", "second value")
    assert secrets.get_secret("kbs-admin-token") == "second value"
    assert secrets.get_secret("kbs-admin-token", version=first) == "first value"
    assert "value" not in repr(secrets)
    with pytest.raises(KeyNotFound, match=f"no secret key-pass in Azure Key Vault {vault.url}"):
        secrets.get_secret("key-pass")
    with pytest.raises(ConfigError, match="invalid secret name"):
        secrets.set_secret("key pass", "x")
    denied = AzureKeyVaultSecrets(vault.url, credential=StaticTokenCredential("wrong"), ca_file=vault.ca_file)
    with pytest.raises(KeyProviderError, match="rejected the credential"):
        denied.get_secret("kbs-admin-token")


# -- Secure Key Release ----------------------------------------------------------------------------------------


def sgx_policy(**overrides: Any) -> Policy:
    document = {"allowed_tees": ["sgx"], "sgx": {"mrenclave": [MRENCLAVE]}, "accepted_tcb_statuses": [None]}
    return Policy.from_dict({**document, **overrides})


def test_translates_an_sgx_policy(authority: FakeAttestationAuthority) -> None:
    policy = sgx_policy(sgx={"mrenclave": [MRENCLAVE, "00" * 32], "mrsigner": [MRSIGNER], "isvprodid": 1,
                             "min_isvsvn": 2})
    assert release_policy_from(policy, authority=authority.issuer + "/", accept_token_lifetime=True) == {
        "version": "1.0.0",
        "anyOf": [{"authority": authority.issuer, "allOf": [
            {"claim": "x-ms-attestation-type", "equals": "sgx"},
            {"claim": "x-ms-sgx-is-debuggable", "equals": False},
            {"anyOf": [{"claim": "x-ms-sgx-mrenclave", "equals": MRENCLAVE},
                       {"claim": "x-ms-sgx-mrenclave", "equals": "00" * 32}]},
            {"claim": "x-ms-sgx-mrsigner", "equals": MRSIGNER},
            {"claim": "x-ms-sgx-product-id", "equals": 1},
            {"claim": "x-ms-sgx-svn", "greaterOrEquals": 2},
        ]}],
    }


def test_translates_snp_and_several_tees_and_regions() -> None:
    policy = Policy.from_dict({"allowed_tees": ["sgx", "snp"], "sgx": {"mrenclave": [MRENCLAVE]},
                               "snp": {"measurement": [MEASUREMENT], "forbidden_policy_bits": ["smt", 18]},
                               "accepted_tcb_statuses": [None]})
    regions = ["https://sharedeus.eus.attest.azure.net", "https://sharedweu.weu.attest.azure.net"]
    document = release_policy_from(policy, authority=regions, compliance_status="azure-compliant-uvm",
                                   accept_token_lifetime=True)
    assert [block["authority"] for block in document["anyOf"]] == regions
    sgx, snp = (branch["allOf"] for branch in document["anyOf"][0]["anyOf"])
    assert sgx[0] == {"claim": "x-ms-attestation-type", "equals": "sgx"}
    assert snp == [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                   {"claim": "x-ms-sevsnpvm-smt-allowed", "equals": False},
                   {"claim": "x-ms-sevsnpvm-migration-allowed", "equals": False},
                   {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": False},
                   {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                   {"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": MEASUREMENT}]


@pytest.mark.parametrize(("overrides", "rule"), [
    ({"accepted_tcb_statuses": ["UpToDate"]}, "accepted_tcb_statuses"),
    ({"forbidden_advisory_ids": ["INTEL-SA-00615"]}, "forbidden_advisory_ids"),
    ({"allowed_tees": ["tdx"], "sgx": None, "tdx": {"rtmr3": ["00" * 48]}}, "tdx"),
    ({"allowed_tees": ["sgx", "simulated"]}, "allowed_tees"),
    ({"allowed_tees": ["snp"], "sgx": None, "snp": {"measurement": [MEASUREMENT], "required_policy_bits": [20]}},
     "snp.required_policy_bits"),
])
def test_rules_maa_cannot_express_are_refused(overrides: dict[str, Any], rule: str) -> None:
    document = {"allowed_tees": ["sgx"], "sgx": {"mrenclave": [MRENCLAVE]}, "accepted_tcb_statuses": [None],
                **overrides}
    policy = Policy.from_dict({k: v for k, v in document.items() if v is not None})
    with pytest.raises(ConfigError, match=rf"policy rule {re.escape(rule)}"):
        release_policy_from(policy, authority="https://sharedeus.eus.attest.azure.net", accept_token_lifetime=True)


def test_evidence_age_needs_an_explicit_choice() -> None:
    with pytest.raises(ConfigError, match="max_evidence_age_seconds.*accept_token_lifetime=True"):
        release_policy_from(sgx_policy(), authority="https://sharedeus.eus.attest.azure.net")


def test_release_policy_evaluation() -> None:
    issuer = "https://a.eus.attest.azure.net"
    claims = {"x-ms-sgx-svn": 3, "x-ms-isolation-tee": {"x-ms-attestation-type": "SevSnpVm"}, "flag": True}

    def check(*conditions: dict[str, Any], selector: str = "allOf", authority: str = issuer) -> None:
        evaluate_release_policy({"version": "1.0.0", "anyOf": [{"authority": authority, selector: list(conditions)}]},
                                claims, issuer=issuer)

    check({"claim": "x-ms-sgx-svn", "greater": 2}, {"claim": "x-ms-sgx-svn", "lessOrEquals": 3},
          {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
          {"claim": "flag", "equals": "true"}, {"claim": "absent", "exists": False},
          {"claim": "x-ms-sgx-svn", "notEquals": 4}, authority=issuer + "/")
    check({"claim": "x-ms-sgx-svn", "less": 1}, {"claim": "flag", "exists": True}, selector="anyOf")
    for failing in ({"claim": "x-ms-sgx-svn", "greaterOrEquals": 4}, {"claim": "absent", "equals": "x"},
                    {"claim": "flag", "notEquals": True}):
        with pytest.raises(PolicyDenied, match=f"claim {failing['claim']}"):
            check(failing)
    with pytest.raises(PolicyDenied, match="not the token issuer"):
        check({"claim": "flag", "exists": True}, authority="https://other.eus.attest.azure.net")


@pytest.mark.parametrize(("document", "problem"), [
    ({"anyOf": []}, "version"),
    ({"version": "1.0.0"}, "exactly one of anyOf or allOf"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allOf": []}]}, "non-empty list"),
    ({"version": "1.0.0", "anyOf": [{"allOf": [{"claim": "c", "equals": 1}]}]}, "needs an authority"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allOf": [{"claim": "c", "matches": 1}]}]},
     "needs exactly one operator"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allOf": [{"claim": "c", "greater": "1"}]}]},
     "compares numbers"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allOf": [{"claim": "c", "exists": 1}]}]},
     "exists takes true or false"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allOf": [{"claim": "c", "equals": None}]}]},
     "string, number or boolean"),
    ({"version": "1.0.0", "anyOf": [{"authority": "https://a.b", "allof": [{"claim": "c", "equals": 1}]}]},
     "unknown key"),
    ({"version": "1.0.0", "anyOf": [{"authority": "http://a.b", "allOf": [{"claim": "c", "equals": 1}]}]},
     "https:// origin"),
])
def test_policy_grammar_errors(document: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        validate_release_policy(document)


def test_release_releases_the_key_to_the_attested_runtime(vault: Vault, authority: FakeAttestationAuthority) -> None:
    kms = backend(vault, key_type="RSA-HSM")
    document = release_policy_from(sgx_policy(), authority=authority.issuer, accept_token_lifetime=True)
    info = create_exportable_key(kms, "skr", document)
    assert info.uri == "azurekv:skr" and info.primary_version == 1
    data_key, wrapped = kms.generate_data_key("skr")  # the exportable key also works as a ppml KEK
    runtime = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    released = release_key(kms, "skr", authority.token(SGX_CLAIMS, runtime_key=runtime.public_key()), runtime)
    assert isinstance(released, rsa.RSAPrivateKey)
    vault_key = kms.key_client.get_key("skr").key
    numbers = released.public_key().public_numbers()
    assert (numbers.n, numbers.e) == (int.from_bytes(vault_key.n, "big"), int.from_bytes(vault_key.e, "big"))
    signature = released.sign(b"released", padding.PKCS1v15(), hashes.SHA256())
    rsa.RSAPublicNumbers(numbers.e, numbers.n).public_key().verify(signature, b"released", padding.PKCS1v15(),
                                                                   hashes.SHA256())
    assert unwrap_data_key(wrapped, released) == data_key  # no vault call needed inside the TEE


def test_release_with_ckm_rsa_aes_key_wrap(vault: Vault, authority: FakeAttestationAuthority) -> None:
    kms = backend(vault, key_type="RSA-HSM")
    create_exportable_key(kms, "skr", release_policy_from(sgx_policy(), authority=authority.issuer,
                                                          accept_token_lifetime=True))
    runtime = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    token = authority.token(SGX_CLAIMS, runtime_key=runtime.public_key())
    assert isinstance(release_key(kms, "skr", token, runtime, algorithm="CKM_RSA_AES_KEY_WRAP"), rsa.RSAPrivateKey)


def test_release_refused_when_the_claims_break_the_policy(vault: Vault, authority: FakeAttestationAuthority) -> None:
    kms = backend(vault, key_type="RSA-HSM")
    create_exportable_key(kms, "skr", release_policy_from(sgx_policy(), authority=authority.issuer,
                                                          accept_token_lifetime=True))
    runtime = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for claims, reason in (({**SGX_CLAIMS, "x-ms-sgx-mrenclave": "00" * 32}, "claim x-ms-sgx-mrenclave"),
                           ({**SGX_CLAIMS, "x-ms-sgx-is-debuggable": True}, "claim x-ms-sgx-is-debuggable")):
        token = authority.token(claims, runtime_key=runtime.public_key())
        with pytest.raises(KeyProviderError, match=rf"refused to release azurekv:skr \(HTTP 403: .*{reason}") as err:
            release_key(kms, "skr", token, runtime)
        assert "keys/release" in str(err.value) and "Key Vault Crypto Service Release User" in str(err.value)
    stranger = FakeAttestationAuthority(authority.issuer)  # same issuer name, a key the vault does not trust
    with pytest.raises(KeyProviderError, match="HTTP 403: The attestation token does not verify"):
        release_key(kms, "skr", stranger.token(SGX_CLAIMS, runtime_key=runtime.public_key()), runtime)
    with pytest.raises(KeyProviderError, match="HTTP 400: .*x-ms-runtime.keys"):
        release_key(kms, "skr", authority.token(SGX_CLAIMS), runtime)
    with pytest.raises(KeyProviderError, match="does not unwrap with this runtime key"):
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        release_key(kms, "skr", authority.token(SGX_CLAIMS, runtime_key=runtime.public_key()), other)


def test_only_exportable_hsm_keys_are_released(vault: Vault, authority: FakeAttestationAuthority) -> None:
    document = release_policy_from(sgx_policy(), authority=authority.issuer, accept_token_lifetime=True)
    with pytest.raises(ConfigError, match="must be HSM-protected"):
        create_exportable_key(backend(vault), "skr", document)
    kms = backend(vault, key_type="RSA-HSM")
    kms.create_key("plain")
    runtime = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(KeyProviderError, match="not exportable"):
        release_key(kms, "plain", authority.token(SGX_CLAIMS, runtime_key=runtime.public_key()), runtime)
    create_exportable_key(kms, "skr", document)
    with pytest.raises(KeyProviderError, match="already exists"):
        create_exportable_key(kms, "skr", document)
    bad = json.loads(json.dumps(document))
    bad["anyOf"][0]["allOf"][2]["equals"] = "not-hex"
    with pytest.raises(ConfigError, match="x-ms-sgx-mrenclave must be 64 hex digits"):
        create_exportable_key(kms, "other", bad)


def test_release_of_an_oct_hsm_key(hsm: Vault, authority: FakeAttestationAuthority) -> None:
    kms = backend(hsm, key_type="oct-HSM")
    create_exportable_key(kms, "skr", release_policy_from(sgx_policy(), authority=authority.issuer,
                                                          accept_token_lifetime=True))
    data_key, wrapped = kms.generate_data_key("skr")
    runtime = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    released = release_key(kms, "skr", authority.token(SGX_CLAIMS, runtime_key=runtime.public_key()), runtime)
    assert isinstance(released, SecretKey) and len(released) == 32
    assert unwrap_data_key(wrapped, released) == data_key


def test_rotation_of_an_exportable_key_keeps_its_policy(vault: Vault, authority: FakeAttestationAuthority) -> None:
    kms = backend(vault, key_type="RSA-HSM")
    create_exportable_key(kms, "skr", release_policy_from(sgx_policy(), authority=authority.issuer,
                                                          accept_token_lifetime=True))
    kms.rotate_key("skr")
    latest = kms.key_client.get_key("skr")
    assert latest.properties.exportable and latest.properties.release_policy is not None


# -- CKM_RSA_AES_KEY_WRAP ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("algorithm", ["CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"])
@pytest.mark.parametrize("size", [16, 32, 1217])
def test_rsa_aes_key_wrap_round_trip(runtime_key: rsa.RSAPrivateKey, algorithm: str, size: int) -> None:
    material = os.urandom(size)
    blob = rsa_aes_key_wrap(runtime_key.public_key(), material, algorithm=algorithm)
    assert len(blob) == 256 + 8 * (-(-size // 8) + 1)
    assert rsa_aes_key_unwrap(blob, runtime_key, algorithm=algorithm) == material


def test_rsa_aes_key_unwrap_is_independent_of_our_wrap(runtime_key: rsa.RSAPrivateKey) -> None:
    """Built by hand from the definition: RSA-OAEP-256(AES key) || AES-KWP (RFC 5649) of the key."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    aes_key, material = os.urandom(32), os.urandom(70)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    blob = runtime_key.public_key().encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)
    assert rsa_aes_key_unwrap(blob, runtime_key) == material


@pytest.mark.parametrize("tamper", ["rsa part", "aes part", "truncated", "extended", "algorithm", "other key"])
def test_rsa_aes_key_unwrap_refuses_tampering(runtime_key: rsa.RSAPrivateKey, tamper: str) -> None:
    blob = bytearray(rsa_aes_key_wrap(runtime_key.public_key(), os.urandom(32)))
    key, algorithm = runtime_key, "RSA_AES_KEY_WRAP_256"
    if tamper == "rsa part":
        blob[10] ^= 1
    elif tamper == "aes part":
        blob[-3] ^= 1
    elif tamper == "truncated":
        del blob[-8:]
    elif tamper == "extended":
        blob += bytes(8)
    elif tamper == "algorithm":
        algorithm = "CKM_RSA_AES_KEY_WRAP"
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(KeyProviderError, match="does not unwrap with this runtime key"):
        rsa_aes_key_unwrap(bytes(blob), key, algorithm=algorithm)
    with pytest.raises(ConfigError, match="unknown key release algorithm"):
        rsa_aes_key_unwrap(bytes(blob), key, algorithm="RSA-OAEP")


# -- the published SKR policies ----------------------------------------------------------------------------------

PROVENANCE = (VECTORS / "PROVENANCE.md").read_text()
VECTOR_FILES = sorted(p.relative_to(VECTORS).as_posix() for p in VECTORS.rglob("*.json"))


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vectors_match_their_provenance(name: str) -> None:
    digest = hashlib.sha256((VECTORS / name).read_bytes()).hexdigest()
    assert f"`{name}`" in PROVENANCE and digest in PROVENANCE


@pytest.mark.parametrize("name", ["cvm-datadisk_public_SKR_policy.json",
                                  "azure-docs-skr-policy-examples/aci_example1_hostdata.json",
                                  "azure-docs-skr-policy-examples/sgx_example1_mrsigner.json",
                                  "azure-docs-skr-policy-examples/sevsnp_example2_compliant_cvm_vmid.json"])
def test_published_policies_validate(name: str) -> None:
    document = validate_release_policy((VECTORS / name).read_bytes())
    assert document["version"] == "1.0.0"


@pytest.mark.parametrize(("name", "problem"), [
    ("azure-docs-skr-policy-examples/sgx_example2_mrsigner_mrenclave.json",
     r"anyOf\[0\]\.allOf\[1\]: claim x-ms-sgx-mrenclave must be 64 hex digits, not '9fa48b1629bg677"),
    ("azure-docs-skr-policy-examples/sgx_example3_mrsigner_mrenclave_svn.json",
     "claim x-ms-sgx-mrenclave must be 64 hex digits"),
    ("azure-docs-skr-policy-examples/sevsnp_example1_compliant_cvm_multi_region.json",
     r"anyOf\[1\]: authority https://sharedeus2.weu2.attest.azure.net: shared MAA instance 'sharedeus2' is in "
     "region eus2, not weu2"),
])
def test_published_policy_mistakes_are_flagged(name: str, problem: str) -> None:
    raw = (VECTORS / name).read_bytes()
    with pytest.raises(ConfigError, match=problem):
        validate_release_policy(raw)
    validate_release_policy(raw, strict=False)  # Key Vault's grammar alone accepts them


def test_cvm_policy_evaluates_against_a_cvm_token() -> None:
    document = validate_release_policy((VECTORS / "cvm-datadisk_public_SKR_policy.json").read_bytes())
    claims = {"x-ms-attestation-type": "azurevm",
              "x-ms-isolation-tee": {"x-ms-attestation-type": "tdxvm", "x-ms-compliance-status": "azure-compliant-cvm"}}
    evaluate_release_policy(document, claims, issuer="https://sharedeus2.eus2.attest.azure.net")
    claims["x-ms-isolation-tee"]["x-ms-compliance-status"] = "azure-compliant-uvm"
    with pytest.raises(PolicyDenied, match="x-ms-isolation-tee.x-ms-compliance-status"):
        evaluate_release_policy(document, claims, issuer="https://sharedeus2.eus2.attest.azure.net")


@pytest.mark.parametrize("name", ["aci_encfs_importkeyconfig.json", "aci_skr_importkeyconfig.json"])
def test_sidecar_claim_templates(name: str) -> None:
    config = json.loads((VECTORS / name).read_bytes())

    def as_policy(claims: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": "1.0.0", "anyOf": [{"authority": "https://sharedeus2.eus2.attest.azure.net",
                                               "allOf": claims}]}

    with pytest.raises(ConfigError, match="x-ms-sevsnpvm-hostdata must be 64 hex digits, not '<hash-digest"):
        validate_release_policy(as_policy(config["claims"][0]))
    filled = [dict(c, equals="ab" * 32) if c["claim"] == "x-ms-sevsnpvm-hostdata" else c for c in config["claims"][0]]
    validate_release_policy(as_policy(filled))


# -- the documentation -----------------------------------------------------------------------------------------


def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "azure-keyvault.md").read_text(), re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/azure-keyvault.md", "exec"), {})  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.strip() == "2 not-a-real-token"
