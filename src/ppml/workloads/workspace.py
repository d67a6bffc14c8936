"""A self-contained working directory for examples and the demo: its own keystore and passphrase file.

Examples never touch the user's default keystore. The passphrase is random, kept in a 0600 file next to
the keystore (an example's convenience, said so in its output), and reaches Spark executors as a file
path, never as a value.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ppml.kms import KeyRing
from ppml.kms.local import LocalKeystore


@dataclass(frozen=True)
class Workspace:
    """A directory with a keystore, its passphrase file, and a key ring over them."""

    root: Path
    keystore: Path
    passphrase_file: Path

    @classmethod
    def create(cls, root: str | Path | None = None, *, prefix: str = "ppml-example-") -> Workspace:
        """Use ``root`` (created if missing) or a new temporary directory."""
        path = Path(root) if root else Path(tempfile.mkdtemp(prefix=prefix))
        path.mkdir(parents=True, exist_ok=True)
        passphrase = path / "keystore.pass"
        if not passphrase.exists():
            passphrase.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(passphrase, 0o600)
        return cls(path, path / "keystore.json", passphrase)

    @property
    def keyring(self) -> KeyRing:
        """A key ring whose options (paths only) let Spark executors rebuild it."""
        return KeyRing({"local": {"path": str(self.keystore), "passphrase_file": str(self.passphrase_file)}})

    def ensure_key(self, name: str) -> str:
        """Create key ``name`` unless it exists; returns its URI."""
        store = LocalKeystore(self.keystore, passphrase_file=str(self.passphrase_file))
        if f"local:{name}" not in {info.uri for info in store.list_keys()}:
            store.create_key(name)
        return f"local:{name}"
