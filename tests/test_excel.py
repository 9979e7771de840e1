"""pip.to_excel: the written file, opened with openpyxl, has the styling the issue asks for."""
from __future__ import annotations

import datetime as dt
import io

import openpyxl
import pandas as pd
import pytest

from pipulate.excel import to_excel


@pytest.fixture
def frame():
    return pd.DataFrame({
        "item": ["https://example.com/a", "https://example.com/b", "https://example.com/c"],
        "status": pd.array([200, 404, None], dtype="Int64"),
        "words": [120, 3, None],
        "score": [0.5, 1.25, float("nan")],
        "fetched": [pd.Timestamp("2026-01-02 03:04:05", tz="UTC"), dt.datetime(2026, 1, 3, 12, 0), None],
        "day": ["2026-02-01", "2026-02-02", "not a date"],
        "text": ["short", "a long text " * 20, "line one\nline two"],
        "tags": [["x", "y"], [], {"k": 1}],
        "error": [None, None, "TimeoutError: took longer than 30 s"],
    })


def test_the_workbook_is_styled(frame, tmp_path):
    path = to_excel(frame, tmp_path / "out" / "results.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["results", "summary"]
    sheet = book["results"]
    header = sheet[1]
    assert [c.value for c in header] == list(frame.columns)
    assert all(c.font.bold for c in header)
    assert header[0].fill.fill_type == "solid" and header[0].fill.fgColor.rgb.endswith("1F4E78")
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:I4"

    widths = {col: sheet.column_dimensions[col].width for col in "ABCDEFGHI"}
    assert widths["A"] == pytest.approx(len("https://example.com/a") + 2)  # fitted to the URLs
    assert widths["G"] == 60  # long text: capped, and wrapped
    assert widths["C"] == 8  # narrow content: the minimum
    assert sheet["G3"].alignment.wrap_text and sheet["G4"].alignment.wrap_text
    assert not sheet["G2"].alignment.wrap_text

    assert sheet["A2"].hyperlink.target == "https://example.com/a" and sheet["A2"].font.underline == "single"
    assert sheet["B2"].value == 200 and sheet["B2"].data_type == "n"
    assert sheet["C2"].value == 120 and sheet["D3"].value == 1.25 and sheet["D4"].value is None
    assert sheet["B4"].value is None
    assert sheet["E2"].value == dt.datetime(2026, 1, 2, 3, 4, 5) and sheet["E2"].is_date
    assert sheet["E2"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert sheet["F2"].is_date and sheet["F4"].value == "not a date"
    assert sheet["H2"].value == '["x", "y"]' and sheet["H4"].value == '{"k": 1}'

    # The 404 row and the error row are marked; the 200 row is not.
    assert sheet["A3"].fill.fgColor.rgb.endswith("FFC7CE") and sheet["I4"].fill.fgColor.rgb.endswith("FFC7CE")
    assert sheet["A2"].fill.fill_type is None

    summary = {row[0]: row[1] for row in book["summary"].iter_rows(min_row=2, values_only=True)}
    assert summary["rows"] == 3 and summary["rows with an error"] == 1
    assert summary["rows with a non-2xx status"] == 1 and summary["status 404"] == 1
    assert isinstance(summary["written"], dt.datetime)


def test_a_job_goes_to_excel_with_its_run_summary(store, tmp_path):
    store.map("lengths", ["a", "bb", "ccc"], lambda s: {"length": len(s)}, progress=False)
    buf = io.BytesIO()
    store.to_excel("lengths", buf)
    book = openpyxl.load_workbook(io.BytesIO(buf.getvalue()))
    rows = list(book["results"].iter_rows(values_only=True))
    assert rows == [("item", "length", "error"), ("a", 1, None), ("bb", 2, None), ("ccc", 3, None)]
    summary = {row[0]: row[1] for row in book["summary"].iter_rows(min_row=2, values_only=True)}
    assert summary["job"] == "lengths" and summary["run status"] == "done" and summary["run function"]
    with pytest.raises(ValueError, match="no job named"):
        store.to_excel("nope", tmp_path / "x.xlsx")
    with pytest.raises(TypeError, match="job name or a DataFrame"):
        store.to_excel(42, tmp_path / "x.xlsx")


def test_awkward_values_do_not_break_the_file(tmp_path):
    frame = pd.DataFrame({"a": ["bell\x07char", "x" * 40_000, float("inf")], "b": [True, None, 2**40]})
    book = openpyxl.load_workbook(to_excel(frame, tmp_path / "odd.xlsx"))
    sheet = book["results"]
    assert sheet["A2"].value == "bellchar" and len(sheet["A3"].value) == 32_767
    assert sheet["B2"].value is True and sheet["B4"].value == 2**40
