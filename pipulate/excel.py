"""``pip.to_excel``: a workbook people are glad to open.

Bold header on a fill, frozen under the header, an autofilter, column widths fitted
to the content, URLs as hyperlinks, numbers and dates as numbers and dates, long
text wrapped, rows with an error or a non-2xx status marked, and a second sheet
with the run's summary. The web app's Excel download writes through here too.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

HEADER_FILL = "1F4E78"
HEADER_FONT = "FFFFFF"
MARK_FILL = "FFC7CE"  # Excel's own "bad" red
MIN_WIDTH, MAX_WIDTH = 8, 60
WRAP_OVER = 60  # characters: longer text wraps inside its (capped) column
MAX_CELL_CHARS = 32_767  # Excel's limit per cell
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$")
# Characters openpyxl refuses in a cell (control characters but tab, newline, return).
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def to_excel(job_or_frame, path, *, store=None, sheet_name: str = "results", title: str | None = None):
    """Write a styled .xlsx of ``job_or_frame`` (a job name or a DataFrame) to ``path``
    (a file name or a binary file object); returns ``path``."""
    import pandas as pd

    run: dict = {}
    if isinstance(job_or_frame, str):
        if store is None:
            from . import pip as store
        from .mapping import job_frame

        if job_or_frame not in store.jobs():
            raise ValueError(f"no job named {job_or_frame!r}")
        frame = job_frame(store, job_or_frame)
        got = store.get(job_or_frame, "run")
        run = got if isinstance(got, dict) else {}
        title = title or job_or_frame
    elif isinstance(job_or_frame, pd.DataFrame):
        frame = job_or_frame
    else:
        raise TypeError(f"to_excel takes a job name or a DataFrame, got {type(job_or_frame).__name__}")

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = sheet_name[:31]
    write_table(sheet, frame)
    write_summary(book.create_sheet("summary"), frame, run, title)
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def cell_value(value: Any) -> Any:
    """What a cell should hold: numbers as numbers, dates as dates, the rest as text."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        if _ISO.match(value):
            try:
                return cell_value(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                pass
        return _ILLEGAL.sub("", value)[:MAX_CELL_CHARS]
    if isinstance(value, (list, tuple, dict, set)):
        text = json.dumps(value if not isinstance(value, set) else sorted(value, key=str), default=str,
                          ensure_ascii=False)
        return _ILLEGAL.sub("", text)[:MAX_CELL_CHARS]
    return _ILLEGAL.sub("", str(value))[:MAX_CELL_CHARS]


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) < 2000 \
        and " " not in value


def row_is_marked(row: dict) -> bool:
    """An error, or an HTTP status outside 2xx."""
    if row.get("error"):
        return True
    status = row.get("status")
    return isinstance(status, int) and not isinstance(status, bool) and not 200 <= status < 300


def write_table(sheet, frame) -> None:
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    columns = [str(c) for c in frame.columns]
    header_font = Font(bold=True, color=HEADER_FONT)
    header_fill = PatternFill("solid", fgColor=HEADER_FILL)
    mark_fill = PatternFill("solid", fgColor=MARK_FILL)
    link_font = Font(color="0563C1", underline="single")
    wrap = Alignment(wrap_text=True, vertical="top")
    sheet.append(columns)
    for cell in sheet[1]:
        cell.font, cell.fill = header_font, header_fill
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = Border(bottom=Side(style="thin", color="000000"))
    widths = [len(c) + 2 for c in columns]
    for r, record in enumerate(frame.itertuples(index=False, name=None), start=2):
        values = [cell_value(v) for v in record]
        sheet.append(values)
        marked = row_is_marked(dict(zip(columns, values)))
        for c, value in enumerate(values):
            cell = sheet.cell(row=r, column=c + 1)
            if isinstance(value, dt.datetime):
                cell.number_format = DATETIME_FORMAT
            elif isinstance(value, dt.date):
                cell.number_format = DATE_FORMAT
            elif is_url(value):
                cell.hyperlink = value
                cell.font = link_font
            if isinstance(value, str) and (len(value) > WRAP_OVER or "\n" in value):
                cell.alignment = wrap
            if marked:
                cell.fill = mark_fill
            widths[c] = max(widths[c], _display_width(value))
    for c, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(c)].width = max(MIN_WIDTH, min(MAX_WIDTH, width))
    sheet.freeze_panes = "A2"
    if columns:
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{max(sheet.max_row, 1)}"


def _display_width(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        return 19
    if isinstance(value, dt.date):
        return 10
    if isinstance(value, float):
        return len(f"{value:.6g}") + 1
    text = str(value)
    return max((len(line) for line in text.splitlines()), default=0) + 2


def write_summary(sheet, frame, run: dict, title: str | None) -> None:
    from openpyxl.styles import Font

    columns = [str(c) for c in frame.columns]
    rows = [dict(zip(columns, (cell_value(v) for v in rec))) for rec in frame.itertuples(index=False, name=None)]
    done = sum(1 for r in rows if len([k for k, v in r.items() if k not in ("item", "#") and v is not None]) > 0)
    facts: list[tuple[str, Any]] = []
    if title:
        facts.append(("job", title))
    facts += [
        ("rows", len(rows)),
        ("rows with results", done),
        ("rows with an error", sum(1 for r in rows if r.get("error"))),
    ]
    statuses = Counter(r.get("status") for r in rows if isinstance(r.get("status"), int))
    if statuses:
        facts.append(("rows with a non-2xx status", sum(n for s, n in statuses.items() if not 200 <= s < 300)))
        facts += [(f"status {s}", n) for s, n in sorted(statuses.items())]
    for name in ("function", "status", "started", "finished", "total"):
        if name in run:
            facts.append((f"run {name}", cell_value(run[name])))
    facts.append(("columns", ", ".join(columns)))
    facts.append(("written", dt.datetime.now().replace(microsecond=0)))
    sheet.append(["what", "value"])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for name, value in facts:
        sheet.append([name, value])
        if isinstance(value, dt.datetime):
            sheet.cell(row=sheet.max_row, column=2).number_format = DATETIME_FORMAT
    sheet.column_dimensions["A"].width = 28
    sheet.column_dimensions["B"].width = 60
