"""The ``azurekv:`` backend: primary keys in Azure Key Vault or Managed HSM, used through the official Azure SDK.

Key ``azurekv:NAME`` is the Key Vault key ``NAME``; each ppml rotation is a new Key Vault version of it. Data keys
are wrapped in the vault with RSA-OAEP-256 (``RSA`` and ``RSA-HSM`` keys) or A256KW (``oct-HSM`` keys, Managed
HSM). A wrapped data key must be unwrapped by the same key version, so the output records it::

    offset  size  field
    0       4     magic b"ppKV"
    4       1     format version (1)
    5       1     algorithm: 1 = RSA-OAEP-256, 2 = A256KW
    6       1     n = length of the Key Vault key version id (1..64)
    7       n     key version id (ASCII letters and digits)
    7+n     2     m = length of the wrapped key, big-endian
    9+n     m     the wrapped key, up to the end

ppml's version numbers (1, 2, ...) are the versions in creation order; each version ppml creates is also tagged
``ppml-version``. Wrap and unwrap call the vault's ``wrapkey`` / ``unwrapkey`` operations through the key client's
pipeline (``KeyClient.send_request``): the SDK's ``CryptographyClient`` would wrap locally whenever it holds key
material, and for an ``oct-HSM`` key, whose ``k`` Key Vault never returns, it falls back to a random local key.

Options are plain strings and numbers (a Spark executor rebuilds the backend from the key ring's options);
credentials are never options: the default is ``DefaultAzureCredential`` (managed identity, workload identity,
environment, ``az login``), optionally pinned to a user-assigned identity by ``managed_identity_client_id``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlparse

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient, KeyProperties, KeyReleasePolicy, KeyVaultKey

from ppml._b64 import b64url, unb64url
from ppml._secrets import SecretKey
from ppml._tls import tls_context
from ppml.errors import ConfigError, KeyDisabled, KeyNotFound, KeyProviderError, PPMLError
from ppml.kms._base import DATA_KEY_SIZE, KeyInfo, KeyManagementService, KeyVersion, validate_key_name

__all__ = ["ALG_A256KW", "ALG_RSA_OAEP_256", "KEY_TYPES", "AzureKeyVault", "pack_wrapped", "parse_wrapped"]

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_TYPES = ("RSA", "RSA-HSM", "oct-HSM")
RSA_KEY_SIZES = (2048, 3072, 4096)
OCT_KEY_SIZE = 256
ALG_RSA_OAEP_256 = "RSA-OAEP-256"
ALG_A256KW = "A256KW"
VERSION_TAG = "ppml-version"
MAGIC = b"ppKV"
FORMAT_VERSION = 1
_ALG_IDS = {ALG_RSA_OAEP_256: 1, ALG_A256KW: 2}
_ALG_NAMES = {number: name for name, number in _ALG_IDS.items()}
_KV_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_KV_VERSION = re.compile(rb"[0-9A-Za-z]{1,64}")
_WRAP_OPS = ["wrapKey", "unwrapKey"]
# The RBAC role that grants each data-plane permission (Key Vault; Managed HSM has "Managed HSM ..." roles).
_ROLES = {"keys/create": "Key Vault Crypto Officer", "keys/update": "Key Vault Crypto Officer",
          "keys/release": "Key Vault Crypto Service Release User", "secrets/set": "Key Vault Secrets Officer",
          "secrets/get": "Key Vault Secrets User"}


# -- the wrapped-key layout ----------------------------------------------------------------------------------------


def pack_wrapped(algorithm: str, version: str, wrapped: bytes) -> bytes:
    """Prefix ``wrapped`` with the header naming the algorithm and the Key Vault key version that made it."""
    version_bytes = version.encode("ascii")
    if not _KV_VERSION.fullmatch(version_bytes) or len(wrapped) > 0xFFFF:
        raise KeyProviderError(f"cannot record Key Vault key version {version!r} in a wrapped key")
    return (MAGIC + bytes([FORMAT_VERSION, _ALG_IDS[algorithm], len(version_bytes)]) + version_bytes
            + struct.pack(">H", len(wrapped)) + wrapped)


def parse_wrapped(data: bytes) -> tuple[str, str, bytes]:
    """``(algorithm, key version, wrapped key)`` of an ``azurekv:`` wrapped data key; bounds-checked before slicing."""
    bad = KeyProviderError("not an azurekv: wrapped data key (bad header): it was wrapped by another backend, or "
                           "modified")
    if len(data) < 10 or data[:4] != MAGIC or data[4] != FORMAT_VERSION or data[5] not in _ALG_NAMES:
        raise bad
    n = data[6]
    if not 1 <= n <= 64 or len(data) < 9 + n:
        raise bad
    version = data[7:7 + n]
    (m,) = struct.unpack(">H", data[7 + n:9 + n])
    if not _KV_VERSION.fullmatch(version) or m == 0 or len(data) != 9 + n + m:
        raise bad
    return _ALG_NAMES[data[5]], version.decode("ascii"), data[9 + n:]


# -- shared with the secrets client ------------------------------------------------------------------------------


def check_vault_url(vault_url: object) -> str:
    """``https://<vault>.vault.azure.net`` (or a Managed HSM URL) without a trailing slash; else ``ConfigError``."""
    if not isinstance(vault_url, str) or not vault_url.startswith("https://") or not urlparse(vault_url).hostname:
        raise ConfigError(f"Azure Key Vault URL {vault_url!r} must be https://<vault>.vault.azure.net (or a Managed "
                          "HSM https://<hsm>.managedhsm.azure.net)")
    return vault_url.rstrip("/")


