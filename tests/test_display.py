"""One way of showing sizes, times and counts on every face: `%state`, the restore line,
`pipulate state` and the web pages (pipulate/display.py), and words that say what happened."""
from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest

from pipulate import display

from .test_web import app, client  # noqa: F401  (fixtures)


@pytest.mark.parametrize("n, text", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 * 2**20, "5.0 MiB"), (3 * 2**30, "3.0 GiB"), (2**41, "2.0 TiB"), (2**51, "2048.0 TiB"),
])
def test_sizes_are_in_binary_units(n, text):
    assert display.size(n) == text


def test_times_are_local_with_how_long_ago():
    now = dt.datetime.now(dt.timezone.utc)
    stamp = (now - dt.timedelta(minutes=12, seconds=5)).isoformat()
    local = dt.datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert display.when(stamp) == f"{local} (12 min ago)"
    assert display.local_time(stamp) == local
    assert display.when((now - dt.timedelta(seconds=5)).isoformat()).endswith("(5 s ago)")
    assert display.when((now - dt.timedelta(hours=3, minutes=30)).isoformat()).endswith("(3.5 h ago)")
    assert display.when((now - dt.timedelta(days=4, hours=1)).isoformat()).endswith("(4 days ago)")
    assert display.when(None) == "-" and display.when("not a time") == "not a time"
    epoch = now.timestamp()
    assert display.local_time(epoch) == dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def test_counts_and_version_ranges():
    assert [display.plural(n, "variable") for n in (0, 1, 2)] == ["0 variables", "1 variable", "2 variables"]
    assert display.number_ranges([5, 1, 2, 3, 8, 10, 11]) == "1-3, 5, 8, 10-11"


# --- the faces ------------------------------------------------------------------------------

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+ (s|min) ago\)"


def test_state_magic_says_what_happened_in_words_that_fit(kernels, ks):
    k, _ = kernels.start("words.ipynb")
    k.ok("from pipulate import pip\nx = 1")
    out = k.ok("%state")
    assert "1 variable\n" in out and "1 variables" not in out, out
    assert re.search(rf"saved {TIME}", out), out
    assert "skipped:" not in out, out  # pip is not a failure to report ...
    assert "not saved, as they are the workstation's own and come back by their import: pip (" in out
    assert re.search(r"^saved version \d+: 1 variable, ", k.ok("x = 2\n%state save"), re.M)
    k.ok("y = 'two'")
    _, err = k.run("%state restore 999")
    versions = [v["version"] for v in ks.versions("words.ipynb")]
    assert err and f"no version 999; saved versions: {min(versions)}-{max(versions)} (latest {max(versions)})" in err
    _, err = k.run("%state diff 1 999")
    assert err and "saved versions:" in err
    k.close()

    k, out = kernels.start("words.ipynb")
    line = next(line for line in out.splitlines() if line.startswith("pipulate: restored"))
    assert line.startswith("pipulate: restored 2 variables of words.ipynb") and re.search(TIME, line), line
    assert "Skipped" not in line and "pip" not in line.split(":")[-1], line  # ... nor in the restore line
    k.ok("gen = (i for i in range(3))")
    k.close()
    k, out = kernels.start("words.ipynb")
    # Real skips are still reported (a generator: with the cells that can make it again).
    assert "can run again: gen (cannot pickle 'generator' object;" in out and "pip (" not in out, out


def test_the_cli_and_the_web_page_show_the_same_sizes_and_times(kernels, ks, client):  # noqa: F811
    k, _ = kernels.start("faces.ipynb")
    k.ok("blob = b'x' * 3000\nsmall = 1")
    k.close()
    info = ks.variables("faces.ipynb")
    size = display.size(next(v["size"] for v in info["variables"] if v["name"] == "blob"))
    assert size.endswith("KiB")
    saved = display.local_time(info["saved_at"])

    cli = subprocess.run([sys.executable, "-m", "pipulate", "state", "show", "faces.ipynb"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert size in cli.stdout and saved in cli.stdout and "2 variables" in cli.stdout
    page = client.get("/kernel-state/notebook", params={"id": "faces.ipynb"}).text
    assert size in page and saved in page and "2 variables" in page
    assert "T" not in re.findall(r"saved [^<]*", page)[0], "an ISO time on the page"
    listing = client.get("/kernel-state").text
    assert saved in listing

    bad = subprocess.run([sys.executable, "-m", "pipulate", "state", "show", "faces.ipynb", "--version", "9"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no version 9; saved versions: 1 (latest 1)" in bad.stderr
    r = client.post("/api/notebooks/faces.ipynb/state/restore", json={"version": 9})
    assert r.status_code == 404 and "saved versions: 1 (latest 1)" in r.text
    r = client.get("/kernel-state/notebook", params={"id": "faces.ipynb", "version": "9"})
    assert r.status_code == 404 and "saved versions: 1 (latest 1)" in r.text
