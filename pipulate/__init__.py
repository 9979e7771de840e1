"""The Pipulate workstation's state engine.

``from pipulate import pip`` gives the store of this workstation (created on
first use); ``Pipulate(home=...)`` makes one on another folder.
"""
from .errors import IntegrityError, PipulateError, StoreUnavailableError, UntrustedDataError
from .store import Pipulate

__all__ = ["Pipulate", "pip", "PipulateError", "IntegrityError", "UntrustedDataError",
           "StoreUnavailableError", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"


def __getattr__(name):
    # `pip` is made lazily so that importing the package touches no file.
    if name == "pip":
        global pip
        pip = Pipulate()
        return pip
    raise AttributeError(f"module 'pipulate' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """``%load_ext pipulate``: kernel-state persistence and the ``%state`` magics."""
    from .kernel_state.extension import load

    load(ipython)


def unload_ipython_extension(ipython):
    from .kernel_state.extension import unload

    unload(ipython)
