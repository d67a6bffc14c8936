"""Every exception ppml raises, under one root.

::

    PPMLError
    ├── ConfigError                 bad settings, bad URI, missing option
    ├── InputError                  a missing or unreadable input, an output that exists
    ├── InvalidCiphertext           data that does not decrypt and authenticate
    │   ├── NotEncrypted            no ppml magic where a container was expected
    │   ├── MalformedHeader         a header that does not parse within its bounds
    │   ├── WrongKey                the key commitment does not match the data key
    │   ├── HeaderAuthenticationFailed
    │   ├── SegmentAuthenticationFailed
    │   ├── TruncatedCiphertext     a stream that ends before its final segment
    │   └── ResourceDecryptError    a broker's JWE response that does not decrypt with the TEE's key
    ├── KeyProviderError            the KMS could not create, wrap or unwrap a key
    │   ├── KeyNotFound
    │   ├── KeyDisabled
    │   └── KeystoreError           the local keystore file is missing, corrupt or locked
    │       └── WrongPassphrase
    ├── AttestationError            evidence could not be verified; nothing in it may be trusted
    │   ├── EvidenceInvalid         malformed quote, bad signature, bad chain, expired or revoked cert
    │   ├── CollateralError         CRL / TCB collateral missing, malformed, stale or not signed by Intel
    │   ├── NoTeeError              no TEE evidence source on this machine, and simulation was not allowed
    │   └── PolicyDenied            verified claims that break a rule of the resource's policy
    └── BrokerError                 the key broker refused a request; ``status`` is its HTTP status
        ├── SessionError            no live attestation session
        ├── InvalidRequest          a malformed resource path, policy name or public key (400)
        ├── AuthenticationError     a bad, expired, replayed or untrusted token (401)
        ├── ResourceNotFound        no such resource (404)
        │   └── PolicyNotFound      no such policy (404)
        ├── PolicyInUse             a policy that resources still use (409)
        └── BrokerStoreCorrupt      a stored row fails its integrity check (500)
            └── AuditChainBroken    the audit hash chain breaks at ``seq``

Messages name the file or key they concern, so a user can act on them, and never contain key material.
"""

from __future__ import annotations


class PPMLError(Exception):
    """Root of every ppml error; the CLI turns it into one line and a non-zero exit code."""

    exit_code = 1


class ConfigError(PPMLError):
    """A setting, option or URI is invalid."""

    exit_code = 2


class InputError(PPMLError):
    """An input is missing or unreadable, or an output would be overwritten."""

    exit_code = 3


class InvalidCiphertext(PPMLError):
    """Data failed to decrypt or authenticate. Nothing decrypted from it may be trusted."""

    exit_code = 4


class NotEncrypted(InvalidCiphertext):
    """The data does not start with the ppml container magic."""


class MalformedHeader(InvalidCiphertext):
    """The container header is structurally invalid (bad lengths, unknown version or suite)."""


class WrongKey(InvalidCiphertext):
    """The data key does not match the key commitment stored in the header."""


class HeaderAuthenticationFailed(InvalidCiphertext):
    """The header was modified, or was taken from another file."""


class SegmentAuthenticationFailed(InvalidCiphertext):
    """A segment was modified, reordered, duplicated, or the file was extended or cut."""


class TruncatedCiphertext(InvalidCiphertext):
    """The ciphertext ends before its final segment."""


class KeyProviderError(PPMLError):
    """A key management service failed to create, wrap, unwrap or describe a key."""

    exit_code = 5


class KeyNotFound(KeyProviderError):
    """The named key does not exist in the key management service."""


class KeyDisabled(KeyProviderError):
    """The key (or key version) exists but is disabled."""


class KeystoreError(KeyProviderError):
    """The local keystore file is missing, corrupt, or cannot be locked."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open the keystore."""


class AttestationError(PPMLError):
    """Attestation evidence failed verification; no claim from it may be used to release a key.

    ``reason`` is a short stable code (``"quote_signature"``, ``"pck_chain"``, ``"expired"`` ...) so that a
    key broker can report which rule failed without parsing the message.
    """

    exit_code = 6

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class EvidenceInvalid(AttestationError):
    """The quote itself is malformed, or a signature, binding or certificate in it does not verify."""


class CollateralError(AttestationError):
    """Collateral (CRLs, TCB info) is malformed, out of date or not issued by the pinned root."""


class NoTeeError(AttestationError):
    """No TEE can produce evidence here (or it is not set up for remote attestation); nothing to verify.

    Raised by the evidence collectors, never by a verifier: it means "cannot attest", not "attested badly".
    """

    def __init__(self, message: str, *, reason: str = "no_tee") -> None:
        super().__init__(message, reason=reason)


class PolicyDenied(AttestationError):
    """Verified claims do not satisfy the resource's policy; ``rule`` names the first rule that failed.

    ``rule`` is the policy key that denied (``"allowed_tees"``, ``"mrenclave"``, ``"max_evidence_age_seconds"``
    ...), so a key broker can report it without parsing the message. ``reason`` is ``"policy"``.
    """

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(f"rule {rule}: {message}", reason="policy")
        self.rule = rule


class BrokerError(PPMLError):
    """The key broker refused a request, or could not be reached; ``status`` is the HTTP status it maps to."""

    exit_code = 7

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SessionError(BrokerError):
    """No live attestation session: missing, unknown, expired, or its nonce already used."""


class ResourceDecryptError(InvalidCiphertext):
    """A JWE-wrapped broker response does not decrypt with the TEE's private key, or was modified."""


class InvalidRequest(BrokerError):
    """A malformed resource path, policy name or public key (JWK) was sent to the broker (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


class AuthenticationError(BrokerError):
    """A token is malformed, expired, replayed, for another audience, or not signed by a trusted key (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401)


class ResourceNotFound(BrokerError):
    """The broker holds no resource under that path (HTTP 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


class PolicyNotFound(ResourceNotFound):
    """The broker holds no policy under that name (HTTP 404)."""


class PolicyInUse(BrokerError):
    """A policy cannot be deleted while a resource still uses it (HTTP 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=409)


class BrokerStoreCorrupt(BrokerError):
    """A stored resource or audit record fails its integrity check: the database was modified (HTTP 500)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=500)


class AuditChainBroken(BrokerStoreCorrupt):
    """The audit log's hash chain breaks at record ``seq``: a record was edited, removed or inserted."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq
