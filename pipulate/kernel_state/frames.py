"""DataFrames stored one blob per column, so a cell that adds a column writes one column.

A frame's entry (format ``arrow-columns``) names a small blob holding the Arrow
schema (with pandas' own metadata: index, column labels, dtypes), and the rows of
``kernel_frame_columns`` name one blob per column: an Arrow IPC stream of that
column alone. The entry's content hash is the hash of those blob names, so equal
frames get equal hashes and a damaged or altered column list is caught at restore.

Encoding runs after the cell, off its critical path, on a *snapshot*: with
pandas >= 3 (copy-on-write always on) ``df.copy(deep=False)`` costs microseconds
and the cells that run meanwhile cannot change what is being saved. A column whose
Arrow buffers are the very ones saved last time (same addresses, kept alive and
unwritable-in-place by the snapshot and table held in ``FrameMemo``) is neither
serialised nor hashed again.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import xxhash

from ..codecs import frame_dtypes

FRAME = "arrow-columns"
BIG_STREAM = 1 << 20  # columns from this size are streamed to their file when not compressed
# A blob a save found on disk this recently is taken as still there (``BlobStore.touch``);
# one deleted by hand meanwhile is reported when the version is restored.
RECHECK_BLOBS_SECONDS = 30.0


@dataclass
class FrameMemo:
    """What the last save of one variable held: keeps its buffers alive and unchanged."""

    snapshot: Any
    table: Any
    schema_key: tuple
    columns: dict = field(default_factory=dict)  # buffer identity -> (blob name, stream size)


@dataclass
class EncodedFrame:
    schema_blob: str
    column_blobs: list[str]
    size: int  # bytes of the schema and column streams, before compression
    content_hash: str
    written: bool  # any blob was new
    memo: FrameMemo


@functools.cache
def copy_on_write() -> bool:
    """True when a shallow copy of a frame is a snapshot: pandas >= 3, or no pandas at all.

    Answered without importing pandas (kernels that never use it should not pay for it).
    """
    pd = sys.modules.get("pandas")
    version = getattr(pd, "__version__", None)
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version("pandas")
        except metadata.PackageNotFoundError:
            return True
    try:
        return int(version.split(".")[0]) >= 3
    except ValueError:
        return False


def snapshot(df):
    """A copy of ``df`` that later writes to ``df`` do not reach (copy-on-write)."""
    return df.copy(deep=False)


def arrow_safe_series(series) -> bool:
    """A cheap first look: a Series Arrow will very likely give back exactly (checked
    in full when it is encoded, where a refusal falls back to a pickle)."""
    name = series.name
    return ((name is None or type(name) is str) and series.dtype != object
            and series.index.dtype != object and series.index.nlevels == 1)


def content_hash(schema_blob: str, column_blobs: list[str]) -> str:
    return xxhash.xxh3_128_hexdigest(f"{FRAME}:{schema_blob}:{','.join(column_blobs)}".encode())


def arrow_table(df, schema=None):
    """``pa.Table.from_pandas(df)``, but numpy columns are wrapped, not converted.

    ``from_pandas`` scans float columns to turn NaN into nulls and copies datetime
    columns (~10 ms per million rows each); wrapping the column's memory keeps NaN
    as NaN and NaT as NaT, which read back the same. ``schema`` (the same frame's
    from last time, see ``schema_key``) saves working it out again.
    """
    import numpy as np
    import pyarrow as pa

    if schema is None:
        schema = pa.Schema.from_pandas(df)
    ncols, levels = df.shape[1], len(schema) - df.shape[1]
    if levels not in (0, df.index.nlevels):
        return pa.Table.from_pandas(df, nthreads=1)  # no thread pool started for each frame
    arrays = []
    for i, arrow_field in enumerate(schema):
        if i < ncols:
            col = column_values(df, i)
        else:  # an index level stored as a column (the metadata says which)
            col = df.index.get_level_values(i - ncols)
        dtype = col.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "fiu":
            arrays.append(pa.array(np.asarray(col), type=arrow_field.type))
        elif isinstance(dtype, np.dtype) and dtype.kind in "mM" and pa.types.is_temporal(arrow_field.type):
            as_int = pa.array(np.asarray(col).view("int64"), type=pa.int64())
            arrays.append(as_int.view(arrow_field.type))
        else:
            arrays.append(pa.Array.from_pandas(col, type=arrow_field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# The save runs on a worker thread while the next cells run: what it does in Python holds
# the GIL the cells want. ``df.iloc[:, i]`` and ``df.memory_usage()`` build a Series per
# column (~20-40 us each); pandas' block manager hands over the same arrays directly.
# It is pandas' internal API, so each use falls back to the public one.

def column_values(df, i: int):
    """Column ``i``'s array (ndarray or pandas extension array), without a Series around it."""
    try:
        return df._mgr.iget_values(i)
    except AttributeError:
        return df.iloc[:, i].array


