"""Turning any Python value into bytes and back, with its type.

Each value gets the most open format that keeps its type:

=============  ==========================================================
``json``       JSON types (None, bool, int, finite float, str, list, dict
               with str keys): plain JSON text, readable with sqlite3.
``json+t``     JSON with tagged extras (datetime, date, time, timedelta,
               Decimal, UUID, Path, bytes, tuple, set, frozenset, complex,
               non-finite floats, dicts with other keys).
``npy``        a numpy array without Python objects in it.
``arrow``      a pandas DataFrame (Arrow IPC; categoricals, datetimes with
               time zones and the index survive).
``arrow-series`` a pandas Series, the same way.
``pickle``     anything else, with cloudpickle (notebook-defined functions,
               classes and instances included), signed.
=============  ==========================================================

Only exact types take the open formats: a subclass (an ``OrderedDict``, an
``IntEnum``, ``np.float64``) is pickled so it comes back as itself.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import math
import pathlib
import uuid
from dataclasses import dataclass
from typing import Any

from .signing import Signer

JSON = "json"
TAGGED_JSON = "json+t"
NPY = "npy"
ARROW = "arrow"
ARROW_SERIES = "arrow-series"
PICKLE = "pickle"
FORMATS = (JSON, TAGGED_JSON, NPY, ARROW, ARROW_SERIES, PICKLE)
TEXT_FORMATS = (JSON, TAGGED_JSON)

_TAG = "$t"
_SERIES_NAME_KEY = b"pipulate.series_name"


@dataclass(frozen=True)
class Encoded:
    format: str
    data: bytes  # utf-8 JSON text for the text formats

    @property
    def is_text(self) -> bool:
        return self.format in TEXT_FORMATS


class _NotJSON(Exception):
    pass


# --- tagged JSON -----------------------------------------------------------

def _tagged(tag: str, value: Any) -> dict:
    return {_TAG: tag, "v": value}


_PATH_TYPES = {cls.__name__: cls for cls in (
    pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath)}


_PLAIN = frozenset({str, int, bool, type(None)})


def _to_tree(value: Any, flags: list) -> Any:
    """A JSON tree for ``value``; appends to ``flags`` when a tag was needed."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        flags.append(True)
        return _tagged("float", repr(value))
    if kind is list:
        if _PLAIN.issuperset(map(type, value)):  # a flat list of strings or ints: as it is
            return value
        return [_to_tree(v, flags) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value) and _TAG not in value:
            return {k: _to_tree(v, flags) for k, v in value.items()}
        flags.append(True)
        return _tagged("dict", [[_to_tree(k, flags), _to_tree(v, flags)] for k, v in value.items()])
    flags.append(True)
    if kind is tuple:
        return _tagged("tuple", [_to_tree(v, flags) for v in value])
    if kind is set or kind is frozenset:
        return _tagged(kind.__name__, [_to_tree(v, flags) for v in value])
    if kind is dt.datetime:
        return _tagged("datetime", [value.isoformat(), value.fold])
    if kind is dt.date:
        return _tagged("date", value.isoformat())
    if kind is dt.time:
        return _tagged("time", [value.isoformat(), value.fold])
    if kind is dt.timedelta:
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if kind is decimal.Decimal:
        return _tagged("Decimal", str(value))
    if kind is uuid.UUID:
        return _tagged("UUID", str(value))
    if kind is bytes or kind is bytearray:
        return _tagged(kind.__name__, base64.b64encode(value).decode("ascii"))
    if kind is complex:
        return _tagged("complex", [repr(value.real), repr(value.imag)])
    if kind.__name__ in _PATH_TYPES and _PATH_TYPES[kind.__name__] is kind:
        return _tagged(kind.__name__, str(value))
    raise _NotJSON(kind)


def _from_tree(node: Any) -> Any:
    if type(node) is list:
        return [_from_tree(v) for v in node]
    if type(node) is not dict:
        return node
    if _TAG not in node:
        return {k: _from_tree(v) for k, v in node.items()}
    tag, v = node[_TAG], node["v"]
    if tag == "float":
        return float(v)
    if tag == "dict":
        return {_from_tree(k): _from_tree(val) for k, val in v}
    if tag == "tuple":
        return tuple(_from_tree(x) for x in v)
    if tag == "set":
        return {_from_tree(x) for x in v}
    if tag == "frozenset":
        return frozenset(_from_tree(x) for x in v)
    if tag == "datetime":
        return dt.datetime.fromisoformat(v[0]).replace(fold=v[1])
    if tag == "date":
        return dt.date.fromisoformat(v)
    if tag == "time":
        return dt.time.fromisoformat(v[0]).replace(fold=v[1])
    if tag == "timedelta":
        return dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if tag == "Decimal":
        return decimal.Decimal(v)
    if tag == "UUID":
        return uuid.UUID(v)
    if tag in ("bytes", "bytearray"):
        raw = base64.b64decode(v)
        return raw if tag == "bytes" else bytearray(raw)
    if tag == "complex":
        return complex(float(v[0]), float(v[1]))
    if tag in _PATH_TYPES:
        return _PATH_TYPES[tag](v)
    raise ValueError(f"unknown tag {tag!r} in stored JSON")


