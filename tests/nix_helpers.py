"""The real `nix` (Debian's nix-bin) on flake.nix, offline, in a private store.

nixpkgs cannot be fetched offline, so the flake's `nixpkgs` input is overridden with a
stand-in flake written here: the `lib` functions flake.nix uses (plain Nix), `mkShell` made
from `derivation` (bash-built, as `nix develop` requires), and every package as a tiny
derivation whose bin/ links to this machine's own tool (python3.11 is the Python running
the tests). Everything Nix writes (store, database, caches) stays in one temporary folder.
"""
from __future__ import annotations

import json
import os
import pty
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import REPO

SYSTEMS = ["x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"]

STANDIN = r"""{
  description = "A stand-in for nixpkgs, written by tests/nix_helpers.py";
  outputs = { self }:
    let
      systems = @SYSTEMS@;
      links = @LINKS@;
      lib = {
        genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
        optionals = cond: list: if cond then list else [ ];
        optionalString = cond: s: if cond then s else "";
        optionalAttrs = cond: attrs: if cond then attrs else { };
        makeLibraryPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/lib") ps);
      };
      pkgsFor = system:
        let
          # The builders run outside a sandbox (/bin/sh is not in the store).
          pkg = name: derivation {
            inherit name system;
            builder = "/bin/sh";
            PATH = "/usr/bin:/bin";
            args = [ "-c" (builtins.concatStringsSep "\n" ([ "mkdir -p $out/bin $out/lib" ]
              ++ builtins.attrValues (builtins.mapAttrs (bin: target: "ln -s ${target} $out/bin/${bin}")
                                                         (links.${name} or { })))) ];
          };
        in {
          inherit lib;
          stdenv = { isLinux = builtins.match ".*-linux" system != null; cc.cc.lib = pkg "gcc-lib"; };
          mkShell = { name ? "nix-shell", packages ? [ ], ... }@attrs: derivation ({
            inherit name system;
            builder = "/bin/bash";    # nix develop only takes shells built by bash
            outputs = [ "out" ];      # its get-env.sh writes the environment to each of $outputs
            args = [ "-c" "echo > $out" ];
            PATH = builtins.concatStringsSep ":" (map (p: "${p}/bin") packages);
          } // attrs);
          # nix develop's interactive shell: bashInteractive from the flake's own nixpkgs.
          bashInteractive = pkg "bash";
          python311 = pkg "python3-3.11";
          uv = pkg "uv"; git = pkg "git"; sqlite = pkg "sqlite"; curl = pkg "curl";
          chromium = pkg "chromium"; zlib = pkg "zlib";
        };
    in { inherit lib; legacyPackages = lib.genAttrs systems pkgsFor; };
}
"""


def machine_links() -> dict[str, dict[str, str]]:
    """Each stand-in package's bin/ entries: links to this machine's tools (uv only if present,
    so install.sh takes the same path as the rest of the suite)."""
    python = os.path.realpath(sys.executable)  # the interpreter itself, not this test's .venv
    wanted = {"bash": {"bash": "bash"}, "git": {"git": "git"}, "sqlite": {"sqlite3": "sqlite3"},
              "curl": {"curl": "curl"}, "chromium": {"chromium": "chromium"}, "uv": {"uv": "uv"}}
    links = {name: {b: found for b, tool in bins.items() if (found := shutil.which(tool))}
             for name, bins in wanted.items()}
    links["python3-3.11"] = {"python3.11": python, "python3": python}
    return links


def nix_attrs(value) -> str:
    """A JSON-able value (dicts, lists, strings without `${`) as a Nix expression."""
    if isinstance(value, dict):
        return "{ " + " ".join(f"{json.dumps(k)} = {nix_attrs(v)};" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[ " + " ".join(nix_attrs(v) for v in value) + " ]"
    return json.dumps(value)


def nix_binary() -> str:
    found = shutil.which("nix")
    if not found:
        pytest.fail("nix is not installed: the flake cannot be checked. Install Debian's nix-bin "
                    "(apt-get install nix-bin; .ci/run does this) and run the tests again.")
    return found


def git_checkout(folder: Path) -> Path:
    """Make ``folder`` a git repository with its files added, as a clone would be: Nix then
    reads the flake from git (tracked files only, never .venv) and the hook finds the root."""
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=test", "-c", "user.email=test@localhost",
                    "commit", "-q", "--no-gpg-sign", "-m", "checkout"], check=True)
    return folder


