"""The Master Template notebook, executed top to bottom in the workstation's kernel against the
local test site; run again in a new kernel (a restart), it does none of the pages again."""
from __future__ import annotations

import json

import nbformat
import openpyxl
import pytest

from .site_server import TestSite
from .test_notebooks import NOTEBOOKS, run, text, workstation_kernels  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser
NAME = "master_template.ipynb"


def with_urls(urls: list[str]):
    nb = nbformat.read(NOTEBOOKS / NAME, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source = f'job = "master-template"\nurls = {json.dumps(urls)}'
    return nb


def test_the_notebook_is_valid_and_clean():
    raw = json.loads((NOTEBOOKS / NAME).read_text())
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5)
    nb = nbformat.read(NOTEBOOKS / NAME, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert nb.metadata.kernelspec.name == "python3"


def test_the_master_template_runs_and_resumes_after_a_restart(tmp_path, isolated_home):
    with TestSite() as site:
        urls = [site.url(p) for p in ("/js1.html", "/p2.html", "/redirect/2", "/status/404", "/latin1.html")]
        nb = run(with_urls(urls), tmp_path)
        out = "".join(text(c) for c in nb.cells if c.cell_type == "code")
        assert "5 pages; 0 with errors" in out, out
        assert "Rendered 1" in out  # the table shows what the browser saw
        hits = len(site.hits)
        again = run(with_urls(urls), tmp_path)  # a new kernel process: a restart
        assert len(site.hits) == hits  # nothing was fetched again
        assert "5 pages; 0 with errors" in "".join(text(c) for c in again.cells if c.cell_type == "code")

    book = openpyxl.load_workbook(isolated_home / "master-template.xlsx")
    rows = list(book["results"].iter_rows(values_only=True))
    assert rows[0][:4] == ("item", "status", "final_url", "title")
    assert [r[3] for r in rows[1:]] == ["Rendered 1", "Page 2", "Page 0", "Error 404", "Café crème"]
    assert book["results"]["A2"].hyperlink.target == urls[0]
    assert not list(tmp_path.glob("*.xlsx"))  # nothing written beside the notebooks
