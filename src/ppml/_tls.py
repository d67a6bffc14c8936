"""Client TLS contexts: always verifying, against the system roots or one CA bundle; never switched off."""

from __future__ import annotations

import os
import ssl

from ppml.errors import ConfigError


def tls_context(ca_file: str | os.PathLike[str] | bool | None = None, *, what: str = "the server") -> ssl.SSLContext:
    """A context that verifies ``what``'s certificate and host name: against ``ca_file``, or the system roots."""
    if isinstance(ca_file, bool):
        if not ca_file:
            raise ConfigError(f"TLS verification of {what} cannot be turned off; pass a CA bundle instead")
        ca_file = None
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"CA bundle {os.fspath(ca_file)} for {what} cannot be loaded: {error}") from None
