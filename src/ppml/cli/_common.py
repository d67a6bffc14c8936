"""What every ``ppml`` command shares: the keystore options, the console, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from ppml.kms import KeyRing
from ppml.kms.local import KEYSTORE_ENV

console = Console(stderr=True, highlight=False, emoji=False)  # ":x:" in "azurekv:x: ..." is not an emoji
out = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 120)
F = TypeVar("F", bound=Callable[..., Any])


def keystore_options(command: F) -> F:
    """Add the keystore and key-broker options and pass a ready ``KeyRing`` as ``keyring``."""

    @click.option("--keystore", type=click.Path(dir_okay=False), envvar=KEYSTORE_ENV, show_envvar=True,
                  help="Local keystore file [default: ~/.config/ppml/keystore.json].")
    @click.option("--passphrase-file", type=click.Path(dir_okay=False), default=None,
                  help="File whose first line is the keystore passphrase (else PPML_KEYSTORE_PASSPHRASE, "
                       "PPML_KEYSTORE_PASSPHRASE_FILE, or a prompt).")
    @click.option("--kbs-url", envvar="PPML_KBS_URL", show_envvar=True, default=None,
                  help="Key broker URL, for kbs: keys.")
    @click.option("--kbs-ca-file", envvar="PPML_KBS_CA_FILE", show_envvar=True, default=None,
                  type=click.Path(dir_okay=False), help="CA certificate of the key broker's TLS.")
    @click.option("--kbs-admin-key", envvar="PPML_KBS_ADMIN_KEY", show_envvar=True, default=None,
                  type=click.Path(dir_okay=False), help="Broker admin key: use kbs: keys as their owner.")
    @click.option("--attester", envvar="PPML_ATTESTER", show_envvar=True, default="auto", show_default=True,
                  type=click.Choice(["auto", "gramine", "tsm", "simulated"]),
                  help="How to attest to the key broker (simulated: development only).")
    @click.option("--keyvault-url", envvar="PPML_KEYVAULT_URL", show_envvar=True, default=None,
                  help="Azure Key Vault (or Managed HSM) URL, for azurekv: keys; credentials come from "
                       "DefaultAzureCredential (managed identity, AZURE_CLIENT_ID, az login).")
    @click.option("--simulator-key", envvar="PPML_SIMULATOR_KEY", show_envvar=True, default=None,
                  type=click.Path(dir_okay=False), help="Signing key of the simulated TEE (with --attester simulated).")
    @functools.wraps(command)
    def wrapper(*args: Any, keystore: str | None, passphrase_file: str | None, kbs_url: str | None,
                kbs_ca_file: str | None, kbs_admin_key: str | None, attester: str, simulator_key: str | None,
                keyvault_url: str | None, **kwargs: Any) -> Any:
        local: dict[str, Any] = {"passphrase_file": passphrase_file} if passphrase_file else {}
        if keystore:
            local["path"] = keystore
        options: dict[str, dict[str, Any]] = {"local": local}
        if kbs_url:
            options["kbs"] = {"url": kbs_url, "ca_file": kbs_ca_file, "admin_key": kbs_admin_key,
                              "attester": attester, "simulator_key": simulator_key}
        if keyvault_url:
            options["azurekv"] = {"vault_url": keyvault_url}
        return command(*args, keyring=KeyRing(options), **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte-count progress bar on stderr, shown only on a terminal."""
    if not console.is_terminal:
        yield lambda advance: None
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda advance: progress.advance(task, advance)
