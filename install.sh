#!/usr/bin/env bash
# Set up the workstation without Nix, then start it.
#
#   ./install.sh [FLAGS]      make .venv from the lock file, install pipulate, run `pipulate up`
#                             (FLAGS go to `pipulate up`, e.g. ./install.sh --no-browser)
#   ./install.sh test [ARGS]  the same environment plus the test extras, then the test suite
#                             (ARGS go to pytest, e.g. ./install.sh test -k store)
#   ./install.sh setup        only make the environment (used by flake.nix's shellHook)
#   ./install.sh hub [ARGS]   the environment with JupyterHub and its proxy (npm), then JupyterHub
#                             in front of the workstation (docs/jupyterhub.md; ARGS go to jupyterhub)
#
# Idempotent: a second run with unchanged lock files installs nothing.
# PYTHON picks the interpreter (default python3); it must be 3.11 or newer.
set -euo pipefail

cd "$(dirname "$0")"
mode="${1:-up}"
case "$mode" in
    --help) ;;
    --*) mode=up ;;               # ./install.sh --port 5002: flags for `pipulate up`
    *) [ $# -gt 0 ] && shift ;;
esac

case "$mode" in
    -h|--help|help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

PYTHON="${PYTHON:-python3}"
VENV=.venv

say() { printf 'install.sh: %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "no '$PYTHON' on PATH: install Python 3.11 or newer (or set PYTHON=/path/to/python3.11)"
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "Python 3.11 or newer is needed; '$PYTHON' is $("$PYTHON" -V 2>&1)."
    say "Install a newer Python (or set PYTHON=/path/to/python3.11) and run this again."
    exit 1
fi

case "$mode" in
    up|setup) lock=requirements.lock ;;
    # The hub takes the test lock: it is the one that pins JupyterHub (it holds the test tools too).
    test|hub) lock=requirements-test.lock ;;
    *) say "unknown command '$mode' (expected: up, test, setup, hub)"; exit 2 ;;
esac

if command -v uv >/dev/null 2>&1; then
    installer=uv
else
    installer=pip
fi

# A .venv whose Python no longer runs (moved, or a Nix store path that was collected) or is
# too old is made again; it holds nothing but what this script installed.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    say "$VENV does not run with Python 3.11+ any more: making it again"
    rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "making $VENV with $installer"
    if [ "$installer" = uv ]; then
        uv venv --quiet --python "$PYTHON" "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi

install() {
    if [ "$installer" = uv ]; then
        uv pip install --quiet --python "$VENV/bin/python" "$@"
    else
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    fi
}

# A stamp per lock file and pyproject: skip the install when nothing changed.
stamp="$VENV/.installed-$(basename "$lock")"
want="$(cat "$lock" pyproject.toml | cksum) bytecode"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing locked dependencies from $lock"
    install -r "$lock"
    # Editable, so the package runs from this checkout and finds its data/ folder.
    install --no-deps -e .
    # Compiled once, here: a Python told not to write bytecode (PYTHONDONTWRITEBYTECODE=1,
    # or a read-only install) compiles pandas, pyarrow and the rest again at every kernel
    # start otherwise (1.2 s of imports instead of 0.4 s). uv does not compile by default.
    say "compiling the installed modules to bytecode"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    "$VENV/bin/python" -m compileall -q -j 0 "$site" pipulate >/dev/null 2>&1 || true
    echo "$want" > "$stamp"
fi

# An editable install skips the package's data files: link the JupyterLab extension and the
# switch of its server side into .venv, so that `jupyter lab` and `jupyter labextension list`
# run from .venv see them too (`pipulate up` finds them through JUPYTER_PATH either way).
mkdir -p "$VENV/share/jupyter/labextensions" "$VENV/etc/jupyter/jupyter_server_config.d"
ln -sfn "$PWD/pipulate/jupyter/share/labextensions/pipulate-jupyterlab" \
    "$VENV/share/jupyter/labextensions/pipulate-jupyterlab"
ln -sfn "$PWD/pipulate/jupyter/jupyter-config/jupyter_server_config.d/pipulate.json" \
    "$VENV/etc/jupyter/jupyter_server_config.d/pipulate.json"

# JupyterHub's proxy (configurable-http-proxy, from npm) for the hub and its test, pinned by
# deploy/jupyterhub/package-lock.json; installed here so that nothing downloads when the hub or a test runs.
if [ "$mode" = test ] || [ "$mode" = hub ]; then
    proxy_stamp=deploy/jupyterhub/node_modules/.installed
    proxy_want="$(cksum < deploy/jupyterhub/package-lock.json)"
    if [ -f "$proxy_stamp" ] && [ "$(cat "$proxy_stamp")" = "$proxy_want" ]; then
        :
    elif command -v npm >/dev/null 2>&1; then
        say "installing JupyterHub's proxy from deploy/jupyterhub/package-lock.json (npm ci)"
        (cd deploy/jupyterhub && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >&2)
        echo "$proxy_want" > "$proxy_stamp"
    else
        say "no npm on PATH: JupyterHub's proxy is not installed (Debian: apt-get install npm)"
        [ "$mode" = hub ] && exit 1
    fi
fi

case "$mode" in
    setup) say "environment ready: $VENV" ;;
    hub) exec "$VENV/bin/jupyterhub" -f deploy/jupyterhub/jupyterhub_config.py "$@" ;;
    test) exec "$VENV/bin/python" -m pytest "$@" ;;
    up) exec "$VENV/bin/pipulate" up "$@" ;;
esac
