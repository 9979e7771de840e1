"""flake.nix and flake.lock with the real `nix` (Debian's nix-bin), offline.

nixpkgs is replaced by a stand-in (tests/nix_helpers.py) through `--override-input`; the
committed flake.lock is read but its nixpkgs is never fetched. `nix eval` evaluates the
shells on every system; `nix develop` builds them and runs their hooks for real: in a copy of
the checkout, `./install.sh setup` makes .venv with the flake's Python, and the default shell
starts both servers on a terminal, as a user's `nix develop` does.
"""
from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest

from .conftest import REPO, copy_checkout
from .nix_helpers import SYSTEMS, Nix, Terminal, flake_copy, git_checkout
from .test_up import free_ports

pytestmark = pytest.mark.backends("embedded", reason="the flake's shells (test_up runs the servers on both backends)")

PIN = {"lastModified": 1767313136, "narHash": "sha256-16KkgfdYqjaeRGBaYsNrhPRRENs0qzkQVUooNHtoy2w=",
       "owner": "NixOS", "repo": "nixpkgs", "rev": "ac62194c3917d5f474c1a844b6fd6da2db95077d",
       "type": "github"}
START_TIMEOUT = 120
PROMPT = "at-the-shell-prompt"


@pytest.fixture(scope="module")
def nix(tmp_path_factory) -> Nix:
    return Nix(tmp_path_factory.mktemp("nix"))


@pytest.fixture(scope="module")
def flake(nix) -> Path:
    return flake_copy(nix.root / "flake")


def test_flake_lock_pins_one_nixos_release_commit(nix, flake):
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}
    assert lock["nodes"]["nixpkgs"]["locked"] == PIN
    assert lock["nodes"]["nixpkgs"]["original"] == {"owner": "NixOS", "ref": "nixos-25.05",
                                                    "repo": "nixpkgs", "type": "github"}
    # Nix takes the lock as it is (it matches flake.nix's input, so nothing is re-locked or
    # fetched, which would fail offline), and reports the same pin.
    meta = nix.run_plain("flake", "metadata", "--json", str(flake))
    assert meta.returncode == 0, meta.stderr
    assert "lock file" not in meta.stderr, meta.stderr
    assert json.loads(meta.stdout)["locks"]["nodes"]["nixpkgs"]["locked"] == PIN


SUMMARY = """shells: builtins.mapAttrs (system: pair: builtins.mapAttrs (name: shell: {
  inherit (shell) drvPath PYTHON shellHook UV_PYTHON_DOWNLOADS;
  packages = map (p: p.name) shell.packages;
  LD_LIBRARY_PATH = shell.LD_LIBRARY_PATH or null;
}) pair) shells"""


def test_every_system_has_a_starting_shell_and_a_quiet_one(nix, flake):
    result = nix.run("eval", "--json", f"{flake}#devShells", "--apply", SUMMARY, cwd=flake)
    assert result.returncode == 0, result.stderr
    shells = json.loads(result.stdout)
    assert sorted(shells) == sorted(SYSTEMS)
    for system, pair in shells.items():
        assert set(pair) == {"default", "quiet"}, system
        for name, shell in pair.items():
            assert shell["drvPath"].startswith(f"{nix.store}/") and shell["drvPath"].endswith(".drv")
            assert shell["PYTHON"].endswith("-python3-3.11/bin/python3.11"), shell["PYTHON"]
            assert {"python3-3.11", "uv", "git", "sqlite"} <= set(shell["packages"])
            assert shell["UV_PYTHON_DOWNLOADS"] == "never"
            for forbidden in ("git reset", "git pull", "git checkout", "git stash", "git clean", "git fetch"):
                assert forbidden not in shell["shellHook"], (system, name, forbidden)
        linux = system.endswith("-linux")
        assert ("chromium" in pair["default"]["packages"]) == linux
        assert (pair["default"]["LD_LIBRARY_PATH"] or "").endswith("-zlib/lib") == linux
        assert pair["default"]["drvPath"].endswith("-pipulate-workstation.drv")
        assert pair["quiet"]["drvPath"].endswith("-pipulate-quiet.drv")


def develop(nix: Nix, flake: str, shell: str, cwd: Path, script: str, env: dict | None = None, timeout=300):
    """`nix develop FLAKE#SHELL -c bash -c SCRIPT`: the shellHook runs first, then SCRIPT."""
    return nix.run("develop", f"{flake}#{shell}", "-c", "bash", "-c", script, cwd=cwd, env=env,
                   timeout=timeout)


STUB_INSTALL = """#!/bin/sh
# Stands in for install.sh (the real one runs in the test below): records the call, makes a
# .venv whose `pipulate` says how it was called.
echo "install.sh $*" >> install.log
mkdir -p .venv/bin
printf '#!/bin/sh\\necho "pipulate called: $*"\\n' > .venv/bin/pipulate
chmod +x .venv/bin/pipulate
"""


