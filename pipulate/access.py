"""How the user gets into a running workstation: its token, the URLs that carry it, and
``pipulate url``, which prints them again.

One secret per start (``PIPULATE_TOKEN`` if set, else made here) lets the user into both
the web app and JupyterLab: a JupyterLab token already runs any code as the user, so the
web app's data is no safer behind a second one, and one secret means one URL and links
between the two that log the user in.

``pipulate up`` writes the URLs of the running workstation to ``$PIPULATE_HOME/run/urls.json``
(mode 0600 in a 0700 folder: only the user can read it) and removes the file when it stops;
``pipulate url`` reads it. Nothing here imports the web framework.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import re
import secrets
import sys
from pathlib import Path

TOKEN_ENV = "PIPULATE_TOKEN"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
RUN_DIR = "run"
URLS_FILE = "urls.json"


def new_token() -> str:
    return secrets.token_hex(24)


def check_token(token: str) -> str:
    """``token`` if it can travel in a URL, a cookie and a header unchanged; else ValueError."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise ValueError(f"{TOKEN_ENV} must be 16 to 256 letters, digits or . _ ~ - "
                         f"(got {len(token)} characters)")
    return token


def same_token(candidate: str | None, token: str) -> bool:
    """Constant-time: how much of a guess was right never shows in the answer's timing."""
    if candidate is None:
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), token.encode())


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token_explicit: bool) -> str | None:
    """The warning for listening beyond loopback with a token nobody chose, or None."""
    if token_explicit or is_loopback(host):
        return None
    return (f"warning: PIPULATE_HOST={host} opens the web app and JupyterLab to every machine that can "
            "reach this one. Only the token made for this start keeps them out, and it crosses the "
            "network unencrypted (plain HTTP): anyone who sees the traffic can read your notebooks' "
            "data and run code as you. Keep 127.0.0.1 unless you mean it; if you do, set "
            f"{TOKEN_ENV} to a long secret of your own and put HTTPS in front.")


def url_host(host: str) -> str:
    """The address to print for a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)


def with_token(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}token={token}"


# The path the web app is served under (PIPULATE_ROOT_PATH, pipulate.web.urls): segments of
# letters, digits and . _ ~ @ - (no "." or ".."), one slash before each, none at the end.
SEGMENT = re.compile(r"[A-Za-z0-9._~@-]+")


class RootPathError(ValueError):
    """A root path the web app cannot live under; the message says why."""


def check_root_path(text: str | None) -> str:
    """``text`` as a root path: "" (none) or "/a/b" (leading slash, no trailing one)."""
    text = (text or "").strip()
    if text in ("", "/"):
        return ""
    if not text.startswith("/"):
        raise RootPathError(f"the root path must start with '/', got {text!r} (e.g. /user/alice/pipulate-web)")
    parts = text.rstrip("/").split("/")[1:]
    for part in parts:
        if part in ("", ".", "..") or not SEGMENT.fullmatch(part):
            raise RootPathError(f"the root path {text!r} has a bad segment {part!r}: use letters, digits "
                                "and . _ ~ @ - between single slashes, no '.' or '..'")
    return "/" + "/".join(parts)


# --- the running workstation's URLs -------------------------------------------------------

def urls_path(home: Path) -> Path:
    return Path(home) / RUN_DIR / URLS_FILE


def write_urls(home: Path, urls: dict[str, str], pid: int | None = None) -> Path:
    """Record ``urls`` (label -> URL with token) for ``pipulate url``; readable by the user only."""
    import psutil

    pid = os.getpid() if pid is None else pid
    path = urls_path(home)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path.parent, 0o700)
    record = {"pid": pid, "started": psutil.Process(pid).create_time(), "urls": urls}
    tmp = path.with_name(f".{URLS_FILE}.{pid}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is cut by the umask, and an old file keeps its own
        os.write(fd, json.dumps(record, indent=1).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_urls(home: Path, pid: int | None = None) -> None:
    """Forget the URLs, unless another start has written its own since."""
    path = urls_path(home)
    record = _read(path)
    if record is not None and record.get("pid") == (os.getpid() if pid is None else pid):
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def running_urls(home: Path) -> dict[str, str] | None:
    """The URLs of the workstation running on ``home``, or None if none is."""
    import psutil

    record = _read(urls_path(home))
    if not isinstance(record, dict) or not isinstance(record.get("urls"), dict):
        return None
    try:
        alive = psutil.Process(int(record["pid"])).create_time() == record.get("started")
    except (psutil.Error, KeyError, TypeError, ValueError):
        alive = False  # a pid reused by another program is not the workstation
    return record["urls"] if alive else None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the URLs (with the token) of the workstation that `pipulate up` "
                          "is running on this PIPULATE_HOME.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .home import resolve_home

    home = resolve_home()
    urls = running_urls(home)
    if urls is None:
        print(f"pipulate url: no workstation is running on {home}: start one with `pipulate up` "
              "(it prints the URLs).", file=sys.stderr)
        return 1
    width = max(len(label) for label in urls) + 1
    for label, url in urls.items():
        print(f"{label + ':':<{width}} {url}")
    return 0