def nbytes(value) -> int:
    """A DataFrame's or Series' bytes of data and index, as ``memory_usage(deep=False)`` counts."""
    import pandas as pd

    if type(value) is pd.Series:
        return int(value.nbytes + value.index.nbytes)
    try:
        arrays = value._mgr.arrays
    except AttributeError:
        return int(value.memory_usage(index=True, deep=False).sum())
    return int(sum(a.nbytes for a in arrays) + value.index.nbytes)


def schema_key(df) -> tuple:
    """What the Arrow schema of ``df`` (pandas metadata included) depends on."""
    index = df.index
    rng = (index.start, index.stop, index.step) if type(index).__name__ == "RangeIndex" else None
    return (tuple(df.columns), tuple(map(str, frame_dtypes(df))), type(index).__name__,
            tuple(map(str, getattr(index, "dtypes", [index.dtype]))), tuple(index.names), rng,
            type(df.columns).__name__, df.columns.dtype.name, df.columns.name)


def _identity(column) -> tuple | None:
    """Which memory a column is made of, or None when that does not pin its content."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):  # the dictionary's buffers are not in buffers()
        return None
    return (str(column.type),) + tuple(
        (chunk.offset, len(chunk), chunk.null_count,
         tuple((b.address, b.size) if b is not None else None for b in chunk.buffers()))
        for chunk in column.chunks)


def _stream(schema, batches) -> Any:
    """An Arrow IPC stream in one buffer of the right size (measured first, written once)."""
    import pyarrow as pa

    mock = pa.MockOutputStream()
    with pa.ipc.new_stream(mock, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    out = pa.allocate_buffer(mock.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(out), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return out


def encode(df, blobs, memo: FrameMemo | None = None, trust_memo: bool = True) -> EncodedFrame:
    """Write ``df``'s schema and the columns not already stored; raises on frames Arrow refuses.

    ``memo`` is what the previous save of the same variable returned; with
    ``trust_memo=False`` (a full check) every column is serialised and hashed.
    """
    layout = schema_key(df)
    table = arrow_table(df, memo.table.schema if memo is not None and memo.schema_key == layout else None)
    schema_bytes = table.schema.serialize()
    known = memo.columns if (memo is not None and trust_memo) else {}
    schema_blob, written = _put(blobs, schema_bytes)
    size = schema_bytes.size
    column_blobs: list[str] = []
    identities: dict = {}
    for arrow_field, column in zip(table.schema, table.columns):
        key = _identity(column)
        blob, column_size = known.get(key, (None, 0)) if key is not None else (None, 0)
        if blob is not None and not blobs.touch(blob, within=RECHECK_BLOBS_SECONDS):
            blob = None
        if blob is None:
            blob, new, column_size = _put_column(blobs, arrow_field, column)
            written = written or new
        if key is not None:
            identities[key] = (blob, column_size)
        column_blobs.append(blob)
        size += column_size
    return EncodedFrame(schema_blob, column_blobs, size, content_hash(schema_blob, column_blobs),
                        written, FrameMemo(df, table, layout, identities))


def _put_column(blobs, arrow_field, column) -> tuple[str, bool, int]:
    """Store one column's stream: big columns that will not be compressed are streamed
    to the file from the column's own memory (no copy into one buffer first)."""
    import pyarrow as pa

    schema = pa.schema([arrow_field.remove_metadata()])
    batches = [pa.record_batch([chunk], schema=schema) for chunk in column.chunks]
    sample = _largest_buffer(column)
    if (column.nbytes >= BIG_STREAM and hasattr(blobs, "put_streamed")
            and not blobs.compresses(sample if sample is not None else b"", column.nbytes)):
        def produce(sink):
            with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
        return blobs.put_streamed(produce)
    stream = _stream(schema, batches)
    blob, new = _put(blobs, stream)
    return blob, new, stream.size


def _largest_buffer(column):
    buffers = [b for chunk in column.chunks[:1] for b in chunk.buffers() if b is not None]
    return max(buffers, key=lambda b: b.size) if buffers else None


def _put(blobs, data) -> tuple[str, bool]:
    """Store ``data``; returns its name and whether it was new."""
    digest = xxhash.xxh3_128_hexdigest(data)
    if blobs.touch(digest):
        return digest, False
    return blobs.put(data, digest=digest), True


# --- reading ------------------------------------------------------------------------


