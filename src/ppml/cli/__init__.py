"""The ``ppml`` command: each sub-command is a few lines over the library.

Exit codes: 0 success, 1 unexpected error, 2 usage or configuration error, 3 missing input or an output
that exists, 4 data that fails to decrypt or authenticate, 5 key management failure, 6 attestation failure
or policy denial, 7 key broker refusal or unreachable.
"""

from __future__ import annotations

import logging
import sys

import click
from rich.markup import escape

from ppml.cli._common import console
from ppml.cli.attest import attest
from ppml.cli.broker import broker
from ppml.cli.crypt import decrypt, encrypt, inspect
from ppml.cli.demo import demo
from ppml.cli.example import example
from ppml.cli.gramine import gramine
from ppml.cli.keys import keys
from ppml.cli.submit import submit
from ppml.cli.tpch import tpch
from ppml.errors import PPMLError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ppml")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """ppml: privacy-preserving analytics on encrypted data.

    \b
    Quick start:
      export PPML_KEYSTORE_PASSPHRASE_FILE=~/.ppml-pass
      ppml keys create local:sales
      ppml encrypt people.csv people.csv.ppml --key local:sales
      ppml inspect people.csv.ppml
      ppml decrypt people.csv.ppml people.csv
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the Azure SDK logs every HTTP request at INFO


for command in (keys, encrypt, decrypt, inspect, example, demo, tpch, broker, attest, submit, gramine):
    cli.add_command(command)


def main() -> None:
    """Entry point: run the CLI and turn ppml errors into one line and a meaningful exit code."""
    try:
        cli.main(standalone_mode=False)
    except PPMLError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
