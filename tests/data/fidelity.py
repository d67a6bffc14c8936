"""A table with every type that tends to break in transit: nulls, unicode, decimals, dates, big ints."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa

CASES = [  # (file format, mode) pairs every engine must round-trip exactly
    ("parquet", "plain_text"), ("parquet", "ppml"), ("parquet", "aes_gcm_v1"), ("parquet", "aes_gcm_ctr_v1"),
    ("csv", "plain_text"), ("csv", "ppml"), ("json", "plain_text"), ("json", "ppml"),
]


def fidelity_table() -> pa.Table:
    return pa.table({
        "id": pa.array([1, None, 2**62 + 1, -(2**63)], pa.int64()),
        "name": pa.array(["ascii", "ünïcødé ✓ 名前", "", None], pa.string()),
        "amount": pa.array([decimal.Decimal("1234567890123.45"), None, decimal.Decimal("-0.01"),
                            decimal.Decimal("0.00")], pa.decimal128(15, 2)),
        "day": pa.array([datetime.date(2020, 2, 29), None, datetime.date(1970, 1, 1), datetime.date(9999, 12, 31)]),
        "at": pa.array([datetime.datetime(2021, 3, 14, 15, 9, 26, 535897), None, None,
                        datetime.datetime(1999, 12, 31, 23, 59, 59)], pa.timestamp("us")),
        "ratio": pa.array([0.1, None, 1e300, -2.5], pa.float64()),
        "flag": pa.array([True, None, False, True], pa.bool_()),
    })
