"""Showing stored values of any type: in a page (FT) and in the JSON API.

Values can be anything ``pip.set`` accepts, so every view is bounded: a
DataFrame shows its shape and first rows, an array its shape and dtype, long
text and big containers are cut with a note of what was left out.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import pathlib
import uuid
from typing import Any

from fasthtml.common import Code, Div, Pre, Small, Span, Table, Tbody, Td, Th, Thead, Tr

from ..codecs import loaded_module
from ..display import size as human_size  # noqa: F401  (the sizes every face shows)

TEXT_LIMIT = 2000        # characters of text shown in a page
PREVIEW_ROWS = 5         # rows of a DataFrame / items of an array shown
JSON_ITEMS_LIMIT = 200   # elements of a list/dict given back whole by the API
PREVIEW_BYTES_LIMIT = 64 * 1024 * 1024  # stored values larger than this are not decoded for a preview


class Damaged:
    """Stands for a value that could not be read back (damage, missing blob, foreign pickle)."""

    def __init__(self, message: str):
        self.message = message

    def __repr__(self) -> str:
        return f"<damaged: {self.message}>"


def type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module.split('.')[0]}.{kind.__qualname__}"


def _pandas():
    return loaded_module("pandas")  # not one another request thread is still importing


def _numpy():
    return loaded_module("numpy")


def summary(value: Any) -> str:
    """One line saying what a value is: type, shape, length."""
    if isinstance(value, Damaged):
        return f"damaged: {value.message}"
    pd, np = _pandas(), _numpy()
    if pd is not None and isinstance(value, pd.DataFrame):
        return f"DataFrame {value.shape[0]} rows × {value.shape[1]} columns"
    if pd is not None and isinstance(value, pd.Series):
        return f"Series of {len(value)} ({value.dtype})"
    if np is not None and isinstance(value, np.ndarray):
        return f"ndarray shape {value.shape} dtype {value.dtype}"
    if isinstance(value, str):
        return f"str, {len(value)} characters"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__}, {len(value)} bytes"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"{type_name(value)} of {len(value)}"
    return type_name(value)


def cut(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def _safe_repr(value: Any, limit: int = TEXT_LIMIT) -> str:
    try:
        return cut(repr(value), limit)
    except Exception as exc:  # a user's object whose __repr__ fails must not break the page
        return f"<{type_name(value)}: repr failed: {exc!r}>"


def _frame_table(df) -> Table:
    head = df.head(PREVIEW_ROWS)
    cols = [str(c) for c in head.columns]
    rows = []
    for idx, row in zip(head.index, head.itertuples(index=False)):
        rows.append(Tr(Th(cut(str(idx), 80)), *[Td(cut(str(v), 200)) for v in row]))
    return Table(Thead(Tr(Th(""), *[Th(cut(c, 80)) for c in cols])), Tbody(*rows), cls="compact")


def value_view(value: Any):
    """A bounded FT view of any value."""
    if isinstance(value, Damaged):
        return Div(Span("Cannot read this value: ", value.message), cls="flash-error")
    pd, np = _pandas(), _numpy()
    if pd is not None and isinstance(value, pd.DataFrame):
        note = Small(summary(value) + (f"; first {PREVIEW_ROWS} rows" if len(value) > PREVIEW_ROWS else ""))
        return Div(note, Div(_frame_table(value), cls="value-box"))
    if pd is not None and isinstance(value, pd.Series):
        return Div(Small(summary(value)), Div(_frame_table(value.to_frame()), cls="value-box"))
    if np is not None and isinstance(value, np.ndarray):
        try:
            text = np.array2string(value, threshold=60, edgeitems=3, max_line_width=100)
        except Exception:  # structured or exotic dtypes
            text = _safe_repr(value)
        return Div(Small(summary(value)), Pre(Code(cut(text, TEXT_LIMIT))), cls="value-box")
    if isinstance(value, str):
        return Div(cut(value), cls="value-text")
    if value is None or isinstance(value, (bool, int, float)):
        return Code(repr(value))
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = _safe_repr(value)
        return Div(Small(summary(value)), Pre(Code(cut(text))), cls="value-box")
    return Div(Small(summary(value)), Pre(Code(_safe_repr(value))))


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe form of ``value`` for the API: exact for JSON types, a summary otherwise."""
    if depth > 20:
        return {"type": type_name(value), "summary": "nested too deeply"}
    if value is None or isinstance(value, (bool, str)) or type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Damaged):
        return {"type": "damaged", "error": value.message}
    if isinstance(value, (list, tuple)) and len(value) <= JSON_ITEMS_LIMIT:
        return [to_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) <= JSON_ITEMS_LIMIT:
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, pathlib.PurePath)):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    pd = _pandas()
    if pd is not None and isinstance(value, pd.DataFrame):
        head = value.head(PREVIEW_ROWS)
        return {"type": "DataFrame", "shape": list(value.shape), "columns": [str(c) for c in value.columns],
                "head": json.loads(head.to_json(orient="split", date_format="iso", default_handler=str))}
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray):
        return {"type": "ndarray", "shape": list(value.shape), "dtype": str(value.dtype)}
    return {"type": type_name(value), "summary": summary(value), "repr": _safe_repr(value, 500)}
