"""The workloads of ``bench/run_all.py``, as notebook cells (plain source text).

Importable without pipulate (the Kishu worker runs in a venv of its own), so it
needs only numpy, pandas and dill.

1. ``big_cells(size_mib, n)``: the 1 GiB namespace of the kernel-state benchmark
   (``bench_kernel_state.build_namespace``: three float arrays and a float
   DataFrame, plus small variables), then ``n`` cells that change one small
   variable.
2. ``pandas_cells(rows)``: 30 cells of typical pandas work: build frames, new
   columns, datetime and string ops, merges, groupbys, pivots, rolling and
   resampling, filtering, sorting.
3. ``container_cells(size_mib, n)``: the same bytes as 1., held in a list and a dict
   (``runs = [a, b]``, ``store = {"c": c, "df": df}``), as users keep data.
4. ``catalog_cells()``: dill's object catalog (``dill._objects.succeeds``), every
   object bound to a variable of its catalog name.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def big_values(size_mib: int):
    """a, b, c, df, counter, config, labels, title of the kernel-state benchmark."""
    from bench_kernel_state import build_namespace

    ns = build_namespace(size_mib)
    return tuple(ns[k] for k in ("a", "b", "c", "df", "counter", "config", "labels", "title"))


def big_cells(size_mib: int, n: int) -> list[str]:
    setup = ("import numpy as np\nimport pandas as pd\nfrom workloads import big_values as _mk\n"
             f"a, b, c, df, counter, config, labels, title = _mk({size_mib})\ndel _mk")
    return [setup] + ["counter += 1"] * n


def container_cells(size_mib: int, n: int) -> list[str]:
    cells = big_cells(size_mib, n)
    return [cells[0] + '\nruns = [a, b]\nstore = {"c": c, "df": df}\ndel a, b, c, df'] + cells[1:]


PANDAS_CELLS = [
    "import numpy as np\nimport pandas as pd",
    "rng = np.random.default_rng(0)\nn = {rows}",
    'df = pd.DataFrame({{"id": np.arange(n), "store": rng.integers(0, 500, n), '
    '"product": rng.integers(0, 2000, n), "qty": rng.integers(1, 20, n), '
    '"price": rng.gamma(2.0, 10.0, n).round(2), '
    '"ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 24 * 3600, n), unit="s")}})',
    'df["revenue"] = df["qty"] * df["price"]',
    'df["date"] = df["ts"].dt.normalize()\ndf["month"] = df["ts"].dt.strftime("%Y-%m")',
    'df["weekday"] = df["ts"].dt.day_name()',
    'stores = pd.DataFrame({"store": np.arange(500), "region": rng.choice(["north", "south", "east", "west"], 500), '
    '"size": rng.choice(["S", "M", "L"], 500)})',
    'products = pd.DataFrame({"product": np.arange(2000), "category": [f"cat{i % 25:02d}" for i in range(2000)], '
    '"name": [f"Product {i} deluxe" for i in range(2000)]})',
    'full = df.merge(stores, on="store", how="left").merge(products, on="product", how="left")',
    'by_region = full.groupby("region")["revenue"].agg(["sum", "mean", "count"])',
    'by_cat_month = full.groupby(["category", "month"])["revenue"].sum().reset_index()',
    'pivot = by_cat_month.pivot(index="month", columns="category", values="revenue")',
    'daily = full.groupby("date")["revenue"].sum().sort_index()',
    "rolling = daily.rolling(7).mean()",
    'full["name_upper"] = full["name"].str.upper()',
    'full["name_len"] = full["name"].str.len()',
    'big_orders = full[full["revenue"] > full["revenue"].quantile(0.95)]',
    'top_products = full.groupby("name")["revenue"].sum().nlargest(20)',
    'full["price_band"] = pd.cut(full["price"], bins=[0, 5, 10, 20, 50, 1e9], labels=["xs", "s", "m", "l", "xl"])',
    'band_counts = full["price_band"].value_counts()',
    'store_stats = full.groupby("store").agg(revenue=("revenue", "sum"), orders=("id", "count"), '
    'avg_qty=("qty", "mean"))',
    'store_stats["rank"] = store_stats["revenue"].rank(ascending=False)',
    'weekday_pivot = full.pivot_table(index="weekday", columns="region", values="revenue", aggfunc="sum")',
    'full = full.sort_values(["store", "ts"])',
    'full["cum_rev"] = full.groupby("store")["revenue"].cumsum()',
    'hourly = full.set_index("ts")["revenue"].resample("h").sum()',
    'corr = full[["qty", "price", "revenue", "name_len"]].corr()',
    "summary = full.describe()",
    "sample = full.sample(1000, random_state=1)",
    'report = {"total": float(full["revenue"].sum()), "regions": by_region.to_dict(), '
    '"top": top_products.index[:5].tolist()}',
]
assert len(PANDAS_CELLS) == 30


def pandas_cells(rows: int) -> list[str]:
    return [c.format(rows=rows) if "{rows}" in c or "{{" in c else c for c in PANDAS_CELLS]


def catalog() -> dict:
    """dill's catalog of objects dill can pickle: name -> object (made fresh in this process)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dill._objects as objects
    return dict(objects.succeeds)


_CATALOG: dict | None = None


def catalog_object(name: str):
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = catalog()
    return _CATALOG[name]


def catalog_cells() -> list[str]:
    """One cell per object: ``ArrayType = ...``, so a tool that fails on one object can go on."""
    return [f'{name} = __import__("workloads").catalog_object({name!r})' for name in catalog()]


def type_name(value) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
