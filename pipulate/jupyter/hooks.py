"""Hooks the workstation's Jupyter config names by import string.

``post_save_hook`` hands every save to ``pipulate.recover.versions.post_save_hook``,
which keeps the saved version for recovery. It is a thin wrapper so that a missing
or failing recovery module is logged and never turns a save into an error: the
file is already on disk when the hook runs.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def post_save_hook(model=None, os_path=None, contents_manager=None, **kwargs):
    logger = getattr(contents_manager, "log", None) or log
    try:
        from pipulate.recover.versions import post_save_hook as keep_version
    except ImportError as exc:
        logger.warning("pipulate: saved versions are not kept (%s)", exc)
        return
    try:
        keep_version(model=model, os_path=os_path, contents_manager=contents_manager, **kwargs)
    except Exception:
        logger.exception("pipulate: keeping a saved version of %s failed; the file itself is saved",
                         os_path)
