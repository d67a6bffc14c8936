"""Arrow tables to and from the bytes of one part file: Parquet, CSV, JSON lines, text.

These functions see plaintext streams only; ``ppml.data.dataset`` puts them inside the ``.ppml`` container
or Parquet modular encryption. Reads use the dataset's recorded schema, so types survive a round trip
through text formats: decimals, dates, timestamps, large integers, nulls and unicode.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
from collections.abc import Mapping
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ppml.errors import ConfigError, InvalidCiphertext

TEXT_COLUMN = "value"
ROW_GROUP_SIZE = 1_000_000
_BATCH_ROWS = 65_536


def portable(table: pa.Table) -> pa.Table:
    """Cast view types (``string_view``, ``binary_view``, as tpchgen-cli writes) to their plain forms,
    which every engine and format reads."""
    swaps = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    if not any(field.type in swaps for field in table.schema):
        return table
    schema = pa.schema([field.with_type(swaps.get(field.type, field.type)) for field in table.schema],
                       metadata=table.schema.metadata)
    return table.cast(schema)


def write_table(table: pa.Table, sink: BinaryIO, file_format: str, options: Mapping[str, Any]) -> None:
    """Serialize ``table`` into ``sink`` as ``file_format``."""
    if file_format == "parquet":
        pq.write_table(table, sink, compression=options.get("compression", "zstd"),
                       row_group_size=int(options.get("row_group_size", ROW_GROUP_SIZE)))
    elif file_format == "csv":
        pa_csv.write_csv(table, sink, write_options=pa_csv.WriteOptions(
            include_header=bool(options.get("header", True)), delimiter=options.get("delimiter", ",")))
    elif file_format == "json":
        _write_json_lines(table, sink)
    elif file_format == "text":
        _write_text(table, sink)
    else:
        raise ConfigError(f"unknown file format {file_format!r}")


def read_table(source: BinaryIO, file_format: str, schema: pa.Schema | None, options: Mapping[str, Any], *,
               name: str, columns: list[str] | None = None) -> pa.Table:
    """Parse one part. ``schema`` (from the manifest) fixes the types of text formats; without it
    (foreign data such as BigDL's) CSV and JSON types are inferred."""
    try:
        if file_format == "parquet":
            return portable(pq.read_table(source, columns=columns))
        if file_format == "csv":
            table = pa_csv.read_csv(source, **_csv_options(schema, options))
        elif file_format == "json":
            table = _read_json_lines(source, schema)
        elif file_format == "text":
            table = _read_text(source)
        else:
            raise ConfigError(f"unknown file format {file_format!r}")
    except pa.ArrowInvalid as error:
        raise InvalidCiphertext(f"{name}: the decrypted data is not valid {file_format}: {error}") from None
    return table.select(columns) if columns else table


def _csv_options(schema: pa.Schema | None, options: Mapping[str, Any]) -> dict[str, Any]:
    header = bool(options.get("header", True))
    read = pa_csv.ReadOptions(column_names=schema.names if schema is not None else None,
                              skip_rows=1 if header and schema is not None else 0,
                              autogenerate_column_names=not header and schema is None)
    convert = pa_csv.ConvertOptions(column_types=schema, strings_can_be_null=True,
                                    quoted_strings_can_be_null=False)
    return {"read_options": read, "parse_options": pa_csv.ParseOptions(delimiter=options.get("delimiter", ",")),
            "convert_options": convert}


def _json_default(value: Any) -> Any:  # noqa: ANN401 - any scalar Arrow hands back
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} values as JSON")


def _write_json_lines(table: pa.Table, sink: BinaryIO) -> None:
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        lines = (json.dumps(row, default=_json_default, ensure_ascii=False) for row in batch.to_pylist())
        sink.write(("\n".join(lines) + "\n").encode("utf-8") if batch.num_rows else b"")


def _transport_type(arrow_type: pa.DataType) -> pa.DataType:
    """JSON has no decimals, dates or timestamps: they travel as strings and are cast back."""
    if pa.types.is_decimal(arrow_type) or pa.types.is_temporal(arrow_type):
        return pa.string()
    return arrow_type


def _read_json_lines(source: BinaryIO, schema: pa.Schema | None) -> pa.Table:
    data = source.read()
    if schema is None:
        return pa_json.read_json(io.BytesIO(data))
    if not data.strip():
        return schema.empty_table()
    transport = pa.schema([pa.field(f.name, _transport_type(f.type), f.nullable) for f in schema])
    table = pa_json.read_json(io.BytesIO(data), parse_options=pa_json.ParseOptions(
        explicit_schema=transport, unexpected_field_behavior="error"))
    return table.select(schema.names).cast(schema)


def _write_text(table: pa.Table, sink: BinaryIO) -> None:
    if table.num_columns != 1 or not pa.types.is_string(table.schema.types[0]):
        raise ConfigError("the text format holds exactly one string column")
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        values = batch.column(0).to_pylist()
        if any(value is not None and "\n" in value for value in values):
            raise ConfigError("the text format cannot hold values with newlines; use csv or json")
        sink.write("".join(f"{value or ''}\n" for value in values).encode("utf-8"))


def _read_text(source: BinaryIO) -> pa.Table:
    lines = source.read().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return pa.table({TEXT_COLUMN: pa.array(lines, pa.string())})
