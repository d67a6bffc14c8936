"""The Spark settings every ``ppml submit`` job gets, and the user settings it refuses.

Spark on Kubernetes generates a fresh RPC authentication secret per application when ``spark.authenticate`` is
on and hands it to the executors itself (SPARK-26194), so no secret is ever passed here. A ``--conf`` whose name
or value looks like a credential is refused: credentials reach pods only through the key broker (after
attestation) or the Azure Key Vault CSI driver, never through Spark configuration, which ends up in pod specs,
event logs and the UI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ppml.errors import ConfigError

# Same as ppml.engines.spark.session.REDACTION (a test keeps them equal); copied so that rendering a submission
# does not import PySpark.
REDACTION = r"(?i)secret|password|passphrase|token|access[.]?key|credential|private|ppml|bigdl"

SECURE_CONF: Mapping[str, str] = {
    "spark.authenticate": "true",  # the secret is generated per application by Spark on Kubernetes
    "spark.network.crypto.enabled": "true",  # AES RPC and block-transfer encryption (CTR, as the trusted session)
    "spark.network.crypto.saslFallback": "false",  # no downgrade to SASL DIGEST-MD5
    "spark.io.encryption.enabled": "true",  # shuffle files, spills and broadcast blocks on disk
    "spark.io.encryption.keySizeBits": "256",
    "spark.redaction.regex": REDACTION,
    "spark.sql.redaction.string.regex": REDACTION,
}
# Defaults a user may change with --conf.
DEFAULT_CONF: Mapping[str, str] = {
    "spark.ui.enabled": "false",  # the UI has no authentication
    # Python workers are reused across tasks: in an enclave each new process is a new enclave (slow to start),
    # and each worker attests to the key broker once and caches its keys for their lifetime.
    "spark.python.worker.reuse": "true",
}

# Names that hold credentials; "sas" only as a word, so that SASL settings are not mistaken for a SAS token.
SECRET_NAME = re.compile(r"password|passphrase|secret|token|key\b|credential|\bsas\b", re.IGNORECASE)
# Values that are credentials whatever their name: storage connection strings, SAS signatures, private keys.
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=|-----BEGIN [A-Z ]*PRIVATE KEY",
                          re.IGNORECASE)
# Prefixes ppml submit owns or forbids.
_FORBIDDEN_PREFIXES: Mapping[str, str] = {
    "spark.kubernetes.authenticate.": "API-server credentials must not reach pods; the driver uses its service "
                                      "account (--service-account)",
    "spark.kubernetes.driver.podTemplate": "ppml submit renders the pod templates",
    "spark.kubernetes.executor.podTemplate": "ppml submit renders the pod templates",
    "spark.kubernetes.driver.volumes.hostPath.": "host paths are not mounted into TEE pods",
    "spark.kubernetes.executor.volumes.hostPath.": "host paths are not mounted into TEE pods",
}


def check_user_conf(conf: Mapping[str, str], *, managed: Iterable[str] = ()) -> None:
    """Refuse ``--conf`` entries that carry a credential, weaken a secure setting, or bypass an option."""
    owned = set(managed)
    for key, value in conf.items():
        if SECRET_NAME.search(key) or SECRET_VALUE.search(value):
            raise ConfigError(
                f"--conf {key}=... looks like a credential: secrets must not be passed in Spark configuration "
                "(it is visible in pod specs, logs and the UI). Keep the key behind the ppml key broker "
                "(kbs: keys, released to attested pods) or mount it with the Azure Key Vault CSI driver "
                "(--keyvault-csi SECRETPROVIDERCLASS).")
        if key in SECURE_CONF and value.strip().lower() != SECURE_CONF[key].lower():
            raise ConfigError(f"--conf {key} is fixed to {SECURE_CONF[key]} by ppml submit")
        for prefix, reason in _FORBIDDEN_PREFIXES.items():
            if key.startswith(prefix):
                raise ConfigError(f"--conf {key} is not allowed: {reason}")
        if key in owned:
            raise ConfigError(f"--conf {key} is set by a ppml submit option; use the option instead")


def parse_conf(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: v}``; a pair without ``=`` is an error."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--conf {pair!r}: expected KEY=VALUE")
        conf[key.strip()] = value
    return conf