def test_the_hooks_start_only_in_a_checkout_and_only_when_asked(nix, flake, tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "install.sh").write_text(STUB_INSTALL)
    (repo / "install.sh").chmod(0o755)
    git_checkout(repo)
    show = 'echo "venv=$VIRTUAL_ENV"; command -v pipulate'

    # From a subfolder of the checkout: set up at its root, then `pipulate up`.
    started = develop(nix, str(flake), "default", repo / "sub", show)
    assert started.returncode == 0, started.stderr
    assert (repo / "install.log").read_text() == "install.sh setup\n"
    assert "pipulate called: up" in started.stdout
    assert f"venv={repo / '.venv'}" in started.stdout

    skipped = develop(nix, str(flake), "default", repo, show, env={"PIPULATE_NO_UP": "1"})
    assert skipped.returncode == 0, skipped.stderr
    assert "pipulate called" not in skipped.stdout
    assert str(repo / ".venv" / "bin" / "pipulate") in skipped.stdout

    quiet = develop(nix, str(flake), "quiet", repo, show)
    assert quiet.returncode == 0, quiet.stderr
    assert "pipulate called" not in quiet.stdout
    assert (repo / "install.log").read_text() == "install.sh setup\n" * 3

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    lost = develop(nix, str(flake), "default", outside, show)
    assert "run nix develop inside the workstation's checkout" in lost.stderr
    assert "pipulate called" not in lost.stdout and "venv=\n" in lost.stdout


def test_nix_develop_sets_up_the_checkout_and_starts_both_servers(nix, tmp_path, isolated_home):
    checkout = git_checkout(copy_checkout(tmp_path / "checkout"))
    system = nix.run_plain("eval", "--impure", "--raw", "--expr", "builtins.currentSystem").stdout
    drv = nix.run("eval", "--raw", f".#devShells.{system}.default.drvPath", cwd=checkout)
    assert drv.returncode == 0, drv.stderr
    assert drv.stdout.startswith(f"{nix.store}/") and drv.stdout.endswith("-pipulate-workstation.drv")
    assert Path(drv.stdout).is_file()  # written to the store, as `nix develop` needs it

    # The quiet shell: the real ./install.sh setup, with the flake's Python, .venv on the PATH.
    quiet = develop(nix, ".", "quiet", checkout,
                    'command -v pipulate; echo "venv=$VIRTUAL_ENV"; echo "python=$PYTHON"', timeout=900)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "install.sh: installing locked dependencies from requirements.lock" in quiet.stderr
    assert "install.sh: environment ready: .venv" in quiet.stderr
    assert f"{checkout}/.venv/bin/pipulate\n" in quiet.stdout
    assert f"venv={checkout}/.venv\n" in quiet.stdout
    python = quiet.stdout.split("python=")[1].split()[0]
    assert python.startswith(f"{nix.store}/") and python.endswith("/bin/python3.11")
    cfg = (checkout / ".venv" / "pyvenv.cfg").read_text()
    assert f"home = {Path(python).parent}\n" in cfg, cfg  # .venv is made from the flake's Python

    # The default shell, as a user starts it: no command, an interactive bash on a terminal.
    # Its hook sets up (nothing to install now) and runs `pipulate up` in the foreground.
    web_port, lab_port = free_ports(2)
    env = {**nix.env, "PIPULATE_PORT": str(web_port), "PIPULATE_JUPYTER_PORT": str(lab_port),
           "PIPULATE_OPEN_BROWSER": "off", "PIPULATE_HOME": str(isolated_home),
           "PIPULATE_STARTUP_TIMEOUT": str(START_TIMEOUT), "PIPULATE_STOP_TIMEOUT": "10", "TERM": "dumb",
           # Printed at each prompt: the shell waiting for input means the hook has ended.
           "PROMPT_COMMAND": f"echo {PROMPT}"}
    shell = Terminal(nix.argv("develop", "--log-format", "raw"), cwd=checkout, env=env)
    try:
        web = shell.wait_for(r"pipulate up: web app: +(\S+)", START_TIMEOUT + 60, unless=PROMPT).group(1)
        lab = shell.wait_for(r"pipulate up: JupyterLab: +(\S+)", 30).group(1)
        assert web.startswith(f"http://127.0.0.1:{web_port}/") and f":{lab_port}/" in lab
        assert "install.sh: environment ready" in shell.text and "installing" not in shell.text
        # As a browser opens them: the web app's first visit sets its cookie and redirects.
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        for url in (web, lab):
            with browser.open(url, timeout=30) as answer:
                assert answer.status == 200, url
        servers = psutil.Process(shell.proc.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in servers]
        assert any("uvicorn" in c or "server" in c for c in commands), commands
        assert any("jupyter" in c for c in commands), commands

        # SIGTERM to the foreground job (`pipulate up`, the group Ctrl-C would reach).
        os.killpg(shell.foreground_group(), signal.SIGTERM)
        shell.wait_for(r"pipulate up: stopped", 60)
        _, alive = psutil.wait_procs([p for p in servers if p.pid != shell.proc.pid], timeout=60)
        assert not alive, [p.cmdline() for p in alive]
        for port in (web_port, lab_port):
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        shell.close()
