"""``ppml broker``: set up and serve the key broker, and administer it (policies, resources, keys, audit)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ppml.cli._common import console, keystore_options, out
from ppml.errors import ConfigError, InputError
from ppml.kms import KeyRing


@click.group()
def broker() -> None:
    """Run the key broker (KBS) that releases keys only to attested TEEs."""


@broker.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="host:port the broker will serve on.")
@click.option("--hostname", "hostnames", multiple=True, help="Name or IP in the TLS certificate (repeatable) "
              "[default: localhost, 127.0.0.1].")
@click.option("--trust-simulator", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Public key of a simulated TEE to accept (development only: it proves nothing).")
def init(directory: str, listen: str, hostnames: tuple[str, ...], trust_simulator: str | None) -> None:
    """Create a broker directory: configuration, TLS CA and certificate, admin key, storage keystore.

    \b
    Example:
      ppml broker init ./kbs && ppml broker serve --config ./kbs/broker.json
    """
    from ppml.broker.setup import init_broker

    made = init_broker(directory, listen=listen, hostnames=hostnames or ("localhost", "127.0.0.1"),
                       simulator_public_key=Path(trust_simulator).resolve() if trust_simulator else None)
    console.print(f"broker directory ready: {made.config}")
    console.print(f"  clients trust:   {made.ca_certificate}  (--ca-file)")
    console.print(f"  admin key:       {made.admin_key}  (keep it on the data owner's machine)")
    console.print(f"  serve it with:   ppml broker serve --config {made.config}")


@broker.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="The broker.json made by ppml broker init.")
@click.option("--host", default=None, help="Override the listen host.")
@click.option("--port", type=int, default=None, help="Override the listen port.")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP (development only; warns).")
def serve(config_path: str, host: str | None, port: int | None, insecure_http: bool) -> None:
    """Serve the broker until interrupted."""
    from ppml.broker.config import BrokerConfig
    from ppml.broker.server import serve as run

    run(BrokerConfig.load(config_path), host=host, port=port, insecure_http=insecure_http)


def _admin_options(command: Any) -> Any:  # noqa: ANN401 - click decorator
    @click.option("--url", envvar="PPML_KBS_URL", show_envvar=True, required=True, help="Broker URL.")
    @click.option("--ca-file", envvar="PPML_KBS_CA_FILE", show_envvar=True, default=None,
                  type=click.Path(exists=True, dir_okay=False), help="CA certificate that signed the broker's TLS.")
    @click.option("--admin-key", envvar="PPML_KBS_ADMIN_KEY", show_envvar=True, required=True,
                  type=click.Path(exists=True, dir_okay=False), help="Admin private key (Ed25519 PEM).")
    @functools.wraps(command)
    def wrapper(*args: Any, url: str, ca_file: str | None, admin_key: str, **kwargs: Any) -> Any:
        from ppml._keyfiles import load_ed25519_private_key
        from ppml.broker.client import AdminClient

        client = AdminClient(url, admin_key=load_ed25519_private_key(admin_key), ca_file=ca_file)
        try:
            return command(*args, client=client, **kwargs)
        finally:
            client.close()

    return wrapper


@broker.group()
def admin() -> None:
    """Administer a running broker (needs its admin key)."""


def _read_json(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    if path.endswith((".yaml", ".yml")):
        import yaml

        return dict(yaml.safe_load(text) or {})
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return document


@admin.command("set-policy")
@click.argument("name")
@click.argument("policy_file", type=click.Path(dir_okay=False))
@_admin_options
def set_policy(name: str, policy_file: str, client: Any) -> None:  # noqa: ANN401
    """Create or replace policy NAME from a JSON or YAML file (see docs/policy.md)."""
    from ppml.attestation.policy import Policy

    document = _read_json(policy_file)
    try:
        Policy.from_dict(document)  # fail here, naming the file's problem, before anything is sent
    except ConfigError as error:
        raise ConfigError(f"{policy_file}: {error}") from None
    client.put_policy(name, document)
    console.print(f"policy {name} set")


@admin.command("get-policy")
@click.argument("name")
@_admin_options
def get_policy(name: str, client: Any) -> None:  # noqa: ANN401
    """Print policy NAME as JSON."""
    out.print_json(json.dumps(client.get_policy(name)))


@admin.command("delete-policy")
@click.argument("name")
@_admin_options
def delete_policy(name: str, client: Any) -> None:  # noqa: ANN401
    """Delete policy NAME (refused while a resource uses it)."""
    client.delete_policy(name)
    console.print(f"policy {name} deleted")


@admin.command("policies")
@_admin_options
def list_policies(client: Any) -> None:  # noqa: ANN401
    """List policy names."""
    for name in client.list_policies():
        out.print(name)


@admin.command("set-resource")
@click.argument("path")
@click.argument("value_file", type=click.Path(dir_okay=False))
@click.option("--policy", required=True, help="Policy that guards the resource.")
@_admin_options
def set_resource(path: str, value_file: str, policy: str, client: Any) -> None:  # noqa: ANN401
    """Store VALUE_FILE's bytes as resource PATH (repository/type/tag)."""
    try:
        value = Path(value_file).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {value_file}: {error.strerror}") from None
    version = client.put_resource(path, value, policy=policy)
    console.print(f"resource {path} version {version} stored under policy {policy}")


