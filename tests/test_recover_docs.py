"""Every `pipulate recover` command and option is documented in docs/recovery.md."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "recovery.md"


def recover_parsers() -> dict[str, argparse.ArgumentParser]:
    from pipulate.recover.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(recover_parsers()))
def test_command_and_its_options_are_documented(name):
    text = DOC.read_text()
    assert f"`pipulate recover {name}" in text, f"{name} is not documented"
    for action in recover_parsers()[name]._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help" and option != "--output":
                assert option in text, f"{name} {option} is not documented"


def test_the_post_save_hook_named_in_the_docs_exists():
    from pipulate.recover.versions import post_save_hook

    assert "pipulate.recover.versions.post_save_hook" in DOC.read_text()
    assert callable(post_save_hook)


def test_recover_without_a_command_prints_help():
    from tests.test_recover_support import run_cli

    code, out, _ = run_cli()
    assert code == 2 and "sessions" in out


def test_every_recovery_page_route_is_documented(isolated_home):
    import re
    import sys

    repo = DOC.parent.parent
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    import server

    app = server.create_app(home=isolated_home)
    try:
        documented = set(re.findall(r"`(?:GET|POST) (/recovery[^ `?]*)", DOC.read_text()))
        routes = {r.path for r in app.routes if getattr(r, "path", "").startswith("/recovery")}
        assert routes, "the Recovery page is not mounted"
        assert routes <= documented, f"undocumented: {routes - documented}"
    finally:
        app.state.pip.close()