class Nix:
    """`nix` with flakes on, no substituters, no registry download, no build users, no
    sandbox, and a store, database and caches of its own under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.store = root / "store"
        self.standin = root / "nixpkgs"
        self.standin.mkdir(parents=True)
        (self.standin / "flake.nix").write_text(
            STANDIN.replace("@SYSTEMS@", nix_attrs(SYSTEMS)).replace("@LINKS@", nix_attrs(machine_links())))
        (root / "conf").mkdir()
        (root / "registry.json").write_text('{"flakes": [], "version": 2}')
        (root / "conf" / "nix.conf").write_text(
            "experimental-features = nix-command flakes\n"
            "substituters =\n"
            f"flake-registry = {root / 'registry.json'}\n"
            # No nixbld group here, and the builders use /bin/sh from outside the store.
            "build-users-group =\n"
            "sandbox = false\n")
        home = root / "user-home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NIX_", "VIRTUAL_ENV", "PYTHONPATH", "PIPULATE_NO_UP"))}
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        env.update(
            NIX_STORE_DIR=str(self.store), NIX_STATE_DIR=str(root / "state"),
            NIX_LOG_DIR=str(root / "log"), NIX_CONF_DIR=str(root / "conf"),
            # A HOME of its own: nothing of the user's ~/.cache/nix, ~/.jupyter is read or
            # written; pip and uv keep their usual caches (the installs stay offline).
            HOME=str(home), PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(cache / "pip")),
            UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(cache / "uv")))
        self.env = env

    def argv(self, command: str, *args: str) -> list[str]:
        return [nix_binary(), command, "--no-write-lock-file",
                "--override-input", "nixpkgs", f"path:{self.standin}", *args]

    def run(self, command: str, *args: str, cwd: Path, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """`nix COMMAND` with the stand-in for nixpkgs."""
        return self.run_plain(*self.argv(command, *args)[1:], cwd=cwd, env=env, timeout=timeout)

    def run_plain(self, *args: str, cwd: Path | None = None, env: dict | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess:
        """`nix ARGS` as they are: what a user's machine makes of the committed files."""
        return subprocess.run([nix_binary(), *args], cwd=cwd, env={**self.env, **(env or {})},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Terminal:
    """A command on a pseudo-terminal of its own (an interactive shell), its output collected."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.text = ""
        self._chunks: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process on the terminal has closed it
                chunk = b""
            if not chunk:
                self._chunks.put(None)
                return
            self._chunks.put(chunk.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float, unless: str | None = None) -> re.Match:
        """The first match of ``pattern`` in the output; fail at once if ``unless`` shows first."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, ANSI.sub("", self.text))
            if found:
                return found
            if unless and unless in self.text:
                raise AssertionError(f"{unless!r} before {pattern!r}:\n{ANSI.sub('', self.text)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{ANSI.sub('', self.text)}")
            try:
                chunk = self._chunks.get(timeout=0.5)
            except queue.Empty:
                continue
            if chunk is None:
                raise AssertionError(f"the terminal closed before {pattern!r}:\n{ANSI.sub('', self.text)}")
            self.text += chunk

    def foreground_group(self) -> int:
        """The process group the terminal's Ctrl-C would reach."""
        return os.tcgetpgrp(self.master)

    def close(self):
        """Type `exit` (the shell ends once its foreground job has); kill whatever is left
        after a grace period, then close the terminal."""
        try:
            left = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            left = []
        os.write(self.master, b"exit\n")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            for p in [*left, psutil.Process(self.proc.pid)]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            self.proc.wait(10)
        os.close(self.master)


def flake_copy(dest: Path) -> Path:
    """flake.nix and flake.lock alone, as a git repository: the flake without the checkout."""
    dest.mkdir(parents=True)
    for name in ("flake.nix", "flake.lock"):
        shutil.copy2(REPO / name, dest / name)
    return git_checkout(dest)
