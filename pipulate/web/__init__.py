"""The web side of the workstation: the workflow framework and the pieces apps share.

Apps (``apps/*.py``) import everything they need from here, FastHTML's HTML
components included, so FastHTML is imported only by ``pipulate.web`` and
``server.py``, never by the state engine::

    from pipulate.web import *      # Div, Form, Button, ..., Workflow, Step, page, fail, ...

See docs/web.md for the app convention and the routes.
"""
from fasthtml.common import *  # noqa: F401,F403  (re-exported for the apps)
from fasthtml.common import FastHTML, HttpHeader, to_xml  # noqa: F401

from ..display import local_time, plural, when  # noqa: F401  (one way of showing times and counts)
from .components import body_wrap, clear_flash, flash, headers, page  # noqa: F401
from .render import Damaged, human_size, summary, to_jsonable, type_name, value_view  # noqa: F401
from .urls import app_url  # noqa: F401  (every address the app emits: docs/web.md)
from .state import (check_key, fail, job_app, job_rows, keys_for_app, safe_get, safe_read,  # noqa: F401
                    step_names)
from .workflow import FINALIZED, Step, Workflow  # noqa: F401