def client_options(vault_url: str, ca_file: str | os.PathLike[str] | None, max_retries: int) -> dict[str, Any]:
    """Azure SDK client options: TLS always verified (``ca_file`` for a private CA), bounded retries.

    Key Vault's challenge names the resource (``vault.azure.net``) the token is for, and the SDK refuses a
    challenge whose resource is not the vault's domain. A loopback URL (the ppml emulator) has no such domain, so
    for loopback hosts only that check is skipped; the token then never leaves this machine.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"Azure Key Vault {vault_url}: max_retries must be a non-negative integer")
    options: dict[str, Any] = {"retry_total": max_retries}
    if ca_file is not None:
        tls_context(ca_file, what=f"Azure Key Vault {vault_url}")  # a missing or bad bundle fails here, by name
        options["connection_verify"] = os.fspath(ca_file)
    if _is_loopback(urlparse(vault_url).hostname or ""):
        options["verify_challenge_resource"] = False
    return options


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_credential(managed_identity_client_id: str | None) -> Any:  # noqa: ANN401 - a TokenCredential
    """``DefaultAzureCredential``, imported on first use so that ``import ppml`` never loads azure-identity."""
    from azure.identity import DefaultAzureCredential

    if managed_identity_client_id:
        return DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    return DefaultAzureCredential()


def vault_message(response: Any) -> str:  # noqa: ANN401 - an azure.core HttpResponse
    """Key Vault's ``error.message`` from an error response, else its status line."""
    try:
        message = response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - any unparsable body
        message = None
    return str(message) if message else f"HTTP {response.status_code}"


def refusal(status: int | None, message: str, *, vault: str, action: str, permission: str,
            missing: str) -> KeyProviderError:
    """One clear error for a Key Vault answer other than success, naming the vault and what to grant."""
    role = _ROLES.get(permission, "Key Vault Crypto User")
    if status == 404:
        return KeyNotFound(f"{missing} in Azure Key Vault {vault}")
    if status == 401:
        return KeyProviderError(f"Azure Key Vault {vault} rejected the credential while trying to {action} "
                                f"(HTTP 401: {message})")
    if status == 403:
        return KeyProviderError(f"Azure Key Vault {vault} refused to {action} (HTTP 403: {message}); the identity "
                                f"needs {permission} (RBAC role {role}, or an access policy granting it)")
    if status == 409:
        return KeyProviderError(f"Azure Key Vault {vault} cannot {action}: {message} (a deleted object of that "
                                "name may need purging or recovering)")
    return KeyProviderError(f"Azure Key Vault {vault} could not {action} (HTTP {status}: {message})")


