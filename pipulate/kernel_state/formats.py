"""Per-type encoding of one kernel variable, hashed before anything is written.

``prepare(value)`` picks the format, measures the value and computes its
*content hash* (xxh3-128): for arrays over the ``.npy`` header and the array's
own memory (which is also the blob's name, so nothing is copied), for
DataFrames over the Arrow schema and column buffers, for everything else over
the encoded bytes. The caller compares that hash with the previous version's
and only then calls ``write`` for the variables that changed.

Formats (the state engine's names, ``pipulate.codecs``): ``json``/``json+t``
(inline in the manifest when small), ``npy``, ``arrow``, ``arrow-series``,
``pickle`` (cloudpickle, signed) and ``module`` (an import, by name).
Compression: every blob goes through ``BlobStore``, which compresses with zstd
only when a sample shrinks by a fifth (so Arrow/npy of random floats, already
compact data and small blobs stay raw); ``Settings.compress`` switches it off.
"""
from __future__ import annotations

import io
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import xxhash

from .. import codecs
from .pickling import dumps as pickle_dumps
from .store import Entry

MODULE = "module"


class Unsaveable(Exception):
    """The value cannot be saved; the message says why (it becomes the skip reason)."""


@dataclass
class Prepared:
    format: str
    type: str
    size: int
    content_hash: str
    inline: Any = None  # text kept in the manifest row
    payload: Callable[[], list] | None = None  # buffers of the blob, made on demand
    digest: str | None = None  # the blob's name when already known (npy)
    sign: bool = False
    extra: dict = field(default_factory=dict)

    def entry(self, name: str, blob: str | None) -> Entry:
        return Entry(name, self.type, self.format, self.size, self.content_hash, blob,
                     self.inline, None)


def type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__ or ""
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module.split('.')[0]}.{kind.__qualname__}"