def decode(schema_view, column_views: list):
    """The DataFrame of a schema blob and its column blobs (views hash-checked, or mapped
    columns that ``used_in_place`` accepts, checked later: ``lazy``)."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(schema_view))
    if len(column_views) != len(schema):
        raise ValueError(f"{len(column_views)} column blobs for {len(schema)} columns")
    columns, bases = [], []
    for arrow_field, view in zip(schema, column_views):
        buf = pa.py_buffer(view)
        column = pa.ipc.open_stream(buf).read_all().column(0)
        if not column.type.equals(arrow_field.type):
            raise ValueError(f"column {arrow_field.name!r} holds {column.type}, not {arrow_field.type}")
        columns.append(column)
        bases.append((view, buf.address))
    table = pa.Table.from_arrays(columns, schema=schema)
    frame = zero_copy_frame(table, bases)
    if frame is not None:
        return frame
    # One block per column: consolidating them into 2-D blocks would copy every column.
    return writable_columns(table.to_pandas(split_blocks=True), bases)


def used_in_place(schema_view, view) -> bool:
    """Whether pandas gets the data of this column stream as it lies in ``view``, so that
    mapping it reads nothing: integers, floats, timestamps without a time zone and
    durations without nulls (numpy arrays over it), and pandas' own ``str`` columns
    (Arrow-backed). Other columns are converted, reading every byte: mapping them gains nothing."""
    import json

    import pyarrow as pa

    stream = pa.ipc.open_stream(pa.py_buffer(view))
    column = stream.read_all().column(0)  # reads only the stream's headers, not its data
    kind = column.type
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_duration(kind)
            or (pa.types.is_timestamp(kind) and kind.tz is None)):
        return column.null_count == 0
    if pa.types.is_large_string(kind) or pa.types.is_string(kind):
        meta = json.loads((pa.ipc.read_schema(pa.py_buffer(schema_view)).metadata or {}).get(b"pandas", b"{}"))
        types = {c.get("field_name"): c.get("numpy_type") for c in meta.get("columns", [])}
        return types.get(stream.schema.field(0).name) == "str"
    return False


def writable_columns(frame, bases: list):
    """``frame`` with the numpy columns that ``to_pandas`` left read-only over Arrow's
    memory (numbers, naive datetimes) made writable views of the same bytes: ``bases``
    gives, per column blob, the (memoryview, address) they lie in. No copy."""
    import numpy as np
    import pandas as pd

    spans = [(base, base + len(view), view) for view, base in bases]
    columns, changed = {}, False
    for i in range(frame.shape[1]):
        values = column_values(frame, i)
        array = values if isinstance(values, np.ndarray) else getattr(values, "_ndarray", None)
        if (isinstance(array, np.ndarray) and isinstance(values.dtype, np.dtype) and array.ndim == 1
                and not array.flags.writeable and array.flags.c_contiguous):
            address = array.ctypes.data
            for start, end, view in spans:
                if start <= address and address + array.nbytes <= end:
                    values = np.frombuffer(view, dtype=array.dtype, count=len(array), offset=address - start)
                    changed = True
                    break
        columns[i] = values
    if not changed:
        return frame
    out = pd.DataFrame(columns, index=frame.index, copy=False)
    out.columns = frame.columns
    return out if out.dtypes.equals(frame.dtypes) else frame


def memo_of_restored(frame, schema_view, column_blobs: list[str], sizes: list[int]) -> FrameMemo:
    """The memo a save of ``frame`` (just restored from these blobs) would have left, so that
    the next save of it hashes only the columns written since: a restored frame whose
    columns are mapped is then not read to find what changed."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(schema_view))
    kept = snapshot(frame)  # copy-on-write: a write to ``frame`` leaves these buffers as they are
    table = arrow_table(kept, schema)
    columns = {}
    for column, blob, size in zip(table.columns, column_blobs, sizes):
        key = _identity(column)
        if key is not None:
            columns[key] = (blob, size)
    return FrameMemo(kept, table, schema_key(kept), columns)


def zero_copy_frame(table, bases: list):
    """For frames of numeric columns without nulls and a RangeIndex (the big, common
    case): writable numpy columns over the bytes read from disk, no copy. None otherwise.

    ``bases`` gives, per column, the (memoryview, address) its buffers lie in.
    """
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
    for arrow_field, info, (view, base) in zip(table.schema, meta["columns"], bases):
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
        if (offset < 0 or offset + len(chunk) * dtype.itemsize > len(view)
                or (data.address + chunk.offset * dtype.itemsize) % dtype.alignment):
            return None  # unaligned data (a blob not written for mapping): converted instead
        columns[arrow_field.name] = np.frombuffer(view, dtype=dtype, count=len(chunk), offset=offset)
    spec = index[0]
    rows = pd.RangeIndex(spec["start"], spec["stop"], spec["step"], name=spec.get("name"))
    if len(rows) != table.num_rows:
        return None
    return pd.DataFrame(columns, index=rows, copy=False)
