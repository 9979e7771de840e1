"""Hello: first name, then last name, then the greeting.

The same job and step names as notebooks/hello_world.ipynb: key ``hello`` is
job ``hello`` with steps ``first_name``, ``last_name`` and ``greeting``, so
``pip.set("hello", "first_name", "Mike")`` in a notebook shows here and the
other way round.
"""
from pipulate.web import Step, Workflow

APP_NAME = "hello"
TITLE = "Hello"
ORDER = 10
DESCRIPTION = "The smallest workflow: a name in two steps, then a greeting. Shares its job with hello_world.ipynb."


def _name(text, state):
    return None if any(c.isalpha() for c in text) else "a name needs at least one letter."


class Hello(Workflow):
    APP_NAME = APP_NAME
    TITLE = TITLE
    DESCRIPTION = DESCRIPTION
    KEY_PLACEHOLDER = "hello"
    steps = [
        Step("first_name", "First name", placeholder="Mike", validate=_name, max_chars=200),
        Step("last_name", "Last name", placeholder="Levin", validate=_name, max_chars=200),
        Step("greeting", "Greeting", help="Suggested from the two names; change it if you like.",
             suggest=lambda s: f"Hello, {s.get('first_name', '')} {s.get('last_name', '')}!", max_chars=500),
    ]


def register(app, rt, pip):
    Hello(pip).register(app)
