"""Where a keystore passphrase comes from: an environment variable, a file, or a prompt; never argv."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ppml.errors import ConfigError

PASSPHRASE_ENV = "PPML_KEYSTORE_PASSPHRASE"
PASSPHRASE_FILE_ENV = "PPML_KEYSTORE_PASSPHRASE_FILE"
MIN_PASSPHRASE_LENGTH = 8

PassphraseSource = Callable[[bool], str]
"""Called with ``new=True`` when a keystore is being created (a prompt then asks twice)."""


def from_file(path: str | os.PathLike[str]) -> PassphraseSource:
    """Read the passphrase from the first line of a file."""

    def read(new: bool) -> str:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read passphrase file {path}: {error.strerror}") from None
        passphrase = text.splitlines()[0] if text else ""
        if not passphrase:
            raise ConfigError(f"passphrase file {path} is empty")
        return passphrase

    return read


def from_environment_or_prompt(passphrase_file: str | None = None) -> PassphraseSource:
    """The standard chain: an explicit file, then ``PPML_KEYSTORE_PASSPHRASE``, then
    ``PPML_KEYSTORE_PASSPHRASE_FILE``, then a prompt when stdin is a terminal."""

    def read(new: bool) -> str:
        if passphrase_file:
            return from_file(passphrase_file)(new)
        if os.environ.get(PASSPHRASE_ENV):
            return os.environ[PASSPHRASE_ENV]
        if os.environ.get(PASSPHRASE_FILE_ENV):
            return from_file(os.environ[PASSPHRASE_FILE_ENV])(new)
        if sys.stdin is not None and sys.stdin.isatty():
            return _prompt(new)
        raise ConfigError(
            f"no keystore passphrase: set {PASSPHRASE_ENV}, or {PASSPHRASE_FILE_ENV} / --passphrase-file "
            "to a file holding it, or run in a terminal to be prompted")

    return read


def _prompt(new: bool) -> str:
    passphrase = getpass.getpass("Keystore passphrase: ")
    if new and getpass.getpass("Repeat passphrase: ") != passphrase:
        raise ConfigError("the two passphrases differ")
    return passphrase


def check_new_passphrase(passphrase: str) -> str:
    """Refuse passphrases too short to protect a new keystore."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise ConfigError(f"the keystore passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
    return passphrase
