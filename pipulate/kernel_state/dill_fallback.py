"""The fallback of ``pickling.dumps``: dill's pure-Python pickler, for what cloudpickle refuses.

Kept apart from ``pickling`` because nothing here is written into pickles by name
(the ``_make_*`` functions it uses stay there), and dill is imported only on first use.
"""
from __future__ import annotations

import copyreg
import pickle
import sys
import types

from .pickling import (_REDUCERS, _STD_STREAMS, SharingPickler, _import_attr, _notebook_function_reduce,
                       _std_stream, _target_globals)

_DillKernelPickler = None


def dill_pickler_class():
    """dill's Pickler with the rules of ``pickling.KernelPickler`` and ``SharingPickler``
    (made on first use: dill costs ~70 ms to import, which a kernel that never needs it
    should not pay)."""
    global _DillKernelPickler
    if _DillKernelPickler is not None:
        return _DillKernelPickler
    import dill
    from cloudpickle import cloudpickle as cp

    class_reduce = getattr(cp, "_class_reduce", None)
    singletons = (range, type(Ellipsis), type(NotImplemented))
    plain = frozenset({int, float, complex, str, bytes, bytearray, bool, type(None),
                       list, tuple, set, frozenset})

    class Dispatch(dict):
        """dill's table, but a plain dict (once reducer_override has seen it) is saved by
        pickle's own save_dict: dill's compares every dict with __main__'s, 4x slower."""

        def get(self, key, default=None):
            if key is dict:
                return pickle._Pickler.save_dict
            return dill.Pickler.dispatch.get(key, default)

    class DillKernelPickler(dill.Pickler):
        # recurse: a function from elsewhere takes only the globals it reads, not its
        # whole module dict; byref=False with cloudpickle's reduction for dynamic classes;
        # CONTENTS_FMODE: a file dill reopens itself (not one of ours) is never truncated.
        dispatch = Dispatch()

        def __init__(self, file, namespace: dict, refs: dict | None, root, buffer_callback=None):
            super().__init__(file, protocol=5, byref=False, recurse=True, fmode=dill.CONTENTS_FMODE,
                             buffer_callback=buffer_callback)
            self._namespace = namespace
            self._refs = refs
            self._root = id(root)
            self.used: dict[str, int] = {}
            main = sys.modules.get("__main__")
            self._main_dict = getattr(main, "__dict__", None)
            self._std = {id(getattr(sys, n)): n for n in _STD_STREAMS if getattr(sys, n, None) is not None}

        def persistent_id(self, obj):
            if self._refs is None:
                return None
            return SharingPickler.persistent_id(self, obj)

        def reducer_override(self, obj):
            t = type(obj)
            if t in plain:
                return NotImplemented
            if t is types.FunctionType:
                if obj.__globals__ is self._namespace:
                    return _notebook_function_reduce(obj)
                return NotImplemented
            if t is dict:
                # The namespace (or __main__'s dict) held by some object: the namespace it
                # is restored into, never a copy of every variable; a module's dict: by name.
                if obj is self._namespace or obj is self._main_dict:
                    return _target_globals, ()
                name = obj.get("__name__")
                if type(name) is str and getattr(sys.modules.get(name), "__dict__", None) is obj:
                    return _import_attr, (name, "__dict__")
                return NotImplemented
            special = _REDUCERS.get(t)
            if special is not None:
                return special(obj)
            if t in singletons:  # dill would write eval(repr(obj))
                return obj.__reduce_ex__(self.proto)
            if isinstance(obj, type):
                if obj.__module__ == "__main__":
                    try:
                        copyreg._slotnames(obj)
                    except Exception:
                        pass
                # The same reduction as the cloudpickle path, so a class restored from
                # both kinds of pickle is one class (cloudpickle tracks it by id).
                if class_reduce is not None:
                    return class_reduce(obj)
                return NotImplemented
            name = self._std.get(id(obj))  # e.g. ipykernel's sys.stderr held by a logging handler
            if name is not None:
                return _std_stream, (name,)
            return NotImplemented

    _DillKernelPickler = DillKernelPickler
    return DillKernelPickler
