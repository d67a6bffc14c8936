"""Azure Key Vault Secure Key Release (SKR): release policies, exportable keys, and unwrapping what Key Vault releases.

A Key Vault key created ``exportable`` with a *release policy* is handed out, wrapped, to whoever presents an
attestation token (from Microsoft Azure Attestation, MAA) whose claims satisfy the policy. The key is wrapped to
the RSA public key the TEE put in its runtime data (``x-ms-runtime.keys``), so only that TEE can open it.

Release policy grammar (https://learn.microsoft.com/azure/key-vault/keys/policy-grammar)::

    policy    = {"version": "1.0.0", "anyOf": [authority, ...]}
    authority = {"authority": "https://<maa instance>", "anyOf" | "allOf": [condition, ...]}
    condition = {"claim": "<name>", <operator>: <string | number | boolean>}
              | {"anyOf": [condition, ...]} | {"allOf": [condition, ...]}
    operator  = equals | notEquals | less | lessOrEquals | greater | greaterOrEquals | exists

Claim names may be dotted paths into nested claims (``x-ms-isolation-tee.x-ms-attestation-type``). Microsoft's own
examples also use ``allOf`` at the top level, which is accepted here and means every authority block must hold.

Released key format: ``CKM_RSA_AES_KEY_WRAP`` (PKCS #11 v2.40 §2.1.21) and Key Vault's ``RSA_AES_KEY_WRAP_256`` /
``_384``: RSA-OAEP (SHA-1 / SHA-256 / SHA-384, MGF1 with the same hash) of a fresh AES-256 key, followed by AES key
wrap with padding (RFC 5649) of the target key: PKCS #8 DER for RSA keys, the raw bytes for ``oct`` keys. ppml asks
for ``RSA_AES_KEY_WRAP_256`` (plain ``CKM_RSA_AES_KEY_WRAP`` uses SHA-1 in its OAEP step).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from ppml._b64 import b64url, unb64url
from ppml._json import DuplicateKey, strict_loads
from ppml._secrets import SecretKey
from ppml.errors import ConfigError, KeyProviderError, PolicyDenied

if TYPE_CHECKING:
    from ppml.attestation.policy import Policy
    from ppml.kms._base import KeyInfo
    from ppml.kms.azurekv import AzureKeyVault

__all__ = [
    "OPERATORS",
    "RELEASE_ALGORITHMS",
    "RELEASE_POLICY_VERSION",
    "create_exportable_key",
    "evaluate_release_policy",
    "release_key",
    "release_policy_from",
    "rsa_aes_key_unwrap",
    "rsa_aes_key_wrap",
    "runtime_key_jwk",
    "unwrap_data_key",
    "validate_release_policy",
]

RELEASE_POLICY_VERSION = "1.0.0"
CONTENT_TYPE = "application/json; charset=utf-8"
OPERATORS = ("equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists")
_ORDERING = {"less": lambda a, b: a < b, "lessOrEquals": lambda a, b: a <= b,
             "greater": lambda a, b: a > b, "greaterOrEquals": lambda a, b: a >= b}
# Key Vault's names for the released-key wrapping; the hash is OAEP's (and MGF1's) hash.
RELEASE_ALGORITHMS: Mapping[str, type[hashes.HashAlgorithm]] = {
    "CKM_RSA_AES_KEY_WRAP": hashes.SHA1,
    "RSA_AES_KEY_WRAP_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_384": hashes.SHA384,
}
DEFAULT_RELEASE_ALGORITHM = "RSA_AES_KEY_WRAP_256"
RUNTIME_KEY_ID = "TpmEphemeralEncryptionKey"  # the kid Azure's guest attestation uses for the runtime key

# Formats of well-known MAA claims, checked by the strict validator (a typo in a measurement never matches, so it
# would silently make a key unreleasable): name -> ("hex", bytes) | ("bool", 0) | ("int", 0).
_CLAIM_FORMATS: Mapping[str, tuple[str, int]] = {
    "x-ms-sgx-mrenclave": ("hex", 32), "x-ms-sgx-mrsigner": ("hex", 32),
    "x-ms-sgx-is-debuggable": ("bool", 0), "x-ms-sgx-product-id": ("int", 0), "x-ms-sgx-svn": ("int", 0),
    "x-ms-sevsnpvm-launchmeasurement": ("hex", 48), "x-ms-sevsnpvm-hostdata": ("hex", 32),
    "x-ms-sevsnpvm-idkeydigest": ("hex", 48), "x-ms-sevsnpvm-authorkeydigest": ("hex", 48),
    "x-ms-sevsnpvm-is-debuggable": ("bool", 0), "x-ms-sevsnpvm-smt-allowed": ("bool", 0),
    "x-ms-sevsnpvm-migration-allowed": ("bool", 0), "x-ms-sevsnpvm-vmpl": ("int", 0),
    "x-ms-sevsnpvm-guestsvn": ("int", 0), "x-ms-sevsnpvm-bootloader-svn": ("int", 0),
    "x-ms-sevsnpvm-tee-svn": ("int", 0), "x-ms-sevsnpvm-snpfw-svn": ("int", 0),
    "x-ms-sevsnpvm-microcode-svn": ("int", 0),
}
_NESTED_PREFIX = "x-ms-isolation-tee."
_SHARED_MAA = re.compile(r"shared(?P<instance_region>[a-z0-9]+)\.(?P<region>[a-z0-9]+)\.attest\.azure\.net")
_MISSING = object()


# -- grammar ---------------------------------------------------------------------------------------------------


def _error(where: str, message: str) -> ConfigError:
    return ConfigError(f"release policy {where}: {message}" if where else f"release policy: {message}")


def _load(document: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    if isinstance(document, str | bytes):
        try:
            document = strict_loads(document)
        except DuplicateKey as exc:
            raise _error("", f"key {exc.key!r} is given more than once") from None
        except ValueError as exc:
            raise _error("", f"not valid JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise _error("", "must be a JSON object")
    return document


def _selector(node: Mapping[str, Any], where: str, extra: frozenset[str]) -> tuple[str, list[Any]]:
    """The one ``anyOf`` / ``allOf`` of ``node`` and its non-empty list; unknown keys are errors (a typo weakens)."""
    unknown = sorted(set(node) - extra - {"anyOf", "allOf"})
    if unknown:
        raise _error(where, f"unknown key(s) {unknown}")
    chosen = [k for k in ("anyOf", "allOf") if k in node]
    if len(chosen) != 1:
        raise _error(where, "needs exactly one of anyOf or allOf")
    items = node[chosen[0]]
    if not isinstance(items, list) or not items:
        raise _error(f"{where}.{chosen[0]}".lstrip("."), "must be a non-empty list")
    return chosen[0], items


def validate_release_policy(document: Mapping[str, Any] | str | bytes, *, strict: bool = True) -> dict[str, Any]:
    """Check a release policy against the documented grammar; return it as a dict or raise ``ConfigError``.

    ``strict`` (the default) also checks what Key Vault cannot know but a typo would break: well-known MAA claims
    have the right format (a 64-hex-digit MRENCLAVE, a boolean ``is-debuggable``), and an authority is an
    ``https://`` origin whose shared-MAA instance name matches its region (``sharedeus2.eus2``).
    """
    doc = _load(document)
    if doc.get("version") != RELEASE_POLICY_VERSION:
        raise _error("version", f"must be {RELEASE_POLICY_VERSION!r}, not {doc.get('version')!r}")
    selector, authorities = _selector(doc, "", frozenset({"version"}))
    for index, block in enumerate(authorities):
        where = f"{selector}[{index}]"
        if not isinstance(block, Mapping):
            raise _error(where, "must be an object with an authority")
        authority = block.get("authority")
        if not isinstance(authority, str) or not authority:
            raise _error(where, "needs an authority (the MAA instance URL)")
        if strict:
            _check_authority(authority, where)
        inner, conditions = _selector(block, where, frozenset({"authority"}))
        for position, condition in enumerate(conditions):
            _check_condition(condition, f"{where}.{inner}[{position}]", strict)
    return dict(doc)


def _check_condition(node: object, where: str, strict: bool) -> None:
    if not isinstance(node, Mapping):
        raise _error(where, "a condition must be an object")
    if "claim" not in node:
        inner, conditions = _selector(node, where, frozenset())
        for position, condition in enumerate(conditions):
            _check_condition(condition, f"{where}.{inner}[{position}]", strict)
        return
    claim = node["claim"]
    if not isinstance(claim, str) or not claim:
        raise _error(where, "claim must be a non-empty string")
    operators = [k for k in node if k != "claim"]
    if len(operators) != 1 or operators[0] not in OPERATORS:
        raise _error(where, f"claim {claim}: needs exactly one operator of {', '.join(OPERATORS)}, got {operators}")
    operator, value = operators[0], node[operators[0]]
    if value is None or isinstance(value, Mapping | list):
        raise _error(where, f"claim {claim}: {operator} needs a string, number or boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(where, f"claim {claim}: {operator} needs a finite number")
    if operator == "exists" and not isinstance(value, bool):
        raise _error(where, f"claim {claim}: exists takes true or false")
    if operator in _ORDERING and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _error(where, f"claim {claim}: {operator} compares numbers, not {value!r}")
    if strict and operator != "exists":
        _check_claim_value(claim, value, where)


def _check_claim_value(claim: str, value: object, where: str) -> None:
    kind, size = _CLAIM_FORMATS.get(claim.removeprefix(_NESTED_PREFIX), ("", 0))
    if kind == "hex":
        ok = isinstance(value, str) and len(value) == 2 * size and re.fullmatch(r"[0-9a-fA-F]*", value) is not None
        if not ok:
            raise _error(where, f"claim {claim} must be {2 * size} hex digits, not {value!r}")
    elif kind == "bool" and not (isinstance(value, bool) or value in ("true", "false")):
        raise _error(where, f"claim {claim} is a boolean, not {value!r}")
    elif kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)
                                or isinstance(value, str) and value.isdigit()):
        raise _error(where, f"claim {claim} is an integer, not {value!r}")


def _check_authority(authority: str, where: str) -> None:
    match = re.fullmatch(r"https://(?P<host>[A-Za-z0-9.-]+(:\d+)?)/?", authority)
    if match is None:
        raise _error(where, f"authority {authority!r} must be an https:// origin (the MAA instance URL)")
    shared = _SHARED_MAA.fullmatch(match["host"].lower())
    if shared and shared["instance_region"] != shared["region"]:
        raise _error(where, f"authority {authority}: shared MAA instance 'shared{shared['instance_region']}' is in "
                            f"region {shared['instance_region']}, not {shared['region']}")


# -- evaluation (what Key Vault does; the emulator and offline pre-checks use it) ---------------------------------


def _issuer(value: str) -> str:
    return value.rstrip("/").lower()


def _claim(claims: Mapping[str, Any], name: str) -> Any:  # noqa: ANN401 - any JSON value
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return float(value)
    return None


def _holds(node: Mapping[str, Any], claims: Mapping[str, Any]) -> str | None:
    """``None`` when the condition holds, else why not (claim values are shortened, never needed to act)."""
    if "claim" not in node:
        selector = "anyOf" if "anyOf" in node else "allOf"
        reasons = [_holds(child, claims) for child in node[selector]]
        failed = [r for r in reasons if r is not None]
        if selector == "allOf":
            return failed[0] if failed else None
        return None if len(failed) < len(reasons) else "none of: " + "; ".join(failed)
    name = node["claim"]
    operator = next(k for k in node if k != "claim")
    expected, claimed = node[operator], _claim(claims, name)
    if operator == "exists":
        present = claimed is not _MISSING
        return None if present == expected else f"claim {name} is {'present' if present else 'absent'}"
    if claimed is _MISSING:
        return f"claim {name} is absent"
    if operator in ("equals", "notEquals"):
        # Azure Policy semantics, which SKR policies follow: string comparison ignores case; true == "true".
        same = _text(claimed) == _text(expected)
        return None if same == (operator == "equals") else f"claim {name} is {_short(claimed)}, {operator} " \
                                                           f"{_short(expected)} fails"
    left, right = _number(claimed), _number(expected)
    if left is None or right is None or not _ORDERING[operator](left, right):
        return f"claim {name} is {_short(claimed)}, {operator} {_short(expected)} fails"
    return None


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else f"{text[:14]}…{text[-6:]}"


def evaluate_release_policy(document: Mapping[str, Any], claims: Mapping[str, Any], *, issuer: str) -> None:
    """Raise ``PolicyDenied`` (rule ``release_policy``) unless *verified* ``claims`` from ``issuer`` satisfy it.

    Only the authority blocks naming ``issuer`` (trailing ``/`` ignored) are evaluated against the claims.
    """
    selector = "anyOf" if "anyOf" in document else "allOf"
    reasons = []
    for block in document[selector]:
        if _issuer(block["authority"]) != _issuer(issuer):
            reasons.append(f"authority {block['authority']} is not the token issuer {issuer}")
            continue
        inner = "anyOf" if "anyOf" in block else "allOf"
        reason = _holds({inner: block[inner]}, claims)
        if reason is None and selector == "anyOf":
            return
        if reason is not None:
            reasons.append(reason)
    if selector == "allOf" and not reasons:
        return
    mine = [r for r in reasons if not r.startswith("authority ")] or reasons
    raise PolicyDenied("the attestation token does not satisfy the key release policy: " + "; ".join(mine),
                       rule="release_policy")


# -- translation from a ppml policy --------------------------------------------------------------------------------

_SNP_POLICY_CLAIMS = {16: "x-ms-sevsnpvm-smt-allowed", 18: "x-ms-sevsnpvm-migration-allowed",
                      19: "x-ms-sevsnpvm-is-debuggable"}


def _any(claim: str, values: Sequence[str]) -> dict[str, Any]:
    conditions = [{"claim": claim, "equals": value.lower()} for value in values]
    return conditions[0] if len(conditions) == 1 else {"anyOf": conditions}


def _cannot(rule: str, why: str) -> ConfigError:
    return ConfigError(f"policy rule {rule} cannot be expressed as a Key Vault release policy: {why}")


def release_policy_from(policy: Policy, *, authority: str | Sequence[str], compliance_status: str | None = None,
                        accept_token_lifetime: bool = False) -> dict[str, Any]:
    """Translate a ppml :class:`~ppml.attestation.policy.Policy` into a release policy trusting ``authority``.

    Every rule is translated or refused with ``ConfigError`` naming it; nothing is dropped silently. MAA states no
    TCB status or advisories (it applies its own TCB baseline), so ``accepted_tcb_statuses`` must include ``null``
    and ``forbidden_advisory_ids`` must be empty. Key Vault checks only the token's expiry, never the age of the
    evidence behind it: pass ``accept_token_lifetime=True`` to accept that in place of ``max_evidence_age_seconds``.
    ``compliance_status`` (e.g. ``azure-compliant-uvm``) adds an ``x-ms-compliance-status`` condition to SNP.
    """
    authorities = [authority] if isinstance(authority, str) else list(authority)
    if not authorities:
        raise ConfigError("release_policy_from needs at least one MAA authority URL")
    if None not in policy.accepted_tcb_statuses:
        raise _cannot("accepted_tcb_statuses", "MAA tokens carry no TCB status (MAA enforces its own baseline); "
                                               "list null among the accepted statuses")
    if policy.forbidden_advisory_ids:
        raise _cannot("forbidden_advisory_ids", "MAA tokens list no Intel or AMD advisories")
    if not accept_token_lifetime:
        raise _cannot("max_evidence_age_seconds", "Key Vault checks only the MAA token's expiry; pass "
                                                  "accept_token_lifetime=True to accept that instead")
    branches = []
    for tee in policy.allowed_tees:
        if tee == "sgx":
            branches.append(_sgx_conditions(policy))
        elif tee == "snp":
            branches.append(_snp_conditions(policy, compliance_status))
        elif tee == "tdx":
            raise _cannot("tdx", "MAA's TDX claims are not mapped to MRTD/RTMR reference values by ppml; use the ppml "
                                 "key broker for TDX")
        else:
            raise _cannot("allowed_tees", f"MAA never attests a {tee!r} TEE")
    body = {"allOf": branches[0]} if len(branches) == 1 else {"anyOf": [{"allOf": b} for b in branches]}
    document = {"version": RELEASE_POLICY_VERSION, "anyOf": [{"authority": a.rstrip("/"), **body}
                                                           for a in authorities]}
    return validate_release_policy(document)


def _sgx_conditions(policy: Policy) -> list[dict[str, Any]]:
    ref = policy.sgx
    assert ref is not None  # Policy guarantees reference values for every allowed TEE
    conditions: list[dict[str, Any]] = [{"claim": "x-ms-attestation-type", "equals": "sgx"}]
    if not policy.allow_debug:
        conditions.append({"claim": "x-ms-sgx-is-debuggable", "equals": False})
    if ref.mrenclave:
        conditions.append(_any("x-ms-sgx-mrenclave", ref.mrenclave))
    if ref.mrsigner:
        conditions += [_any("x-ms-sgx-mrsigner", ref.mrsigner),
                       {"claim": "x-ms-sgx-product-id", "equals": ref.isvprodid},
                       {"claim": "x-ms-sgx-svn", "greaterOrEquals": ref.min_isvsvn}]
    return conditions


def _snp_conditions(policy: Policy, compliance_status: str | None) -> list[dict[str, Any]]:
    ref = policy.snp
    assert ref is not None
    unmapped = sorted(set(ref.required_policy_bits + ref.forbidden_policy_bits) - set(_SNP_POLICY_CLAIMS))
    if unmapped:
        raise _cannot("snp.required_policy_bits/forbidden_policy_bits",
                      f"MAA reports only the SMT, MIGRATE_MA and DEBUG guest policy bits, not bit(s) {unmapped}")
    conditions: list[dict[str, Any]] = [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}]
    wanted = {bit: True for bit in ref.required_policy_bits} | {bit: False for bit in ref.forbidden_policy_bits}
    if not policy.allow_debug:
        if wanted.get(19):
            raise ConfigError("policy rule snp.required_policy_bits requires the DEBUG bit but allow_debug is false")
        wanted[19] = False
    for bit, value in sorted(wanted.items()):
        conditions.append({"claim": _SNP_POLICY_CLAIMS[bit], "equals": value})
    if compliance_status:
        conditions.append({"claim": "x-ms-compliance-status", "equals": compliance_status})
    conditions.append(_any("x-ms-sevsnpvm-launchmeasurement", ref.measurement))
    return conditions


# -- the released key ---------------------------------------------------------------------------------------------


def runtime_key_jwk(public_key: rsa.RSAPublicKey, *, kid: str = RUNTIME_KEY_ID) -> dict[str, Any]:
    """The JWK a TEE puts in its MAA runtime data (``{"keys": [jwk]}``) so Key Vault wraps released keys to it."""
    numbers = public_key.public_numbers()

    def _int(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kid": kid, "kty": "RSA", "key_ops": ["encrypt"], "e": _int(numbers.e), "n": _int(numbers.n)}


def _oaep(algorithm: str) -> padding.OAEP:
    if algorithm not in RELEASE_ALGORITHMS:
        raise ConfigError(f"unknown key release algorithm {algorithm!r} (known: {', '.join(RELEASE_ALGORITHMS)})")
    digest = RELEASE_ALGORITHMS[algorithm]
    return padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)


def rsa_aes_key_wrap(public_key: rsa.RSAPublicKey, material: bytes, *,
                     algorithm: str = DEFAULT_RELEASE_ALGORITHM) -> bytes:
    """Wrap ``material`` to ``public_key`` the way Key Vault wraps a released key (the emulator and tests use it)."""
    aes_key = os.urandom(32)
    return public_key.encrypt(aes_key, _oaep(algorithm)) + aes_key_wrap_with_padding(aes_key, material)


def rsa_aes_key_unwrap(blob: bytes, private_key: rsa.RSAPrivateKey, *,
                       algorithm: str = DEFAULT_RELEASE_ALGORITHM) -> bytes:
    """Open a ``CKM_RSA_AES_KEY_WRAP``-family blob with the runtime private key; any failure is one opaque error."""
    oaep = _oaep(algorithm)
    head = (private_key.key_size + 7) // 8
    opaque = KeyProviderError(f"the released key does not unwrap with this runtime key ({algorithm}): it was "
                              "wrapped to another key, with another algorithm, or modified")
    if len(blob) < head + 16 or (len(blob) - head) % 8:
        raise opaque
    try:
        aes_key = private_key.decrypt(blob[:head], oaep)
        if len(aes_key) not in (16, 24, 32):
            raise opaque
        return aes_key_unwrap_with_padding(aes_key, blob[head:])
    except (ValueError, InvalidUnwrap):
        raise opaque from None


def unwrap_data_key(wrapped: bytes, released: rsa.RSAPrivateKey | SecretKey) -> SecretKey:
    """Unwrap an ``azurekv:`` wrapped data key locally with that key's released material (no Key Vault call)."""
    from ppml.kms.azurekv import ALG_A256KW, ALG_RSA_OAEP_256, parse_wrapped

    alg, _, ciphertext = parse_wrapped(wrapped)
    try:
        if alg == ALG_RSA_OAEP_256 and isinstance(released, rsa.RSAPrivateKey):
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
            return SecretKey(released.decrypt(ciphertext, oaep))
        if alg == ALG_A256KW and isinstance(released, SecretKey):
            return SecretKey(aes_key_unwrap(released.insecure_bytes(), ciphertext))
    except (ValueError, InvalidUnwrap):
        pass
    raise KeyProviderError("the wrapped data key does not unwrap with the released key")


