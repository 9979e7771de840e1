"""Recovering code from IPython's history database made by real kernels."""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import nbformat
import pytest

from tests.test_recover_support import history_file, kernel_session, run_cli, write_ipython_config

pytestmark = pytest.mark.backends("embedded", reason="reads IPython's history database; opens no store")

FIRST = [
    "import math\nradius = 2",
    "%time area = math.pi * radius ** 2",
    "round(area, 3)",
    "def double(v):\n    return 2 * v",
    "round(area, 3)",
    "double(21)",
]
SECOND = ["killed_kernel_value = 'never saved'", "killed_kernel_value.upper()"]


@pytest.fixture(scope="module")
def made_history(tmp_path_factory):
    """Two real kernel sessions: one shut down cleanly, one killed. Returns the database."""
    base = tmp_path_factory.mktemp("kernels")
    ipy = base / "ipython"
    write_ipython_config(ipy, log_output=True)
    # Module fixtures run outside the per-test temporary environment: keep this process's
    # IPython and Jupyter lookups (and the kernels' connection files) out of the real home.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IPYTHONDIR", str(ipy))
        env.setenv("JUPYTER_RUNTIME_DIR", str(base / "runtime"))
        kernel_session(ipy, FIRST)
        kernel_session(ipy, SECOND, kill=True)
    return history_file(ipy)


@pytest.fixture
def history(made_history, tmp_path):
    """The made history as this test's default database ($IPYTHONDIR is per test)."""
    target = history_file(Path(os.environ["IPYTHONDIR"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made_history, target)
    return target


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sessions_lists_both_kernels_with_times_counts_and_first_line(history):
    code, out, err = run_cli("sessions")
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("1 ", "2 "))]
    assert len(lines) == 2, out
    assert "6" in lines[0].split() and "import math" in lines[0]
    assert "did not end" in lines[1] and "killed_kernel_value" in lines[1]
    assert "did not end" not in lines[0]


def test_session_times_are_normalised_to_local_time(history):
    from pipulate.recover.history import History

    with History() as h:
        first = h.session("1")
        assert first.start.tzinfo is not None and first.end.tzinfo is not None
        # start is stored as local time, end as UTC: once normalised they are seconds apart
        assert 0 <= (first.end - first.start).total_seconds() < 120
        assert h.session("last").number == 2


def test_show_prints_cells_in_order_with_magics_as_typed_and_outputs(history):
    code, out, err = run_cli("show", "1")
    assert code == 0, err
    positions = [out.index(cell) for cell in FIRST[:4]]
    assert positions == sorted(positions)
    assert "%time area = math.pi * radius ** 2" in out
    assert "# Out[3]: 12.566" in out


def test_search_finds_code_across_sessions(history):
    code, out, _ = run_cli("search", "KILLED_KERNEL")
    assert code == 0
    assert "2/1" in out and "2/2" in out
    code, out, _ = run_cli("search", "no such code anywhere")
    assert code == 1 and "no code containing" in out


def test_since_and_until_filter_sessions(history):
    code, out, _ = run_cli("sessions", "--since", "1h")
    assert "import math" in out
    code, out, _ = run_cli("sessions", "--until", "2000-01-01")
    assert code == 0 and "no sessions in that time" in out
    code, _, err = run_cli("sessions", "--since", "next tuesday")
    assert code == 1 and "cannot read the time" in err


