"""The behaviour every KMS backend must show; each backend's test module inherits this class."""

from __future__ import annotations

import os

import pytest

from ppml._secrets import SecretKey
from ppml.errors import ConfigError, KeyDisabled, KeyNotFound, KeyProviderError
from ppml.kms import KeyManagementService


class KeyManagementConformance:
    """Subclasses provide a ``kms`` fixture holding a fresh backend with no keys."""

    def test_round_trip(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        data_key, wrapped = kms.generate_data_key("alpha")
        assert data_key not in (None,) and len(data_key) == 32
        assert kms.unwrap_key(wrapped, "alpha") == data_key

    def test_each_data_key_is_fresh(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        first, _ = kms.generate_data_key("alpha")
        second, _ = kms.generate_data_key("alpha")
        assert first != second

    def test_wrapping_is_randomized(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        data_key = SecretKey(os.urandom(32))
        assert kms.wrap_key(data_key, "alpha") != kms.wrap_key(data_key, "alpha")

    def test_unknown_key(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        with pytest.raises(KeyNotFound, match="nosuchkey"):
            kms.generate_data_key("nosuchkey")

    def test_wrapped_under_another_key_does_not_unwrap(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        kms.create_key("beta")
        _, wrapped = kms.generate_data_key("alpha")
        with pytest.raises(KeyProviderError):
            kms.unwrap_key(wrapped, "beta")

    @pytest.mark.parametrize("position", [0, 5, 20, -1])
    def test_tampered_wrapped_key(self, kms: KeyManagementService, position: int) -> None:
        kms.create_key("alpha")
        _, wrapped = kms.generate_data_key("alpha")
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(KeyProviderError):
            kms.unwrap_key(bytes(tampered), "alpha")

    def test_empty_wrapped_key(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        with pytest.raises(KeyProviderError, match="empty"):
            kms.unwrap_key(b"", "alpha")

    def test_create_twice_fails(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        with pytest.raises(KeyProviderError, match="already exists"):
            kms.create_key("alpha")

    @pytest.mark.parametrize("name", ["", "../etc", "a b", "x" * 200, "-lead"])
    def test_invalid_names(self, kms: KeyManagementService, name: str) -> None:
        with pytest.raises(ConfigError, match="invalid key name"):
            kms.create_key(name)

    def test_rotation_keeps_old_wrappings_readable(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        old_key, old_wrapped = kms.generate_data_key("alpha")
        info = kms.rotate_key("alpha")
        assert info.primary_version == 2
        new_key, new_wrapped = kms.generate_data_key("alpha")
        assert kms.unwrap_key(old_wrapped, "alpha") == old_key
        assert kms.unwrap_key(new_wrapped, "alpha") == new_key

    def test_disabled_version_refuses(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        _, old_wrapped = kms.generate_data_key("alpha")
        kms.rotate_key("alpha")
        info = kms.disable_key("alpha", version=1)
        assert [v.enabled for v in info.versions] == [False, True]
        with pytest.raises(KeyDisabled, match="version 1"):
            kms.unwrap_key(old_wrapped, "alpha")
        kms.generate_data_key("alpha")  # the primary version still works

    def test_disable_whole_key(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        kms.disable_key("alpha")
        with pytest.raises(KeyDisabled):
            kms.generate_data_key("alpha")

    def test_list_shows_no_material(self, kms: KeyManagementService) -> None:
        kms.create_key("alpha")
        kms.create_key("beta")
        listed = kms.list_keys()
        assert [info.uri for info in listed] == [kms.key_uri("alpha"), kms.key_uri("beta")]
        assert "material" not in repr(listed)

    def test_secret_key_does_not_leak(self, kms: KeyManagementService) -> None:
        import pickle

        kms.create_key("alpha")
        data_key, _ = kms.generate_data_key("alpha")
        assert "redacted" in repr(data_key)
        assert data_key.insecure_bytes().hex() not in repr(data_key) + str(data_key)
        with pytest.raises(TypeError):
            pickle.dumps(data_key)