def create_exportable_key(kv: AzureKeyVault, name: str, release_policy: Mapping[str, Any]) -> KeyInfo:
    """Create HSM key ``name`` in ``kv``, exportable under ``release_policy`` (validated strictly first)."""
    return kv.create_exportable_key(name, validate_release_policy(release_policy))


def release_key(kv: AzureKeyVault, name: str, maa_token: str, runtime_private_key: rsa.RSAPrivateKey, *,
                version: str | None = None, algorithm: str = DEFAULT_RELEASE_ALGORITHM,
                ) -> rsa.RSAPrivateKey | SecretKey:
    """Release key ``name`` to the TEE holding ``runtime_private_key`` (whose public key is in ``maa_token``).

    Key Vault checks the token against the key's release policy and answers with a JWS whose payload holds the key
    wrapped to the runtime key. The JWS arrives over TLS from the vault; its own signature is not checked here.
    RSA keys come back as a private key whose public half is checked against the one Key Vault reports.
    """
    _oaep(algorithm)  # an unknown algorithm is a ConfigError before any request
    payload = _jws_payload(kv.release(name, maa_token, version=version, algorithm=algorithm), kv.key_uri(name))
    try:
        key = payload["response"]["key"]["key"]
        envelope = json.loads(unb64url(key["key_hsm"]))
        blob = unb64url(envelope["ciphertext"])
        used = payload.get("request", {}).get("enc") or algorithm
    except (KeyError, TypeError, ValueError):
        raise KeyProviderError(f"Azure Key Vault {kv.vault_url} answered the release of {kv.key_uri(name)} with "
                               "an unexpected payload (no response.key.key.key_hsm ciphertext)") from None
    material = rsa_aes_key_unwrap(blob, runtime_private_key, algorithm=used)
    if str(key.get("kty", "")).startswith("oct"):
        return SecretKey(material)
    private = serialization.load_der_private_key(material, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise KeyProviderError(f"the key released from {kv.key_uri(name)} is not an RSA private key")
    reported = (int.from_bytes(unb64url(key.get("n", "")), "big"), int.from_bytes(unb64url(key.get("e", "")), "big"))
    numbers = private.public_key().public_numbers()
    if reported != (numbers.n, numbers.e):
        raise KeyProviderError(f"the key released from {kv.key_uri(name)} does not match its public key")
    return private


def _jws_payload(token: str, uri: str) -> Mapping[str, Any]:
    parts = token.split(".") if isinstance(token, str) else []
    try:
        if len(parts) != 3:
            raise ValueError("not a compact JWS")
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        raise KeyProviderError(f"the release response for {uri} is not a JWS") from None
    if not isinstance(payload, Mapping):
        raise KeyProviderError(f"the release response for {uri} is not a JSON object")
    return payload
