"""Per-type encoding of one kernel variable, hashed before anything is written.

``prepare(value)`` picks the format, measures the value and computes its
*content hash* (xxh3-128): for arrays over the ``.npy`` header and the array's
own memory (which is also the blob's name, so nothing is copied), for
everything else over the encoded bytes. The caller compares that hash with the
previous version's and only then calls ``write`` for the variables that changed.
Big DataFrames are not prepared here: ``frames`` stores them one blob per column.

Formats (the state engine's names, ``pipulate.codecs``): ``json``/``json+t``
(inline in the manifest when small), ``npy``, ``arrow-columns`` (``frames``),
``arrow`` (whole frames, read for versions saved before), ``arrow-series``,
``pickle`` (cloudpickle, signed; big buffers out of band: ``buffers``) and ``module`` (an import, by name).
Compression: every blob goes through ``BlobStore``, which compresses with zstd
only when a sample shrinks by a fifth, and past 1 MiB only when that saves time on
this disk (so Arrow/npy of random floats, already compact data and, on fast disks,
most big blobs stay raw);
``Settings.compress`` switches it off.
"""
from __future__ import annotations

import io
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import xxhash

from .. import codecs
from . import buffers
from .frames import nbytes as frames_nbytes, zero_copy_frame
from .pickling import dumps as pickle_dumps
from .store import Entry

MODULE = "module"


# Objects of the kernel and the workstation themselves (the shell, `pip`): not the user's
# data, and made again by their import, so they are never saved (nor reported as failures).
OWN_PACKAGES = ("IPython", "ipykernel", "zmq", "pipulate")
_OWN = "'s own object ("


def own_object_reason(package: str, type_text: str) -> str:
    return f"{package}{_OWN}{type_text})"


def is_own_value(value) -> bool:
    """Whether ``value`` is one of OWN_PACKAGES' objects (the shell, ``pip``)."""
    return (type(value).__module__ or "").split(".")[0] in OWN_PACKAGES


def is_own_object(reason: str) -> bool:
    """Whether a skipped variable's ``reason`` says it is one of OWN_PACKAGES' objects."""
    return any(reason.startswith(package + _OWN) for package in OWN_PACKAGES)


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
                     self.inline, None, self.extra.get("parts"))


def type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__ or ""
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module.split('.')[0]}.{kind.__qualname__}"


def estimated_size(value: Any) -> int | None:
    """A cheap size for values that hold big buffers (None: not known before encoding)."""
    # ``issubclass(type(...))``, not ``isinstance``: isinstance asks the value for its
    # ``__class__``, which a dead ``weakref.proxy`` answers with ReferenceError.
    kind = type(value)
    np = sys.modules.get("numpy")
    if np is not None and issubclass(kind, np.ndarray):
        return int(value.nbytes)
    pd = sys.modules.get("pandas")
    if pd is not None and issubclass(kind, (pd.DataFrame, pd.Series)):
        try:
            return frames_nbytes(value)
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
        # The shape only: dtypes and labels would build pandas objects on every cell, and
        # copy-on-write means a frame changes only through code that names it.
        return ("DataFrame", value.shape)
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
    if issubclass(type(value), types.ModuleType):  # not isinstance: see ``estimated_size``
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
    if pd is not None and type(value) in (pd.Series, pd.DataFrame):  # one Arrow blob (big frames: ``frames``)
        encoded = codecs._encode_pandas(value)
        if encoded is not None:
            return _prepared_bytes(encoded.format, value, encoded.data, inline_limit)
    package = (type(value).__module__ or "").split(".")[0]
    if package in OWN_PACKAGES:
        raise Unsaveable(own_object_reason(package, type_name(value)))
    collector = buffers.Collector()
    try:
        data, used = pickle_dumps(value, namespace, refs, collector)
    except RecursionError:
        raise Unsaveable("too deeply nested to pickle") from None
    except Exception as exc:
        raise Unsaveable(_reason(exc)) from None
    extra = {"deps": used}
    if collector.views:  # big buffers out of band: their names are signed with the pickle
        extra.update(views=collector.views, parts=buffers.digests_of(collector.views))
        data = buffers.signed_body(data, extra["parts"])
    size = len(data) + sum(v.nbytes for v in collector.views)
    return Prepared(codecs.PICKLE, type_name(value), size, xxhash.xxh3_128_hexdigest(data),
                    payload=lambda: [signer.sign(data)], sign=True, extra=extra)


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


def npy_data_offset(view) -> int:
    """Where an .npy blob's data starts (from its header's length field alone)."""
    if view[6] == 1:
        return 10 + int.from_bytes(view[8:10], "little")
    return 12 + int.from_bytes(view[8:12], "little")


def decode_frame(view: memoryview):
    """A DataFrame from a whole-frame Arrow blob (versions saved before ``frames``)."""
    import pyarrow as pa

    buf = pa.py_buffer(view)
    table = pa.ipc.open_file(buf).read_all()
    frame = zero_copy_frame(table, [(view, buf.address)] * table.num_columns)
    # One block per column: consolidating them into 2-D blocks would copy every column.
    return frame if frame is not None else table.to_pandas(split_blocks=True)


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
    buffers.write(prepared.extra, blobs)  # before the pickle that names them
    compress = None if COMPRESS_BY_FORMAT.get(prepared.format, False) else False
    return blobs.put_chunks(prepared.payload(), digest=prepared.digest, compress=compress)
