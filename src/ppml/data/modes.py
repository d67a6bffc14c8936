"""Encryption modes, named as BigDL PPML users know them, and the file formats datasets hold."""

from __future__ import annotations

from enum import Enum

from ppml.errors import ConfigError


class Mode(str, Enum):
    """How a dataset's files are protected.

    ``plain_text`` and ``ppml`` (the AES-256-GCM ``.ppml`` container, the default) work for every file
    format; the Parquet modular-encryption modes only for Parquet; BigDL's CBC mode only for row formats.
    """

    PLAIN_TEXT = "plain_text"
    PPML = "ppml"
    BIGDL_CBC = "aes/cbc/pkcs5padding"
    PARQUET_GCM = "aes_gcm_v1"
    PARQUET_GCM_CTR = "aes_gcm_ctr_v1"

    @classmethod
    def parse(cls, text: str | Mode) -> Mode:
        """Accept the names BigDL documents (any case), including its README's ``aes_cbc_pkcs5padding``."""
        if isinstance(text, Mode):
            return text
        key = str(text).strip().lower()
        aliases = {"aes_cbc_pkcs5padding": cls.BIGDL_CBC, "aes_gcm": cls.PPML, "plaintext": cls.PLAIN_TEXT}
        for mode in cls:
            if key == mode.value:
                return mode
        if key in aliases:
            return aliases[key]
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown encryption mode {text!r}; choose one of: {choices}")

    @property
    def encrypted(self) -> bool:
        """Whether files in this mode need a key."""
        return self is not Mode.PLAIN_TEXT

    @property
    def parquet_only(self) -> bool:
        """Parquet modular encryption applies to Parquet files only."""
        return self in (Mode.PARQUET_GCM, Mode.PARQUET_GCM_CTR)


FORMATS = ("parquet", "csv", "json", "text")
EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "json": ".json", "text": ".txt"}


def check_format(file_format: str, mode: Mode) -> str:
    """Validate a file format and its combination with ``mode``."""
    if file_format not in FORMATS:
        raise ConfigError(f"unknown file format {file_format!r}; choose one of: {', '.join(FORMATS)}")
    if mode.parquet_only and file_format != "parquet":
        raise ConfigError(f"mode {mode.value} encrypts Parquet files only, not {file_format}")
    if mode is Mode.BIGDL_CBC and file_format == "parquet":
        raise ConfigError("BigDL's aes/cbc/pkcs5padding mode does not apply to Parquet; use aes_gcm_v1")
    return file_format
