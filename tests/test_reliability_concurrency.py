"""Concurrency: the real web server (uvicorn, server.py --no-reload) plus 4 writer processes writing the
same jobs with pip.set and saving kernel state at once, plus HTTP clients walking the Hello workflow
and reading the API, for ~12 s in CI and a minute with ``-m slow``.

Nothing is lost (every acknowledged write and every acknowledged kernel-state version is there at
the end, whole) and no error reaches a user (every HTTP answer is a 200, no writer prints a warning,
the server logs no error).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import AUTH
from .reliability_helpers import KERNEL_WRITER, check_kernel_version, check_other_version, free_port, restore_whole

REPO = Path(__file__).resolve().parent.parent
WRITERS = 4
HTTP_CLIENTS = 2
HX = {"HX-Request": "true"}

pytestmark = pytest.mark.timeout(600)


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PIPULATE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--no-reload", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", headers=AUTH, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()}")


def http_client(port: int, number: int, stop: threading.Event, done: list, problems: list) -> None:
    """Walk the Hello workflow under fresh keys and read the API while the writers write."""
    n = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=120) as c:
        while not stop.is_set():
            key = f"http{number}-{n}"
            steps = [("first_name", f"Ada{n}"), ("last_name", f"Lovelace{number}"), ("greeting", f"Hi {key}")]
            answers = [c.post("/hello/start", data={"key": key}, headers=HX)]
            for step, value in steps:
                answers.append(c.post(f"/hello/step/{step}", data={"key": key, "value": value}, headers=HX))
            answers += [c.get("/api/jobs"), c.get("/api/jobs/shared"), c.get("/api/jobs/hot"),
                        c.get("/api/notebooks"), c.get("/api/notebooks/conc-0.ipynb/state"), c.get("/jobs")]
            bad = [(r.request.method, str(r.request.url), r.status_code, r.text[:200])
                   for r in answers if r.status_code != 200]
            if bad:
                problems.extend(bad)
            else:
                done.append((key, dict(steps)))
            n += 1


def run_concurrently(home: Path, tmp_path: Path, seconds: float):
    from pipulate import Pipulate

    seed = Pipulate(home)  # the jobs the HTTP clients read exist from the start
    seed.set("shared", "seed", 0)
    seed.set("hot", "last", None)
    seed.close()
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(home, port, log)
    env = {**os.environ, "PIPULATE_HOME": str(home), "PIPULATE_KEEP_VERSIONS": "100000"}
    writers = []
    try:
        for w in range(WRITERS):
            # two writers per notebook: two kernels of one notebook save versions of it at once
            writers.append(subprocess.Popen(
                [sys.executable, "-c", KERNEL_WRITER, f"conc-{w % 2}.ipynb", str(seconds), str(w)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True))
        stop = threading.Event()
        done: list = []
        problems: list = []
        threads = [threading.Thread(target=http_client, args=(port, i, stop, done, problems)) for i in range(HTTP_CLIENTS)]
        for t in threads:
            t.start()
        outputs = []
        try:
            for p in writers:
                out, err = p.communicate(timeout=seconds + 180)
                outputs.append((p.returncode, out, err))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=180)
    finally:
        for p in writers:
            if p.poll() is None:
                p.kill()
        server.terminate()
        server.wait(timeout=30)
    return outputs, done, problems, log.read_text()


@pytest.mark.parametrize("seconds", [pytest.param(12, id="12s"), pytest.param(60, id="60s", marks=pytest.mark.slow)])
def test_server_and_four_writers_at_once_lose_nothing_and_show_no_error(tmp_path, seconds):
    from pipulate import Pipulate
    from pipulate.kernel_state import KernelStateStore

    home = tmp_path / "home"
    outputs, done, problems, server_log = run_concurrently(home, tmp_path, seconds)

    # No error surfaced anywhere.
    assert not problems, problems[:5]
    for w, (code, out, err) in enumerate(outputs):
        assert code == 0, (w, code, err[-2000:])
        assert "pipulate:" not in err and "Traceback" not in err, (w, err[-2000:])
    assert "Traceback" not in server_log and " ERROR " not in server_log, server_log[-3000:]

    # Every acknowledged write is there, whole.
    acks = {}  # writer -> [(n, kernel version, other version)]
    for w, (_, out, _) in enumerate(outputs):
        acks[w] = [tuple(map(int, line.split()[1:])) for line in out.splitlines() if line.startswith("ACK")]
        assert len(acks[w]) >= 5, (w, out[-500:])
    pip = Pipulate(home)
    ks = KernelStateStore(home)
    try:
        shared = pip.read("shared")
        last_hot = []
        for w, rows in acks.items():
            for n, _, _ in rows:
                big = shared[f"w{w}-{n:06d}"]
                assert big in (n.to_bytes(4, "little") * 10, n.to_bytes(4, "little") * 25_000)
            last = {}
            for n, _, _ in rows:
                last[n % 3] = n
            for k, n in last.items():
                assert pip.get(f"job{k}", f"w{w}") == n, (w, k)
            last_hot.append([w, rows[-1][0]])
        assert pip.get("hot", "last") in last_hot  # one writer's last write won
        for key, steps in done:
            assert pip.read(key) == steps, key
        # Every acknowledged kernel-state version of both notebooks (and its ".b" twin) loads whole.
        versions = 0
        for w, rows in acks.items():
            nb = f"conc-{w % 2}.ipynb"
            for n, version, other in rows:
                assert check_kernel_version(restore_whole(ks, nb, version)) == n
                assert check_other_version(restore_whole(ks, nb + ".b", other)) == n
                versions += 2
    finally:
        pip.close()
        ks.close()
    writes = sum(len(r) for r in acks.values())
    print(f"\n{seconds} s: {WRITERS} writers ran {writes} cells ({writes * 3} pip writes, {versions} kernel-state "
          f"versions, all checked); {HTTP_CLIENTS} HTTP clients finished {len(done)} Hello workflows "
          f"({len(done) * 10} requests), all 200")


def test_a_module_another_thread_is_still_importing_is_not_used(monkeypatch):
    """The race the test above found: a request rendered a value while another thread imported numpy."""
    import importlib.machinery
    import types

    from pipulate.codecs import loaded_module
    from pipulate.web.render import value_view

    half = types.ModuleType("numpy")  # what sys.modules holds mid-import: no ndarray yet
    half.__spec__ = importlib.machinery.ModuleSpec("numpy", None)
    half.__spec__._initializing = True
    monkeypatch.setitem(sys.modules, "numpy", half)
    monkeypatch.setitem(sys.modules, "pandas", half)
    assert loaded_module("numpy") is None
    assert "Ada" in str(value_view("Ada"))
    from pipulate import codecs

    assert codecs.decode(*_encoded(codecs, {"a": 1}), None) == {"a": 1}


def _encoded(codecs, value):
    enc = codecs.encode(value, None)
    return enc.format, enc.data