def estimated_size(value: Any) -> int | None:
    """A cheap size for values that hold big buffers (None: not known before encoding)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return int(value.nbytes)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series)):
        try:
            usage = value.memory_usage(index=True, deep=False)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        except Exception:
            return None
    return None


def shape_signature(value: Any):
    """What must stay the same for a big value to be considered untouched."""
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray:
        return ("ndarray", value.shape, value.dtype.str, value.strides,
                value.__array_interface__["data"][0])
    pd = sys.modules.get("pandas")
    if pd is not None and type(value) is pd.DataFrame:
        return ("DataFrame", value.shape, tuple(map(str, value.dtypes)), tuple(value.columns))
    try:
        return (type(value), len(value))
    except Exception:
        return (type(value),)


def prepare(value: Any, namespace: dict, signer, inline_limit: int,
            refs: dict | None = None, json_ok: bool = True) -> Prepared:
    """How ``value`` is stored and its content hash; raises Unsaveable.

    ``refs`` ({id: name}) are other variables a pickle may refer to instead of
    copying; ``json_ok=False`` sends a JSON-able container that holds one of
    them to the pickle path, so the sharing survives.
    """
    if isinstance(value, types.ModuleType):
        name = value.__name__
        return Prepared(MODULE, "module", 0, xxhash.xxh3_128_hexdigest(f"module:{name}".encode()), inline=name)
    encoded = codecs._encode_json(value) if json_ok else None
    if encoded is not None:
        return _prepared_bytes(encoded.format, value, encoded.data, inline_limit, text=True)
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray and not value.dtype.hasobject:
        prepared = _prepare_ndarray(value)
        if prepared is not None:
            return prepared
    pd = sys.modules.get("pandas")
    if pd is not None and type(value) is pd.DataFrame:
        prepared = _prepare_frame(value)
        if prepared is not None:
            return prepared
    if pd is not None and type(value) is pd.Series:
        encoded = codecs._encode_pandas(value)
        if encoded is not None:
            return _prepared_bytes(encoded.format, value, encoded.data, inline_limit)
    type_module = type(value).__module__ or ""
    if type_module.split(".")[0] in ("IPython", "ipykernel", "zmq", "pipulate"):
        raise Unsaveable(f"{type_module.split('.')[0]}'s own object ({type_name(value)})")
    try:
        data, used = pickle_dumps(value, namespace, refs)
    except RecursionError:
        raise Unsaveable("too deeply nested to pickle") from None
    except Exception as exc:
        raise Unsaveable(_reason(exc)) from None
    return Prepared(codecs.PICKLE, type_name(value), len(data), xxhash.xxh3_128_hexdigest(data),
                    payload=lambda: [signer.sign(data)], sign=True, extra={"deps": used})


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _prepared_bytes(fmt: str, value: Any, data: bytes, inline_limit: int, text: bool = False) -> Prepared:
    digest = codecs_hash = xxhash.xxh3_128_hexdigest(data)
    if text and len(data) <= inline_limit:
        return Prepared(fmt, type_name(value), len(data), codecs_hash, inline=data.decode("utf-8"))
    return Prepared(fmt, type_name(value), len(data), codecs_hash, payload=lambda: [data], digest=digest)


def _prepare_ndarray(arr) -> Prepared | None:
    import numpy as np

    if arr.flags.c_contiguous:
        flat, fortran = arr, False
    elif arr.flags.f_contiguous:
        flat, fortran = arr.T, True
    else:
        flat, fortran = np.ascontiguousarray(arr), False
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": fortran,
                     "shape": arr.shape})
    except ValueError:
        return None  # a header too big for format 1.0 (huge structured dtypes): pickle it
    head = header.getvalue()
    body = flat.reshape(-1).view(np.uint8).data if flat.size else memoryview(b"")
    h = xxhash.xxh3_128()
    h.update(head)
    h.update(body)
    digest = h.hexdigest()
    return Prepared(codecs.NPY, "numpy.ndarray", len(head) + body.nbytes, digest,
                    payload=lambda: [head, body], digest=digest,
                    extra={"shape": arr.shape, "dtype": str(arr.dtype)})


def _prepare_frame(df) -> Prepared | None:
    import pyarrow as pa

    if not codecs._arrow_safe_frame(df):
        return None
    try:
        table = _arrow_table(df)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    h = xxhash.xxh3_128()
    h.update(table.schema.serialize())
    size = 0
    for column in table.columns:
        for chunk in column.chunks:
            h.update(f"|{chunk.offset},{len(chunk)}|".encode())
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
                    size += buf.size

    def payload():
        # Measure first, then write into one buffer of the right size: a growing
        # BufferOutputStream would copy the data several times over.
        mock = pa.MockOutputStream()
        with pa.ipc.new_file(mock, table.schema) as writer:
            writer.write_table(table)
        out = pa.allocate_buffer(mock.size())
        with pa.ipc.new_file(pa.FixedSizeBufferWriter(out), table.schema) as writer:
            writer.write_table(table)
        return [out]

    return Prepared(codecs.ARROW, "pandas.DataFrame", size, h.hexdigest(), payload=payload)


def _arrow_table(df):
    """``pa.Table.from_pandas(df)``, but numeric numpy columns are wrapped, not converted.

    ``from_pandas`` scans float columns to turn NaN into nulls (0.1 s per 256 MiB);
    wrapping the column's memory keeps NaN as NaN, which reads back the same.
    Frames whose index is stored as columns take the plain path.
    """
    import numpy as np
    import pyarrow as pa

    schema = pa.Schema.from_pandas(df)
    if len(schema) != df.shape[1]:
        return pa.Table.from_pandas(df)
    arrays = []
    for i, arrow_field in enumerate(schema):
        col = df.iloc[:, i]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "fiu":
            arrays.append(pa.array(col.to_numpy(copy=False), type=arrow_field.type))
        else:
            arrays.append(pa.Array.from_pandas(col, type=arrow_field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def decode_frame(view: memoryview):
    """A DataFrame from an Arrow blob; numeric columns over ``view`` itself when possible."""
    import pyarrow as pa

    buf = pa.py_buffer(view)
    table = pa.ipc.open_file(buf).read_all()
    frame = _zero_copy_frame(table, view, buf.address)
    return frame if frame is not None else table.to_pandas()


def _zero_copy_frame(table, view: memoryview, base: int):
    """For frames of numeric columns without nulls and a RangeIndex (the big, common
    case): writable numpy columns over the bytes read from disk, no copy. None otherwise."""
    import json

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    raw = (table.schema.metadata or {}).get(b"pandas")
    if not raw or table.num_columns == 0:
        return None
    meta = json.loads(raw)
    index = meta.get("index_columns") or []
    col_index = meta.get("column_indexes") or []
    if (len(index) != 1 or not isinstance(index[0], dict) or index[0].get("kind") != "range"
            or len(col_index) != 1 or col_index[0].get("name") is not None
            or col_index[0].get("pandas_type") != "unicode"
            or len(meta.get("columns", [])) != table.num_columns):
        return None
    columns = {}
    for arrow_field, info in zip(table.schema, meta["columns"]):
        if info.get("name") != arrow_field.name or not (
                pa.types.is_integer(arrow_field.type) or pa.types.is_floating(arrow_field.type)):
            return None
        column = table.column(arrow_field.name)
        if column.num_chunks != 1:
            return None
        chunk = column.chunk(0)
        if chunk.null_count:
            return None
        dtype = np.dtype(arrow_field.type.to_pandas_dtype())
        if info.get("numpy_type") != dtype.name:
            return None
        data = chunk.buffers()[1]
        offset = data.address - base + chunk.offset * dtype.itemsize
        if offset < 0 or offset + len(chunk) * dtype.itemsize > len(view):
            return None
        columns[arrow_field.name] = np.frombuffer(view, dtype=dtype, count=len(chunk), offset=offset)
    spec = index[0]
    rows = pd.RangeIndex(spec["start"], spec["stop"], spec["step"], name=spec.get("name"))
    if len(rows) != table.num_rows:
        return None
    return pd.DataFrame(columns, index=rows, copy=False)


def decode_npy(view: memoryview):
    """An array over ``view`` itself (no copy): writable when the view is."""
    import numpy as np

    head = io.BytesIO(view[: min(len(view), 1 << 16)])
    major, _minor = np.lib.format.read_magic(head)
    if major == 1:
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
    if dtype.hasobject:
        raise ValueError("an .npy blob holds Python objects; refusing it")
    count = 1
    for n in shape:
        count *= n
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=head.tell())
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


# Per format: try compression (the store keeps it only where a sample shrinks by a
# fifth, and only when ``Settings.compress`` is on), or never (data that is
# compressed already, e.g. a future Parquet format, is left alone).
COMPRESS_BY_FORMAT = {
    codecs.JSON: True, codecs.TAGGED_JSON: True,  # text: usually shrinks a lot
    codecs.NPY: True,  # zeros, small ints, repeated values shrink; random floats are left raw
    codecs.ARROW: True, codecs.ARROW_SERIES: True,  # IPC without its own compression
    codecs.PICKLE: True,
}


def write(prepared: Prepared, blobs) -> str | None:
    """Put the value's blob (no-op when the store has it); returns its name."""
    if prepared.payload is None:
        return None
    compress = None if COMPRESS_BY_FORMAT.get(prepared.format, False) else False
    return blobs.put_chunks(prepared.payload(), digest=prepared.digest, compress=compress)