def _encode_json(value: Any) -> Encoded | None:
    flags: list = []
    try:
        tree = _to_tree(value, flags)
    except (_NotJSON, RecursionError):
        return None
    text = json.dumps(tree, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Encoded(TAGGED_JSON if flags else JSON, text.encode("utf-8"))


# --- numpy and pandas --------------------------------------------------------

def _encode_numpy(value: Any) -> Encoded | None:
    import numpy as np

    if type(value) is not np.ndarray or value.dtype.hasobject:
        return None
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return Encoded(NPY, buf.getvalue())


def frame_dtypes(df):
    """The dtypes of ``df``'s columns, in order, from pandas' block manager: ``df.dtypes``
    builds a Series of them. The block manager is pandas' internal API, hence the fallback."""
    try:
        return df._mgr.get_dtypes()
    except AttributeError:
        return df.dtypes


def _arrow_safe_frame(df) -> bool:
    """True when Arrow gives this frame back exactly (labels, dtypes, values)."""
    import pandas as pd

    cols = df.columns
    if isinstance(cols, pd.MultiIndex):
        return False
    labels = cols.tolist()  # one conversion, not pandas' iterator or a hash table (is_unique)
    if not all(type(c) is str for c in labels) or len(set(labels)) != len(labels):
        return False
    # One pass over the dtypes; only object columns are looked into (the rare, slow case).
    for i, dtype in enumerate(frame_dtypes(df)):
        if dtype == object and pd.api.types.infer_dtype(df.iloc[:, i], skipna=True) not in ("string", "empty"):
            return False
    if df.index.dtype == object and pd.api.types.infer_dtype(df.index, skipna=True) not in ("string", "empty"):
        return False
    return True


def _arrow_bytes(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def loaded_module(name: str):
    """``sys.modules[name]`` once its import has finished, else None.

    In a threaded server another thread may be importing numpy or pandas right
    now: the half-initialised module is already in ``sys.modules`` but has no
    ``ndarray`` or ``DataFrame`` yet. A value of its types cannot exist before
    its import finished, so "not loaded" is the right answer then.
    """
    import sys

    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _encode_pandas(value: Any) -> Encoded | None:
    pd = loaded_module("pandas")
    if pd is None:
        return None
    import pyarrow as pa

    try:
        if type(value) is pd.DataFrame:
            if not _arrow_safe_frame(value):
                return None
            return Encoded(ARROW, _arrow_bytes(pa.Table.from_pandas(value)))
        if type(value) is pd.Series:
            if value.name is not None and type(value.name) is not str:
                return None
            frame = value.to_frame(name="series")
            if not _arrow_safe_frame(frame):
                return None
            table = pa.Table.from_pandas(frame)
            meta = dict(table.schema.metadata or {})
            meta[_SERIES_NAME_KEY] = json.dumps(value.name).encode()
            return Encoded(ARROW_SERIES, _arrow_bytes(table.replace_schema_metadata(meta)))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return None


def _decode_arrow(data: bytes | memoryview, series: bool) -> Any:
    import pyarrow as pa

    table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
    frame = table.to_pandas()
    if not series:
        return frame
    name = json.loads(table.schema.metadata[_SERIES_NAME_KEY])
    return frame["series"].rename(name)


# --- the two entry points ----------------------------------------------------

def encode(value: Any, signer: Signer) -> Encoded:
    """The most open format that gives ``value`` back with its type."""
    for attempt in (_encode_json, _encode_numpy, _encode_pandas):
        encoded = attempt(value)
        if encoded is not None:
            return encoded
    return Encoded(PICKLE, signer.sign(dumps_pickle(value)))


def dumps_pickle(value: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(value, protocol=5)


def decode(fmt: str, data: bytes | memoryview, signer: Signer, what: str = "value") -> Any:
    """The value ``data`` holds; pickles are verified before they are loaded."""
    if fmt == JSON:
        return json.loads(bytes(data))
    if fmt == TAGGED_JSON:
        return _from_tree(json.loads(bytes(data)))
    if fmt == NPY:
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if fmt == ARROW:
        return _decode_arrow(data, series=False)
    if fmt == ARROW_SERIES:
        return _decode_arrow(data, series=True)
    if fmt == PICKLE:
        import pickle

        return pickle.loads(signer.verify(data, what))
    raise ValueError(f"{what}: unknown stored format {fmt!r}")
