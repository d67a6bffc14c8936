"""Secrets in Azure Key Vault: where ppml keeps a passphrase or a key broker admin token.

BigDL PPML kept its ``key-pass`` (a TLS keystore and Spark password) as a Key Vault secret; ppml needs no Spark
password, but the key broker's storage passphrase or an admin token belongs in the same place. Values are read
with ``secrets/get`` (RBAC role Key Vault Secrets User) and written with ``secrets/set`` (Key Vault Secrets
Officer). Transport, TLS and credential handling are those of :class:`~ppml.kms.azurekv.AzureKeyVault`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from azure.keyvault.secrets import SecretClient

from ppml.errors import ConfigError
from ppml.kms.azurekv import call_azure, check_vault_url, client_options, default_credential

__all__ = ["AzureKeyVaultSecrets"]

T = TypeVar("T")
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")


class AzureKeyVaultSecrets:
    """Read and write string secrets of one vault; values never appear in ``repr`` or error messages."""

    def __init__(self, vault_url: str, *, credential: Any = None,  # noqa: ANN401 - an azure TokenCredential
                 managed_identity_client_id: str | None = None, ca_file: str | os.PathLike[str] | None = None,
                 max_retries: int = 3) -> None:
        self._vault_url = check_vault_url(vault_url)
        self._options = client_options(self._vault_url, ca_file, max_retries)
        self._credential = credential
        self._client_id = managed_identity_client_id
        self._lock = threading.Lock()
        self._client: SecretClient | None = None

    def __repr__(self) -> str:
        return f"AzureKeyVaultSecrets({self._vault_url!r})"

    @property
    def vault_url(self) -> str:
        return self._vault_url

    @property
    def secret_client(self) -> SecretClient:
        with self._lock:
            if self._client is None:
                credential = self._credential or default_credential(self._client_id)
                self._client = SecretClient(self._vault_url, credential, **self._options)
            return self._client

    def _call(self, call: Callable[[], T], action: str, permission: str, name: str) -> T:
        return call_azure(call, vault=self._vault_url, action=action, permission=permission,
                          missing=f"no secret {name}")

    def set_secret(self, name: str, value: str) -> str:
        """Store ``value`` as a new version of secret ``name``; return the version id."""
        _check_name(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"secret {name}: the value must be a non-empty string")
        stored = self._call(lambda: self.secret_client.set_secret(name, value), f"set secret {name}",
                            "secrets/set", name)
        return str(stored.properties.version)

    def get_secret(self, name: str, *, version: str | None = None) -> str:
        """The value of secret ``name`` (its latest version unless ``version`` is given)."""
        _check_name(name)
        secret = self._call(lambda: self.secret_client.get_secret(name, version), f"read secret {name}",
                            "secrets/get", name)
        if secret.value is None:
            raise ConfigError(f"secret {name} in Azure Key Vault {self._vault_url} has no value")
        return str(secret.value)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"invalid secret name {name!r} for Azure Key Vault: use letters, digits and '-' only")