@admin.command("delete-resource")
@click.argument("path")
@_admin_options
def delete_resource(path: str, client: Any) -> None:  # noqa: ANN401
    """Delete resource PATH."""
    client.delete_resource(path)
    console.print(f"resource {path} deleted")


@admin.command("resources")
@_admin_options
def list_resources(client: Any) -> None:  # noqa: ANN401
    """List resources with their version and policy (never their values)."""
    table = Table("resource", "version", "policy")
    for item in client.list_resources():
        table.add_row(item["path"], str(item["version"]), item["policy"])
    out.print(table)


@admin.command("audit")
@click.option("--after", type=int, default=0, show_default=True, help="Only records after this sequence number.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--verify", is_flag=True, help="Verify the whole hash chain instead of printing records.")
@_admin_options
def audit(after: int, limit: int, verify: bool, client: Any) -> None:  # noqa: ANN401
    """Print audit records (one JSON object per line), or verify the chain."""
    if verify:
        console.print(f"audit chain verified: {client.verify_audit()} records")
        return
    for record in client.audit(after=after, limit=limit):
        out.print(json.dumps(record, sort_keys=True), soft_wrap=True)


@admin.command("create-key")
@click.argument("name")
@click.option("--policy", required=True, help="Policy that guards the key.")
@_admin_options
def create_key(name: str, policy: str, client: Any) -> None:  # noqa: ANN401
    """Create primary key kbs:NAME in the broker, released only under POLICY."""
    _kbs_for(client, policy).create_key(name)
    console.print(f"created kbs:{name} under policy {policy}")


@admin.command("import-key")
@click.argument("name")
@click.option("--from", "source", required=True, help="Local key to copy, e.g. local:sales.")
@click.option("--policy", required=True, help="Policy that guards the key.")
@keystore_options
@_admin_options
def import_key(name: str, source: str, policy: str, keyring: KeyRing, client: Any) -> None:  # noqa: ANN401
    """Copy a local key (all versions) into the broker as kbs:NAME.

    Files wrapped by the local key then open with kbs:NAME once their header is rewrapped
    (ppml keys rewrap), without re-encrypting any data.
    """
    from ppml.kms.local import LocalKeystore

    backend, local_name = keyring.resolve(source)
    if not isinstance(backend, LocalKeystore):
        raise ConfigError(f"--from must be a local: key, got {source}")
    _kbs_for(client, policy).import_entry(name, backend.export_entry(local_name))
    console.print(f"imported {source} as kbs:{name} under policy {policy}")


def _kbs_for(client: Any, policy: str) -> Any:  # noqa: ANN401
    """A kbs: backend that manages keys through ``client``."""
    from ppml.kms.kbs import KbsKeyManagement

    return KbsKeyManagement(client.url, policy=policy, admin_client=client)
