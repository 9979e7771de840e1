"""cloudpickle, adjusted for a kernel's namespace.

Plain cloudpickle copies the globals a notebook function reads into the pickle
and gives the restored function a private copy of them, so after a restore
``f`` would no longer see the notebook's later assignments (and a lambda that
reads a 1 GiB array would carry a copy of it). Here a function whose globals
are the kernel's namespace is pickled as its code, defaults, closure and
attributes only, and rebuilt with the namespace it is restored into as its
globals, exactly as if its cell had run again. Methods of notebook classes
are functions too and get the same treatment.
"""
from __future__ import annotations

import builtins
import contextlib
import copyreg
import io
import pickle
import threading
import types

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


class KernelPickler(cloudpickle.Pickler):
    def __init__(self, file, namespace: dict):
        super().__init__(file, protocol=5)
        self._namespace = namespace

    def reducer_override(self, obj):
        if type(obj) is types.FunctionType and obj.__globals__ is self._namespace:
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

    def __init__(self, file, namespace: dict, refs: dict, root):
        super().__init__(file, namespace)
        self._refs = refs
        self._root = id(root)
        self.used: dict[str, int] = {}

    def persistent_id(self, obj):
        name = self._refs.get(id(obj))
        if name is None or id(obj) == self._root:
            return None
        self.used[name] = id(obj)
        return (REF_TAG, name)


def dumps(value, namespace: dict, refs: dict | None = None) -> tuple[bytes, dict[str, int]]:
    """The pickle of ``value`` and the variables it refers to ({name: id})."""
    buf = io.BytesIO()
    if refs and (len(refs) > 1 or id(value) not in refs):
        pickler = SharingPickler(buf, namespace, refs, value)
        pickler.dump(value)
        return buf.getvalue(), pickler.used
    KernelPickler(buf, namespace).dump(value)
    return buf.getvalue(), {}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, values: dict):
        super().__init__(file)
        self._values = values

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == REF_TAG:
            if pid[1] in self._values:
                return self._values[pid[1]]
            raise pickle.UnpicklingError(f"it holds variable {pid[1]!r}, which was not restored")
        raise pickle.UnpicklingError("unknown reference in pickled data")


def loads(data, values: dict):
    """Unpickle (already verified) ``data``; references resolve to ``values``."""
    return _Unpickler(io.BytesIO(data), values).load()