def test_export_ipynb_is_valid_runs_and_keeps_outputs(history, tmp_path):
    from nbclient import NotebookClient

    out_file = tmp_path / "recovered.ipynb"
    code, out, err = run_cli("export", "1", "-o", str(out_file))
    assert code == 0, err
    nb = nbformat.read(out_file, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert all(cell.get("id") for cell in nb.cells)
    assert [c.source for c in nb.cells] == FIRST
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "12.566"
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert nb.cells[5].outputs[0]["data"]["text/plain"] == "42"


def test_export_dedupe_keeps_the_last_run(history, tmp_path):
    out_file = tmp_path / "deduped.ipynb"
    assert run_cli("export", "1", "-o", str(out_file), "--dedupe")[0] == 0
    sources = [c.source for c in nbformat.read(out_file, as_version=4).cells]
    assert sources == [FIRST[0], FIRST[1], FIRST[3], FIRST[2], FIRST[5]]


def test_export_percent_script(history, tmp_path):
    import jupytext

    out_file = tmp_path / "recovered.py"
    code, _, err = run_cli("export", "last", "-o", str(out_file))
    assert code == 0, err
    text = out_file.read_text()
    assert text.count("# %%") == len(SECOND)
    assert [c.source for c in jupytext.read(out_file).cells] == SECOND


def test_explicit_db_option(made_history, tmp_path):
    code, out, err = run_cli("show", "last", "--db", str(made_history))
    assert code == 0, err
    assert "killed_kernel_value" in out


@pytest.mark.parametrize("args, message", [
    (["show", "99"], "there is no session 99"),
    (["show", "banana"], "is not a session"),
    (["show", "7:1"], "no readable history database 7"),
    (["export", "1", "-o", "out.txt"], "must end in .ipynb"),
])
def test_bad_input_gets_a_clear_message(history, args, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*args)
    assert code not in (0, None), out
    assert message in err


def test_existing_output_is_refused_unless_forced(history, tmp_path):
    out_file = tmp_path / "taken.ipynb"
    out_file.write_text("precious")
    code, _, err = run_cli("export", "1", "-o", str(out_file))
    assert code == 1 and "already exists" in err and "--force" in err
    assert out_file.read_text() == "precious"
    assert run_cli("export", "1", "-o", str(out_file), "--force")[0] == 0
    assert nbformat.read(out_file, as_version=4).cells


def test_missing_database_path(tmp_path):
    code, _, err = run_cli("sessions", "--db", str(tmp_path / "nope.sqlite"))
    assert code == 1 and "no history database at" in err


def test_no_history_at_all_says_so(tmp_path):
    code, _, err = run_cli("show", "last")
    assert code == 1 and "no IPython history at" in err


def test_last_with_an_empty_database(tmp_path):
    empty = tmp_path / "empty.sqlite"
    conn = sqlite3.connect(empty)
    conn.execute("CREATE TABLE sessions (session integer primary key autoincrement, start timestamp, "
                 "end timestamp, num_cmds integer, remark text)")
    conn.execute("CREATE TABLE history (session integer, line integer, source text, source_raw text)")
    conn.commit()
    conn.close()
    code, _, err = run_cli("show", "last", "--db", str(empty))
    assert code == 1 and "no session with code" in err


def test_locked_database_is_read_and_left_untouched(history):
    before, mtime = digest(history), history.stat().st_mtime_ns
    locker = sqlite3.connect(history, isolation_level=None, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        code, out, err = run_cli("sessions")
        assert code == 0, err
        assert "import math" in out
        code, out, _ = run_cli("show", "2")
        assert "killed_kernel_value" in out
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert digest(history) == before and history.stat().st_mtime_ns == mtime
    assert not list(history.parent.glob("history-corrupt*"))


def test_corrupt_database_gives_a_clear_message_and_is_untouched(history):
    history.write_bytes(b"this is not sqlite at all" * 1000)
    before = digest(history)
    code, _, err = run_cli("sessions")
    assert code == 1
    assert "damaged or not a database" in err and "the original was not changed" in err
    assert digest(history) == before
    assert sorted(p.name for p in history.parent.iterdir()) == ["history.sqlite"]


def test_partly_damaged_database_gives_what_it_can(made_history, tmp_path):
    damaged = tmp_path / "history.sqlite"
    data = bytearray(made_history.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[-page:] = b"\xff" * page  # wreck the last page
    damaged.write_bytes(bytes(data))
    before = digest(damaged)
    code, out, err = run_cli("sessions", "--db", str(damaged))
    assert digest(damaged) == before
    assert code in (0, 1)
    assert ("damaged" in err) or ("import math" in out)


def test_corrupt_and_old_copies_beside_it_are_read(made_history):
    ipy = Path(os.environ["IPYTHONDIR"]) / "profile_default"
    ipy.mkdir(parents=True)
    (ipy / "history.sqlite").write_bytes(b"garbage" * 5000)
    shutil.copyfile(made_history, ipy / "history-corrupt-2026-01-01T00.00.00.sqlite")
    code, out, err = run_cli("sessions")
    assert code == 0, err
    assert "2:1" in out and "import math" in out
    assert "damaged or not a database" in err
    code, out, _ = run_cli("show", "2:2")
    assert "killed_kernel_value" in out


def test_long_scans_show_progress_on_a_terminal(history, monkeypatch, capsys):
    from pipulate.recover import cli

    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    progress = cli.Progress()
    progress("searching /some/history.sqlite (1/2)")
    progress.done()
    err = capsys.readouterr().err
    assert "searching /some/history.sqlite (1/2)" in err and err.endswith("\r\033[K")


def test_a_copy_taken_mid_write_shows_the_last_commit(made_history, tmp_path):
    db = tmp_path / "history.sqlite"
    shutil.copyfile(made_history, db)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA cache_size=1")  # spill uncommitted pages into the file itself
    writer.execute("BEGIN")
    writer.execute("UPDATE history SET source_raw = 'UNCOMMITTED ' || source_raw")
    writer.executemany("INSERT INTO history VALUES (1, ?, 'x', 'UNCOMMITTED x')",
                       [(1000 + i,) for i in range(2000)])
    try:
        assert Path(str(db) + "-journal").exists()
        before = digest(db)
        code, out, _ = run_cli("search", "UNCOMMITTED", "--db", str(db))
        assert code == 1
        code, out, _ = run_cli("show", "1", "--db", str(db))
        assert "import math" in out and "UNCOMMITTED" not in out
        assert digest(db) == before
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_new_user_gets_a_deleted_notebooks_code_back_with_one_command(tmp_path):
    """The issue's 'done when': a notebook's kernel ran, the notebook is deleted, one command."""
    import subprocess
    import sys

    from nbformat import v4

    ipy = Path(os.environ["IPYTHONDIR"])
    cells = ["import statistics\nsales = [3, 5, 8]", "mean = statistics.mean(sales)\nmean", "%who"]
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("# Sales")] + [v4.new_code_cell(c) for c in cells]
    notebook = tmp_path / "sales.ipynb"
    nbformat.write(nb, notebook)
    kernel_session(ipy, cells)  # the notebook's kernel ran it, then was shut down
    notebook.unlink()

    proc = subprocess.run([sys.executable, "-m", "pipulate", "recover", "export", "last",
                           "-o", str(notebook)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    back = nbformat.read(notebook, as_version=4)
    nbformat.validate(back)
    assert [c.source for c in back.cells] == cells
