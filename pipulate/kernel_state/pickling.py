"""cloudpickle, adjusted for a kernel's namespace, with dill for what cloudpickle refuses.

Plain cloudpickle copies the globals a notebook function reads into the pickle
and gives the restored function a private copy of them, so after a restore
``f`` would no longer see the notebook's later assignments (and a lambda that
reads a 1 GiB array would carry a copy of it). Here a function whose globals
are the kernel's namespace is pickled as its code, defaults, closure and
attributes only, and rebuilt with the namespace it is restored into as its
globals, exactly as if its cell had run again. Methods of notebook classes
are functions too and get the same treatment.

``dumps`` tries cloudpickle first (C speed; its output for notebook functions
and classes is what the rest of the engine expects). When cloudpickle raises
(weakrefs, mappingproxies of C types, WeakValueDictionary, ...), the value is
pickled again with dill's pure-Python pickler (``dill_fallback``), which keeps both
rules above: notebook functions are rebuilt in the target namespace, notebook classes use
cloudpickle's own reduction (so ``type(obj) is Cls`` holds across pickles),
and other variables' objects are written as references. dill is imported
only then. A dill pickle loads with the plain ``pickle.Unpickler`` below (it
names ``dill._dill`` functions, imported on load).

Some objects both libraries get wrong or unsafe are reduced here, in both
picklers (``_REDUCERS``): open files are reopened by path without truncating
and at their position (dill would reopen a ``"w"`` file with ``open(name,
"w")``, emptying it; cloudpickle turns a text file into a StringIO), locks keep
their state, weakref proxies, ``super`` objects and dict/set iterators keep
their type, C descriptors are looked up in their class (dill ``eval``s a repr),
and a PyCapsule is saved only as a reference to a module attribute (dill would
write its raw C pointers, which crash or run foreign code in another process).

The functions named ``_make_*``/``_reopen_file``/... are written into pickles
by name: renaming one breaks the versions saved before.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import copyreg
import importlib
import io
import os
import pickle
import re
import stat
import sys
import tempfile
import threading
import types
import weakref

import cloudpickle

_target = threading.local()


def _target_globals() -> dict:
    ns = getattr(_target, "ns", None)
    if ns is None:
        ns = {"__builtins__": builtins, "__name__": "__main__"}
        _target.ns = ns
    return ns


@contextlib.contextmanager
def restoring_into(ns: dict):
    """Functions unpickled inside this block take ``ns`` as their globals."""
    previous = getattr(_target, "ns", None)
    _target.ns = ns
    try:
        yield
    finally:
        _target.ns = previous


def _make_function(code, name, defaults, closure, kwdefaults, qualname, doc, module, annotations, attrs):
    fn = types.FunctionType(code, _target_globals(), name, defaults, closure)
    fn.__kwdefaults__ = kwdefaults
    if qualname is not None:
        fn.__qualname__ = qualname
    fn.__doc__ = doc
    fn.__module__ = module
    if annotations:
        fn.__annotations__ = annotations
    if attrs:
        fn.__dict__.update(attrs)
    return fn


def _notebook_function_reduce(obj):
    annotations = getattr(obj, "__annotations__", None)
    # Names equal to the code's own are left out (rebuilt from the code), so
    # the pickle does not depend on which string objects happen to be shared.
    code = obj.__code__
    name = None if obj.__name__ == code.co_name else obj.__name__
    qualname = None if obj.__qualname__ == getattr(code, "co_qualname", None) else obj.__qualname__
    return _make_function, (code, name, obj.__defaults__, obj.__closure__,
                            obj.__kwdefaults__, qualname, obj.__doc__, obj.__module__,
                            dict(annotations) if annotations else None,
                            dict(obj.__dict__) if obj.__dict__ else None)


class Refused(pickle.PicklingError):
    """Refused by a reducer of this module: the dill fallback would refuse it the same way."""


# --- locks -------------------------------------------------------------------------

def _make_lock(locked: bool):
    lock = threading.Lock()
    if locked:
        lock.acquire()
    return lock


def _make_rlock(count: int):
    # Held by the thread that saved it (the kernel's) -> held by the thread that restores.
    lock = threading.RLock()
    for _ in range(count):
        lock.acquire()
    return lock


def _lock_reduce(lock):
    return _make_lock, (lock.locked(),)


_COUNT = re.compile(r"\bcount=(\d+)")


def _rlock_reduce(lock):
    if lock._is_owned():
        # The count is read from the repr: releasing and re-taking the lock to learn it
        # would let a waiting thread in between.
        found = _COUNT.search(repr(lock))
        if found is None:
            raise Refused("an RLock whose count cannot be read cannot be saved")
        return _make_rlock, (int(found.group(1)),)
    # Free, or held by another thread (a handler's lock while a worker logs): that
    # thread does not exist after a restore, so the lock comes back free.
    return _make_rlock, (0,)


# --- open files ----------------------------------------------------------------------

_FILE_LAYERS = {t.__name__: t for t in (io.FileIO, io.BufferedReader, io.BufferedWriter,
                                        io.BufferedRandom, io.TextIOWrapper)}
_STD_STREAMS = ("stdout", "stderr", "stdin", "__stdout__", "__stderr__", "__stdin__")


def _std_name(obj) -> str | None:
    for name in _STD_STREAMS:
        if getattr(sys, name, None) is obj:
            return name
    return None


def _std_stream(name: str):
    if name not in _STD_STREAMS:
        raise pickle.UnpicklingError(f"{name!r} is not a standard stream")
    return getattr(sys, name)


def _file_reduce(f):
    std = _std_name(f)
    if std is not None:
        return _std_stream, (std,)
    layers = [f]
    if type(f) is io.TextIOWrapper:
        layers.append(f.buffer)
    if type(layers[-1]) in (io.BufferedReader, io.BufferedWriter, io.BufferedRandom):
        layers.append(layers[-1].raw)
    raw = layers[-1]
    if type(raw) is not io.FileIO or any(type(x).__name__ not in _FILE_LAYERS for x in layers):
        raise Refused(f"an open file over {type(raw).__name__} cannot be saved")
    name = raw.name
    # ``name`` as the notebook gave it (relative stays relative); ``path`` where it is, from
    # the kernel's working directory at save time, so it is reopened there whatever the
    # next kernel's directory.
    spec = {"layers": [type(x).__name__ for x in layers], "mode": raw.mode, "closed": f.closed,
            "name": name if isinstance(name, int) else os.fsdecode(name)}
    if not isinstance(name, int):
        spec["path"] = os.path.abspath(name)
    if type(f) is io.TextIOWrapper:
        spec.update(encoding=f.encoding, errors=f.errors, line_buffering=f.line_buffering,
                    write_through=f.write_through, text_mode=getattr(f, "mode", None))
    if f.closed:
        return _reopen_file, (spec,)
    fd = raw.fileno()
    kind = os.fstat(fd).st_mode
    if not (stat.S_ISREG(kind) or stat.S_ISCHR(kind)):
        raise Refused("an open file on a pipe, socket or block device cannot be saved")
    f.flush()
    if f.seekable():
        try:
            spec["position"] = f.tell()
        except OSError as exc:  # a text file read with next(): no position to give
            raise Refused(f"the open file's position cannot be read ({exc})") from None
    if isinstance(name, int):
        # No path (tempfile.TemporaryFile, os.fdopen): its contents go into the pickle
        # and it comes back as an unnamed temporary file holding them.
        if not stat.S_ISREG(kind):
            raise Refused("an open file without a path that is not a regular file cannot be saved")
        chunks, offset = [], 0
        try:
            while chunk := os.pread(fd, 1 << 20, offset):
                chunks.append(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise Refused(f"the contents of an open file without a path cannot be read ({exc})") from None
        spec["content"] = b"".join(chunks)
    return _reopen_file, (spec,)


def _reopen_file(spec: dict):
    """The file object again: same layers, mode and position; never truncated or replaced."""
    mode = spec["mode"]  # the FileIO's: rb, wb, ab, xb, rb+, ...
    name = spec["name"]
    path = spec.get("path", name)  # versions saved before "path" existed kept an absolute name
    if spec["closed"]:
        fd = os.open(os.devnull, os.O_RDONLY)
    elif "content" in spec:
        fd, path = tempfile.mkstemp(prefix="pipulate-restored-")
        os.unlink(path)
        view = memoryview(spec["content"])
        while view:
            view = view[os.write(fd, view):]
        name = None
    else:
        try:
            kind = os.stat(path).st_mode
        except FileNotFoundError:
            raise OSError(f"the open file {name!r} ({path}) is gone, so it cannot be reopened") from None
        if not (stat.S_ISREG(kind) or stat.S_ISCHR(kind)):
            raise OSError(f"{name!r} is no longer a regular file or a character device")
        flags = os.O_RDWR if "+" in mode else os.O_RDONLY if "r" in mode else os.O_WRONLY
        if "a" in mode:
            flags |= os.O_APPEND
        if "r" not in mode:
            flags |= os.O_CREAT  # as its open() did; never O_TRUNC: what was written stays
        fd = os.open(path, flags, 0o666)
    try:
        f = io.FileIO(fd, mode, closefd=True)
    except BaseException:
        os.close(fd)
        raise
    if name is not None:
        f.name = name
    raw = f
    for layer in reversed(spec["layers"][:-1]):
        if layer == "TextIOWrapper":
            f = io.TextIOWrapper(f, encoding=spec["encoding"], errors=spec["errors"],
                                 line_buffering=spec["line_buffering"], write_through=spec["write_through"])
            if spec.get("text_mode"):
                f.mode = spec["text_mode"]
        else:
            f = _FILE_LAYERS[layer](f)
    if spec["closed"]:
        f.close()
        return f
    position = spec.get("position")
    if position is not None and "a" not in mode:
        size = os.fstat(raw.fileno()).st_size
        if position <= size:
            f.seek(position)
        else:  # shorter now (or a text position with decoder state past the end)
            f.seek(0, os.SEEK_END)
    return f


# --- memoryviews -----------------------------------------------------------------------

def _memoryview_reduce(view):
    """A memoryview comes back as a memoryview: same bytes, format, shape and read-only
    flag (both picklers would give ``bytes``). The object it viewed is not kept: the new
    view is over a private copy."""
    return _make_memoryview, (view.tobytes(), view.format, view.shape, view.readonly)


def _make_memoryview(data: bytes, fmt: str, shape: tuple, readonly: bool):
    view = memoryview(data if readonly else bytearray(data))
    if fmt == "B" and len(shape) == 1:
        return view
    try:
        return view.cast(fmt, shape)
    except (TypeError, ValueError):  # a format cast() does not take (an explicit byte order...)
        import numpy

        array = numpy.frombuffer(view, dtype=numpy.dtype(fmt)).reshape(shape)
        return memoryview(array)


# --- weakref proxies, super, iterators, descriptors, capsules ----------------------------

class _Gone:
    pass


class _GoneCallable:
    def __call__(self, *args, **kwargs):
        pass


def _make_dead_proxy(callable_: bool):
    return weakref.proxy(_GoneCallable() if callable_ else _Gone())  # its object dies at once


_ADDRESS = re.compile(r" at (0x[0-9a-fA-F]+)>\Z")


def _proxy_reduce(proxy):
    found = _ADDRESS.search(repr(proxy))  # "<weakproxy at 0x.. to Thing at 0x..>"
    try:
        # The proxy forwards attribute access: a method bound to its object has the
        # object as __self__ (``mro`` for a class, whose __getattribute__ is unbound).
        candidates = [getattr(getattr(proxy, attr, None), "__self__", None)
                      for attr in ("__getattribute__", "mro")]
    except ReferenceError:
        return _make_dead_proxy, (type(proxy) is weakref.CallableProxyType,)
    for target in candidates:
        if found is not None and target is not None and id(target) == int(found.group(1), 16):
            # Only the proxy is restored: its object outlives the load only if something
            # else in the same pickle (or another variable, by reference) holds it.
            return weakref.proxy, (target,)
    raise Refused("the object of a weakref.proxy cannot be found")


def _super_reduce(obj):
    if obj.__self__ is None:
        return super, (obj.__thisclass__,)
    return super, (obj.__thisclass__, obj.__self__)


_ITERATORS = {
    type(iter({})): "dict_keys", type(iter({}.values())): "dict_values",
    type(iter({}.items())): "dict_items", type(reversed({})): "dict_reversed_keys",
    type(reversed({}.values())): "dict_reversed_values", type(reversed({}.items())): "dict_reversed_items",
    type(iter(set())): "set", type(iter(collections.OrderedDict())): "odict",
}


def _make_iterator(kind: str, items: list):
    """An iterator of the original type over what the original had left to yield."""
    if kind == "dict_keys":
        return iter(dict.fromkeys(items))
    if kind == "dict_values":
        return iter(dict(enumerate(items)).values())
    if kind == "dict_items":
        return iter(dict(items).items())
    if kind == "dict_reversed_keys":
        return reversed(dict.fromkeys(reversed(items)))
    if kind == "dict_reversed_values":
        return reversed(dict(enumerate(reversed(items))).values())
    if kind == "dict_reversed_items":
        return reversed(dict(reversed(items)).items())
    if kind == "set":
        return iter(set(items))
    if kind == "odict":  # keys, values and items iterators share this type
        return iter(collections.OrderedDict(enumerate(items)).values())
    raise pickle.UnpicklingError(f"unknown iterator kind {kind!r}")


def _iterator_reduce(it):
    # __reduce__ lists what is left from a copy; the iterator itself is not advanced.
    return _make_iterator, (_ITERATORS[type(it)], list(it.__reduce__()[1][0]))


def _class_dict_item(cls, name):
    return cls.__dict__[name]


def _descriptor_reduce(obj):
    owner, name = obj.__objclass__, obj.__name__
    if owner.__dict__.get(name) is not obj:
        return NotImplemented
    return _class_dict_item, (owner, name)


def _import_attr(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


_CAPSULE = re.compile(r'<capsule object "([^"]+)" at 0x[0-9a-fA-F]+>')


def _capsule_reduce(capsule):
    found = _CAPSULE.fullmatch(repr(capsule))
    parts = found.group(1).split(".") if found else []
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:i]))
        for part in parts[i:]:
            obj = getattr(obj, part, None)
        if obj is capsule:
            return _import_attr, (".".join(parts[:i]), ".".join(parts[i:]))
    raise Refused("a PyCapsule (a C pointer) that is not a module attribute cannot be saved")


_REDUCERS = {
    type(threading.Lock()): _lock_reduce,
    type(threading.RLock()): _rlock_reduce,
    weakref.ProxyType: _proxy_reduce,
    weakref.CallableProxyType: _proxy_reduce,
    super: _super_reduce,
    memoryview: _memoryview_reduce,
    types.ClassMethodDescriptorType: _descriptor_reduce,
    types.MethodDescriptorType: _descriptor_reduce,
    types.WrapperDescriptorType: _descriptor_reduce,
    types.MemberDescriptorType: _descriptor_reduce,
    types.GetSetDescriptorType: _descriptor_reduce,
    **{t: _file_reduce for t in _FILE_LAYERS.values()},
    **{t: _iterator_reduce for t in _ITERATORS},
}
try:
    _REDUCERS[getattr(types, "CapsuleType", None) or type(importlib.import_module("datetime").datetime_CAPI)] = _capsule_reduce
except (ImportError, AttributeError):
    pass


# --- the picklers ------------------------------------------------------------------------

class KernelPickler(cloudpickle.Pickler):
    def __init__(self, file, namespace: dict, buffer_callback=None):
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._namespace = namespace

    def reducer_override(self, obj):
        t = type(obj)
        if t is types.FunctionType:
            if obj.__globals__ is self._namespace:
                return _notebook_function_reduce(obj)
        else:
            special = _REDUCERS.get(t)
            if special is not None:
                return special(obj)
        if isinstance(obj, type) and obj.__module__ == "__main__":
            # Pickling an instance caches ``__slotnames__`` on its class; do it up
            # front so a class pickles the same before and after its first instance.
            try:
                copyreg._slotnames(obj)
            except Exception:
                pass
        return super().reducer_override(obj)


REF_TAG = "pipulate.var"


class SharingPickler(KernelPickler):
    """Objects that are other variables' values are written as references to them.

    ``refs`` maps ``id(object)`` -> variable name for variables stored in their own
    (non-pickle) entries. A pickled value that holds one of them (``c = [a]``,
    ``obj.data = df``) records the name instead of a copy, and is given the restored
    object back on load, so ``c[0] is a`` holds after a restore.
    """

    def __init__(self, file, namespace: dict, refs: dict, root, buffer_callback=None):
        super().__init__(file, namespace, buffer_callback)
        self._refs = refs
        self._root = id(root)
        self.used: dict[str, int] = {}

    def persistent_id(self, obj):
        name = self._refs.get(id(obj))
        if name is None or id(obj) == self._root:
            return None
        self.used[name] = id(obj)
        return (REF_TAG, name)


def dumps(value, namespace: dict, refs: dict | None = None,
          buffer_callback=None) -> tuple[bytes, dict[str, int]]:
    """The pickle of ``value`` and the variables it refers to ({name: id}).

    ``buffer_callback``: pickle's (protocol 5); ``buffers.Collector`` takes big buffers
    out of band. It may be called again from the start when dill takes over."""
    sharing = bool(refs) and (len(refs) > 1 or id(value) not in refs)
    buf = io.BytesIO()
    try:
        if sharing:
            pickler = SharingPickler(buf, namespace, refs, value, buffer_callback)
            pickler.dump(value)
            return buf.getvalue(), pickler.used
        KernelPickler(buf, namespace, buffer_callback).dump(value)
        return buf.getvalue(), {}
    except (Refused, RecursionError, MemoryError):
        raise  # dill would refuse it the same way (or recurse deeper, slower)
    except Exception as exc:
        first = exc
    from .dill_fallback import dill_pickler_class

    try:
        cls = dill_pickler_class()
    except ImportError:
        raise first from None
    if hasattr(buffer_callback, "reset"):  # what the failed attempt took out of band
        buffer_callback.reset()
    buf = io.BytesIO()
    pickler = cls(buf, namespace, refs if sharing else None, value, buffer_callback)
    pickler.dump(value)
    return buf.getvalue(), pickler.used


class MissingReference(pickle.UnpicklingError):
    """The pickle holds another variable that has not been restored (yet)."""

    def __init__(self, name: str):
        super().__init__(f"it holds variable {name!r}, which was not restored")
        self.name = name


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, values: dict, buffers=None):
        super().__init__(file, buffers=buffers)
        self._values = values

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == REF_TAG:
            if pid[1] in self._values:
                return self._values[pid[1]]
            raise MissingReference(pid[1])
        raise pickle.UnpicklingError("unknown reference in pickled data")


def loads(data, values: dict, buffers=None):
    """Unpickle (already verified) ``data``; references resolve to ``values``; ``buffers``:
    the out-of-band ones, in order (``buffers``)."""
    return _Unpickler(io.BytesIO(data), values, buffers).load()
