"""The SEV-SNP certificate table (configfs-tsm ``auxblob``) turned into a PEM bundle for ``Evidence.certificates``.

Layout, from AMD's GHCB specification (56421, section 4.1.8.1, MSG_REPORT_REQ), which the kernel ABI
(``Documentation/ABI/testing/configfs-tsm``) names for ``auxblob`` when the provider is ``sev_guest``::

    entry[i] = GUID (16 bytes, RFC 4122 order) || offset (u32 LE) || length (u32 LE)
    ...                                          terminated by an all-zero entry
    certificate bytes (DER) at ``offset`` from the start of the table, ``length`` bytes each

The bundle lists the leaf (VCEK or VLEK) first, then ASK and ARK, so a verifier can take the first
certificate as the report signer. Entries with other GUIDs (a CRL, vendor data) are skipped. Nothing here is
trusted: the hypervisor supplies the table, and the verifier checks the chain to the pinned AMD root.
"""

from __future__ import annotations

import base64
import logging
import uuid

from ppml.attestation._reader import Reader
from ppml.errors import EvidenceInvalid

log = logging.getLogger(__name__)

ENTRY_SIZE = 24
# Upper bound on entries, far above the three or four AMD defines, so a corrupt table cannot make us loop long.
MAX_ENTRIES = 64

# Order in the output bundle: leaf first.
CERT_GUIDS: dict[bytes, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes: "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1").bytes: "VLEK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782").bytes: "ASK",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae").bytes: "ARK",
}
_ORDER = ("VCEK", "VLEK", "ASK", "ARK")


def cert_table_to_pem(table: bytes) -> bytes:
    """PEM bundle (leaf first) of the certificates in an SNP certificate table; ``b""`` for an empty table.

    Raises:
        EvidenceInvalid: the table is unterminated, or an entry points outside it.
    """
    if not table.strip(b"\0"):
        return b""
    found: dict[str, bytes] = {}
    reader = Reader(table, "SNP certificate table")
    for index in range(MAX_ENTRIES):
        guid = reader.take(16, f"entry {index} GUID")
        offset, length = reader.u32(f"entry {index} offset"), reader.u32(f"entry {index} length")
        if guid == bytes(16) and offset == 0 and length == 0:
            return b"".join(_pem(found[name]) for name in _ORDER if name in found)
        name = CERT_GUIDS.get(guid)
        if name is None:
            log.debug("skipping SNP certificate table entry %s (not a certificate we use)", uuid.UUID(bytes=guid))
            continue
        if length == 0 or offset + length > len(table):
            raise EvidenceInvalid(f"SNP certificate table entry {name} points outside the table "
                                  f"(offset {offset}, length {length}, table {len(table)} bytes)", reason="malformed")
        found[name] = table[offset : offset + length]
    raise EvidenceInvalid(f"SNP certificate table has no terminating entry within {MAX_ENTRIES} entries",
                          reason="malformed")


def _pem(der: bytes) -> bytes:
    body = base64.b64encode(der)
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