def call_azure(call: Callable[[], T], *, vault: str, action: str, permission: str, missing: str) -> T:
    """Run one SDK call; turn every Azure error into a ``KeyProviderError`` that says what to do about it."""
    try:
        return call()
    except HttpResponseError as error:  # includes ResourceNotFoundError and ClientAuthenticationError
        if error.status_code is None:  # a credential that could not get a token: nothing was sent
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise KeyProviderError(f"no Azure credential could get a token for Key Vault {vault} to {action}: "
                                   f"{first}") from error
        inner = getattr(error, "error", None)
        message = getattr(inner, "message", None) or (error.message or "").splitlines()[0]
        raise refusal(error.status_code, message, vault=vault, action=action, permission=permission,
                      missing=missing) from error
    except (ServiceRequestError, ServiceResponseError) as error:
        if "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate verify failed" in str(error):
            raise KeyProviderError(f"the TLS certificate of Azure Key Vault {vault} is not trusted: {action} was not "
                                   "attempted (give ca_file for a private CA)") from error
        raise KeyProviderError(f"Azure Key Vault {vault} is unreachable, cannot {action}: {error}") from error


# -- the backend -------------------------------------------------------------------------------------------------


def _kv_name(name: str) -> str:
    validate_key_name(name)
    if not _KV_NAME.fullmatch(name):
        raise ConfigError(f"invalid key name {name!r} for Azure Key Vault: use letters, digits and '-' only")
    return name


def _kty(key: KeyVaultKey) -> str:
    """The key type as Key Vault spells it (the SDK gives an enum member, or a string for types it does not know)."""
    return str(getattr(key.key_type, "value", key.key_type))


def _tag_number(properties: KeyProperties) -> int:
    value = (properties.tags or {}).get(VERSION_TAG, "")
    return int(value) if value.isdigit() else 0


def _created(properties: KeyProperties) -> datetime:
    return properties.created_on or datetime.fromtimestamp(0, timezone.utc)


