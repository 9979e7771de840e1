"""The shipped notebooks as templates: stored as JupyterLab writes them, copied to the user's
folder without ever overwriting a file there (pipulate/user_notebooks.py).

`pipulate up` itself, with JupyterLab and git, is tested in test_up_notebooks.py.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipulate.user_notebooks import RECORD, for_this_python, hand_over, templates

from .conftest import REPO

NOTEBOOKS = REPO / "notebooks"
SHIPPED = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def round_trip(folder: Path, name: str) -> bytes:
    """Open and save ``name`` through jupyter_server's own contents manager, as JupyterLab does."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    cm = FileContentsManager(root_dir=str(folder))
    model = cm.get(name)
    cm.save({"type": "notebook", "format": "json", "content": model["content"]}, name)
    return (folder / name).read_bytes()


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_notebook_is_stored_exactly_as_jupyterlab_saves_it(tmp_path, name):
    shutil.copy(NOTEBOOKS / name, tmp_path / name)
    assert round_trip(tmp_path, name) == (NOTEBOOKS / name).read_bytes()
    # ... and so is the copy a user gets (its language_info fitted to this Python).
    copy = tmp_path / "copy" / name
    copy.parent.mkdir()
    copy.write_bytes(for_this_python((NOTEBOOKS / name).read_bytes()))
    assert round_trip(copy.parent, name) == copy.read_bytes()


def test_a_copy_carries_the_metadata_its_kernel_gives_jupyterlab(tmp_path, monkeypatch):
    """JupyterLab sets metadata.language_info and .kernelspec from the kernel when a notebook
    opens, and marks it modified if they differ from the file's: they must be equal."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    from pipulate.jupyter import KERNEL_NAME, SHARE_DIR

    monkeypatch.setenv("JUPYTER_PATH", str(SHARE_DIR))
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, cwd=str(tmp_path))
    try:
        kc.kernel_info()
        reply = kc.get_shell_msg(timeout=60)
        while reply["msg_type"] != "kernel_info_reply":
            reply = kc.get_shell_msg(timeout=60)
        language_info = reply["content"]["language_info"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert language_info["version"] == sys.version.split()[0]
    for name in SHIPPED:
        metadata = json.loads(for_this_python((NOTEBOOKS / name).read_bytes()))["metadata"]
        assert metadata["language_info"] == language_info, name
        assert metadata["kernelspec"] == {"name": KERNEL_NAME, "display_name": spec.display_name,
                                          "language": spec.language}, name


def test_for_this_python_changes_only_the_version(tmp_path):
    raw = json.loads((NOTEBOOKS / "hello_world.ipynb").read_text())
    raw["metadata"]["language_info"]["version"] = "3.0.1"
    text = json.dumps(raw, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fitted = json.loads(for_this_python(text.encode()))
    assert fitted["metadata"]["language_info"]["version"] == sys.version.split()[0]
    fitted["metadata"]["language_info"]["version"] = "3.0.1"
    assert fitted == raw


# --- handing over copies ---------------------------------------------------------------------

@pytest.fixture
def shipped(tmp_path):
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "hello_world-checkpoint.ipynb").write_text("{}")
    (folder / "data").mkdir()
    (folder / "data" / "cities.csv").write_text("city\nParis\n")
    return folder


def test_the_first_start_copies_every_template(shipped, tmp_path):
    user = tmp_path / "my_notebooks"
    done = hand_over(shipped, user)
    assert done.copied == sorted([*SHIPPED, "data/cities.csv"]) == templates(shipped)
    assert not (user / ".ipynb_checkpoints").exists()
    for rel in done.copied:
        expected = (shipped / rel).read_bytes()
        if rel.endswith(".ipynb"):
            expected = for_this_python(expected)
        assert (user / rel).read_bytes() == expected, rel
    assert hand_over(shipped, user).copied == []  # nothing twice


def test_a_users_copy_is_never_overwritten_and_a_changed_template_comes_beside_it(shipped, tmp_path):
    user = tmp_path / "my_notebooks"
    hand_over(shipped, user)
    mine = b'{"the user": "edited this"}'
    (user / "hello_world.ipynb").write_bytes(mine)
    assert hand_over(shipped, user).offered == []  # the template did not change: nothing to offer

    # An update changes the template.
    nb = json.loads((shipped / "hello_world.ipynb").read_text())
    nb["cells"][0]["source"] = ["# Hello, updated world\n"]
    (shipped / "hello_world.ipynb").write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    done = hand_over(shipped, user)
    assert done.copied == [] and done.offered == [("hello_world.ipynb", "hello_world-new.ipynb")]
    assert (user / "hello_world.ipynb").read_bytes() == mine
    assert "updated world" in (user / "hello_world-new.ipynb").read_text()
    # Offered once per change, never over the offered copy the user may now be editing.
    (user / "hello_world-new.ipynb").write_text("my edits of the new one")
    assert hand_over(shipped, user).offered == []
    assert (user / "hello_world-new.ipynb").read_text() == "my edits of the new one"
    nb["cells"][0]["source"] = ["# Hello, updated again\n"]
    (shipped / "hello_world.ipynb").write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    assert hand_over(shipped, user).offered == [("hello_world.ipynb", "hello_world-new-2.ipynb")]
    assert (user / "hello_world-new.ipynb").read_text() == "my edits of the new one"


def test_a_deleted_copy_comes_back_and_an_unknown_record_is_rebuilt(shipped, tmp_path):
    user = tmp_path / "my_notebooks"
    hand_over(shipped, user)
    (user / "kernel_state_demo.ipynb").unlink()
    (user / RECORD).write_text("not json")
    (user / "hello_world.ipynb").write_text("mine")
    done = hand_over(shipped, user)
    assert done.copied == ["kernel_state_demo.ipynb"] and done.offered == []
    assert (user / "hello_world.ipynb").read_text() == "mine"
    assert set(json.loads((user / RECORD).read_text())) == set(templates(shipped))


def test_the_templates_folder_as_the_users_folder_copies_nothing(shipped):
    before = {rel: (shipped / rel).read_bytes() for rel in templates(shipped)}
    done = hand_over(shipped, shipped)
    assert done.same_folder and done.copied == [] and not (shipped / RECORD).exists()
    assert {rel: (shipped / rel).read_bytes() for rel in templates(shipped)} == before
