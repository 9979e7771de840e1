"""Kernel-state persistence: a notebook's variables survive kernel restarts.

``%load_ext pipulate`` (``pipulate.load_ipython_extension``) saves the kernel's
variables after every cell that runs without error and restores them when a
fresh kernel loads the extension. ``KernelStateStore`` is the API the web app
and the CLI use. See docs/kernel-state.md.
"""
from .ids import notebook_id_for_path, validate_notebook_id
from .store import Entry, KernelStateStore, Manifest

__all__ = ["KernelStateStore", "validate_notebook_id", "notebook_id_for_path", "Entry", "Manifest"]
