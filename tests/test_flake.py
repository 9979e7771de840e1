"""flake.nix parses, and its outputs evaluate with Debian's nix-bin, offline.

Without network the nixpkgs input cannot be fetched, so the outputs function is
called with a stand-in for nixpkgs (below): its `lib` functions are real
implementations, its packages are named placeholders. What is evaluated is the
flake's own logic (systems, shells, hooks, environment); what is not is
nixpkgs itself and the build of the shells (that needs `nix develop` online).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLAKE = REPO / "flake.nix"
SYSTEMS = ["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"]

STUB = r"""
let
  flake = import FLAKE_PATH;
  systems = SYSTEMS_LIST;
  pkg = name: { inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    optionals = cond: list: if cond then list else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: attrs: if cond then attrs else { };
    makeLibraryPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/lib") ps);
  };
  pkgsFor = system: {
    inherit lib;
    mkShell = attrs: attrs;
    python311 = pkg "python3-3.11"; python312 = pkg "python3-3.12"; python313 = pkg "python3-3.13";
    uv = pkg "uv"; git = pkg "git"; sqlite = pkg "sqlite"; curl = pkg "curl";
    chromium = pkg "chromium"; zlib = pkg "zlib";
    stdenv = { isLinux = builtins.match ".*-linux" system != null;
               isDarwin = builtins.match ".*-darwin" system != null; cc.cc.lib = pkg "gcc-lib"; };
  };
  nixpkgs = { inherit lib; legacyPackages = lib.genAttrs systems pkgsFor; };
  out = flake.outputs { self = out; inherit nixpkgs; };
in {
  inherit (flake) description;
  inputs = builtins.mapAttrs (name: input: input.url) flake.inputs;
  devShells = out.devShells;
}
"""


def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if not found:
        pytest.fail("nix-instantiate is not installed: the flake cannot be checked. Install Debian's "
                    "nix-bin (apt-get install nix-bin; .ci/run does this) and run the tests again.")
    return found


def run_nix(*args: str) -> subprocess.CompletedProcess:
    # dummy://: evaluate without a Nix store or daemon (works as any user, builds nothing).
    return subprocess.run([nix_instantiate(), "--store", "dummy://", *args],
                          capture_output=True, text=True, timeout=120)


def evaluated() -> dict:
    expr = STUB.replace("FLAKE_PATH", str(FLAKE)).replace(
        "SYSTEMS_LIST", "[ " + " ".join(f'"{s}"' for s in SYSTEMS) + " ]")
    result = run_nix("--eval", "--strict", "--json", "-E", expr)
    assert result.returncode == 0, f"flake.nix does not evaluate:\n{result.stderr}"
    return json.loads(result.stdout)


def test_flake_parses():
    result = run_nix("--parse", str(FLAKE))
    assert result.returncode == 0, result.stderr


def test_flake_pins_nixpkgs_to_a_release_branch_or_a_commit():
    flake = evaluated()
    assert flake["description"]
    assert set(flake["inputs"]) == {"nixpkgs"}
    url = flake["inputs"]["nixpkgs"]
    assert re.fullmatch(r"github:NixOS/nixpkgs/(nixos-\d\d\.\d\d|[0-9a-f]{40})", url), url


def test_flake_has_a_starting_shell_and_a_quiet_one_on_every_system():
    shells = evaluated()["devShells"]
    assert sorted(shells) == sorted(SYSTEMS)
    for system, pair in shells.items():
        assert set(pair) >= {"default", "quiet"}, system
        for name, shell in pair.items():
            python = shell["PYTHON"]
            assert re.search(r"python3-3\.(1[1-9])/bin/python3\.\1$", python), python
            assert any("sqlite" in p for p in shell["packages"]) and any("git" in p for p in shell["packages"])
            assert "./install.sh setup" in shell["shellHook"]
        assert "pipulate up" in pair["default"]["shellHook"]
        assert "pipulate up" not in pair["quiet"]["shellHook"]
        if system.endswith("linux"):
            assert any("chromium" in p for p in pair["default"]["packages"])
            assert "gcc-lib/lib" in pair["default"]["LD_LIBRARY_PATH"]


def test_flake_never_resets_or_pulls_the_checkout():
    hooks = [shell["shellHook"] for pair in evaluated()["devShells"].values() for shell in pair.values()]
    for forbidden in ("git reset", "git pull", "git checkout", "git stash", "git clean", "git fetch"):
        assert not any(forbidden in hook for hook in hooks), forbidden


STUB_INSTALL = """#!/bin/sh
# Stands in for install.sh (tested on its own): records the call, makes a .venv whose
# `pipulate` says how it was called.
echo "install.sh $*" >> install.log
mkdir -p .venv/bin
printf '#!/bin/sh\\necho "pipulate called: $*"\\n' > .venv/bin/pipulate
chmod +x .venv/bin/pipulate
"""


def test_the_shell_hooks_set_up_the_checkout_and_start_the_workstation(tmp_path):
    shells = evaluated()["devShells"]["x86_64-linux"]
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "install.sh").write_text(STUB_INSTALL)
    (repo / "install.sh").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PIPULATE_NO_UP")}

    def hook(name: str, cwd: Path, **extra) -> subprocess.CompletedProcess:
        script = shells[name]["shellHook"] + '\necho "venv=$VIRTUAL_ENV"; command -v pipulate'
        return subprocess.run(["bash", "-c", script], cwd=cwd, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    quiet = hook("quiet", repo)
    assert quiet.returncode == 0, quiet.stderr
    assert (repo / "install.log").read_text() == "install.sh setup\n"
    assert f"venv={repo / '.venv'}" in quiet.stdout
    assert str(repo / ".venv" / "bin" / "pipulate") in quiet.stdout
    assert "pipulate called" not in quiet.stdout

    # The default shell runs `pipulate up` after the set-up (from anywhere in the checkout).
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    started = hook("default", repo / "sub")
    assert started.returncode == 0, started.stderr
    assert "pipulate called: up" in started.stdout
    assert (repo / "install.log").read_text() == "install.sh setup\n" * 2

    skipped = hook("default", repo, PIPULATE_NO_UP="1")
    assert "pipulate called" not in skipped.stdout

    # Outside a checkout it says so and sets nothing up.
    outside = hook("default", tmp_path)
    assert "run nix develop inside the workstation's checkout" in outside.stderr
    assert "pipulate called" not in outside.stdout