class AzureKeyVault(KeyManagementService):
    """Primary keys in Azure Key Vault (``RSA``, ``RSA-HSM`` on Premium) or Managed HSM (``RSA-HSM``, ``oct-HSM``)."""

    scheme = "azurekv"

    def __init__(self, vault_url: str, *, credential: Any = None,  # noqa: ANN401 - an azure TokenCredential
                 managed_identity_client_id: str | None = None, ca_file: str | os.PathLike[str] | None = None,
                 key_type: str = "RSA", key_size: int = 3072, max_retries: int = 3) -> None:
        self._vault_url = check_vault_url(vault_url)
        if key_type not in KEY_TYPES:
            raise ConfigError(f"azurekv: key_type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
        sizes = (OCT_KEY_SIZE,) if key_type == "oct-HSM" else RSA_KEY_SIZES
        if key_type == "oct-HSM" and key_size == 3072:
            key_size = OCT_KEY_SIZE  # the default size is an RSA size
        if key_size not in sizes:
            raise ConfigError(f"azurekv: a {key_type} key must be {' or '.join(map(str, sizes))} bits, not {key_size}")
        self.key_type, self.key_size = key_type, key_size
        self._options = client_options(self._vault_url, ca_file, max_retries)
        self._credential = credential
        self._client_id = managed_identity_client_id
        self._lock = threading.Lock()
        self._client: KeyClient | None = None

    def __repr__(self) -> str:
        return f"AzureKeyVault({self._vault_url!r}, key_type={self.key_type!r})"

    @property
    def vault_url(self) -> str:
        return self._vault_url

    @property
    def key_client(self) -> KeyClient:
        """The SDK client, built on first use (the credential too, so executors build it where they run)."""
        with self._lock:
            if self._client is None:
                credential = self._credential or default_credential(self._client_id)
                self._client = KeyClient(self._vault_url, credential, **self._options)
            return self._client

    def _call(self, call: Callable[[], T], action: str, permission: str, name: str) -> T:
        return call_azure(call, vault=self._vault_url, action=action, permission=permission,
                          missing=f"no key {self.key_uri(name)}")

    # -- data keys -------------------------------------------------------------------------------------------------

    def _wrap(self, data_key: SecretKey, name: str) -> bytes:
        key = self._current(_kv_name(name), "wrap a data key")
        version = str(key.properties.version)
        if not key.properties.enabled:
            raise KeyDisabled(f"the current version ({version}) of {self.key_uri(name)} is disabled in Azure Key "
                              f"Vault {self._vault_url}")
        algorithm = ALG_A256KW if _kty(key).startswith("oct") else ALG_RSA_OAEP_256
        wrapped = self._key_operation(name, version, "wrapkey", algorithm, data_key.insecure_bytes())
        return pack_wrapped(algorithm, version, wrapped)

    def _unwrap(self, wrapped: bytes, name: str) -> SecretKey:
        algorithm, version, ciphertext = parse_wrapped(wrapped)
        material = self._key_operation(_kv_name(name), version, "unwrapkey", algorithm, ciphertext)
        if len(material) != DATA_KEY_SIZE:
            raise KeyProviderError(f"{self.key_uri(name)} unwrapped a {len(material)}-byte value, not a data key")
        return SecretKey(material)

    def _key_operation(self, name: str, version: str, operation: str, algorithm: str, value: bytes) -> bytes:
        """POST ``wrapkey`` / ``unwrapkey`` to one key version, through the client's authenticated pipeline."""
        permission = "keys/wrapKey" if operation == "wrapkey" else "keys/unwrapKey"
        action = f"{'wrap' if operation == 'wrapkey' else 'unwrap'} a data key with {self.key_uri(name)}"
        request = HttpRequest("POST", f"/keys/{name}/{version}/{operation}",
                              json={"alg": algorithm, "value": b64url(value)})
        response = self._call(lambda: self.key_client.send_request(request), action, permission, name)
        if response.status_code == 200:
            try:
                return unb64url(response.json()["value"])
            except (KeyError, TypeError, ValueError):
                raise KeyProviderError(f"Azure Key Vault {self._vault_url} sent no result to {action}") from None
        message = vault_message(response)
        if response.status_code == 403:
            self._raise_if_disabled(name, version)
        missing = f"no version {version} of key {self.key_uri(name)}"
        raise refusal(response.status_code, message, vault=self._vault_url, action=action, permission=permission,
                      missing=missing)

    def _raise_if_disabled(self, name: str, version: str) -> None:
        """A 403 is a missing permission or a disabled key version; say which."""
        try:
            numbered = self._numbered(name)
        except PPMLError:
            return
        for number, properties in numbered:
            if properties.version == version and not properties.enabled:
                raise KeyDisabled(f"version {number} ({version}) of {self.key_uri(name)} is disabled in Azure Key "
                                  f"Vault {self._vault_url}")

    # -- key management ----------------------------------------------------------------------------------------------

    def _current(self, name: str, action: str) -> KeyVaultKey:
        return self._call(lambda: self.key_client.get_key(name), action, "keys/get", name)

    def _exists(self, name: str) -> bool:
        try:
            self._current(name, f"look up {self.key_uri(name)}")
        except KeyNotFound:
            return False
        return True

    def _numbered(self, name: str) -> list[tuple[int, KeyProperties]]:
        """Every version of ``name`` with its ppml number: creation order, the ``ppml-version`` tag breaking ties."""
        versions = self._call(lambda: list(self.key_client.list_properties_of_key_versions(name)),
                              f"list the versions of {self.key_uri(name)}", "keys/list", name)
        if not versions:
            raise KeyNotFound(f"no key {self.key_uri(name)} in Azure Key Vault {self._vault_url}")
        ordered = sorted(versions, key=lambda p: (_created(p), _tag_number(p), p.version or ""))
        return list(enumerate(ordered, start=1))

    def _info(self, name: str) -> KeyInfo:
        numbered = self._numbered(name)
        current = self._current(name, f"describe {self.key_uri(name)}").properties.version
        primary = next((n for n, p in numbered if p.version == current), numbered[-1][0])
        versions = tuple(KeyVersion(version=n, created=_created(p).isoformat(), enabled=bool(p.enabled))
                         for n, p in numbered)
        return KeyInfo(uri=self.key_uri(name), primary_version=primary, versions=versions)

    def _new_version(self, name: str, number: int, *, key_type: str, size: int, exportable: bool | None = None,
                     release_policy: KeyReleasePolicy | None = None) -> None:
        action = f"create a version of {self.key_uri(name)}"
        self._call(lambda: self.key_client.create_key(
            name, key_type, size=size, key_operations=list(_WRAP_OPS), tags={VERSION_TAG: str(number)},
            exportable=exportable, release_policy=release_policy), action, "keys/create", name)

    def _refuse_existing(self, name: str) -> None:
        if self._exists(name):
            raise KeyProviderError(f"key {self.key_uri(name)} already exists in Azure Key Vault {self._vault_url}")

    def _create(self, name: str) -> KeyInfo:
        self._refuse_existing(_kv_name(name))
        self._new_version(name, 1, key_type=self.key_type, size=self.key_size)
        return self._info(name)

    def _rotate(self, name: str) -> KeyInfo:
        current = self._current(_kv_name(name), f"rotate {self.key_uri(name)}")
        key_type = _kty(current)
        if key_type.startswith("oct"):
            size = OCT_KEY_SIZE
        else:  # keep the size the key has, whatever this backend would create
            size = len(current.key.n) * 8 if current.key.n else self.key_size
        properties = current.properties
        self._new_version(name, len(self._numbered(name)) + 1, key_type=key_type, size=size,
                          exportable=properties.exportable or None, release_policy=properties.release_policy)
        return self._info(name)

    def _disable(self, name: str, version: int | None) -> KeyInfo:
        numbered = self._numbered(_kv_name(name))
        targets = [p for n, p in numbered if version is None or n == version]
        if not targets:
            raise KeyProviderError(f"{self.key_uri(name)} has no version {version} (versions 1..{len(numbered)})")
        for properties in targets:
            self._call(lambda p=properties: self.key_client.update_key_properties(name, p.version, enabled=False),
                       f"disable {self.key_uri(name)}", "keys/update", name)
        return self._info(name)

    def _list(self) -> list[KeyInfo]:
        names = self._call(lambda: sorted(p.name for p in self.key_client.list_properties_of_keys()),
                           "list keys", "keys/list", "")
        return [self._info(name) for name in names]

    # -- Secure Key Release (see ppml.kms.azure_skr) -------------------------------------------------------------------

    def create_exportable_key(self, name: str, release_policy: Mapping[str, Any]) -> KeyInfo:
        """Create HSM key ``name``, exportable to TEEs whose MAA token satisfies ``release_policy``."""
        from ppml.kms.azure_skr import CONTENT_TYPE, validate_release_policy

        if not self.key_type.endswith("-HSM"):
            raise ConfigError(f"exportable keys must be HSM-protected: create {self.key_uri(name)} with key_type "
                              "'RSA-HSM' (Premium vault or Managed HSM) or 'oct-HSM' (Managed HSM)")
        document = validate_release_policy(release_policy)
        policy = KeyReleasePolicy(json.dumps(document, separators=(",", ":")).encode("utf-8"),
                                  content_type=CONTENT_TYPE, immutable=False)

        def create() -> KeyInfo:
            self._refuse_existing(_kv_name(name))
            self._new_version(name, 1, key_type=self.key_type, size=self.key_size, exportable=True,
                              release_policy=policy)
            return self._info(name)

        return self._guard(f"create exportable key {self.key_uri(name)}", create)

    def release(self, name: str, maa_token: str, *, version: str | None = None,
                algorithm: str = "RSA_AES_KEY_WRAP_256") -> str:
        """Key Vault's ``release`` answer for key ``name``: a JWS holding the key wrapped to the token's runtime key."""
        validate_key_name(name)
        action = f"release {self.key_uri(name)}"

        def release() -> str:
            result = self._call(lambda: self.key_client.release_key(
                _kv_name(name), maa_token, version=version, algorithm=algorithm), action, "keys/release", name)
            return str(result.value)

        return self._guard(action, release)
