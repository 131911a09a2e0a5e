"""Cost of a pipeline stage from Snakemake's ``benchmark:`` files and the sizes of the files it stores.

A benchmark file is a TSV with one row per measured run (more with ``repeat``); its columns include ``s``
(wall seconds) and ``max_rss`` (MB; ``-`` where it could not be measured). A stage is a group of jobs:
its wall time is the sum over the jobs, its memory the largest of any job, its GPU-hours the sum of
wall time × the GPUs each job requested (n/a when none requested any), its bytes what its outputs
occupy on disk. Every value traces to a file; a value that cannot be read is n/a, never 0.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from sftlab.report.tables import MISSING

COLUMNS = ["model", "dataset", "stage", "item", "jobs", "wall_s", "max_rss_mb", "gpu_hours", "bytes"]


def read_benchmark(path: str | Path) -> dict[str, float]:
    """``{"s", "max_rss"}`` of one benchmark file: the mean wall time over its rows, the largest RSS (NaN if unmeasured)."""
    frame = pd.read_csv(path, sep="\t", na_values=["-", "NA"])
    missing = {"s", "max_rss"} - set(frame.columns)
    if missing or frame.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (lacks {sorted(missing) or 'rows'})")
    return {"s": float(frame["s"].mean()), "max_rss": float(pd.to_numeric(frame["max_rss"], errors="coerce").max())}


def stored_bytes(path: str | Path) -> int | None:
    """Size of a file, or of every file below a directory; None when the path does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum((Path(root) / f).stat().st_size for root, _, files in os.walk(path) for f in files)
    return None


def _sum_or_nan(values: list[float]) -> float:
    return float(sum(values)) if values else math.nan


def stage_cost(benchmarks: list[dict], outputs: list[str | Path]) -> dict[str, float]:
    """Cost of one group of jobs; ``benchmarks`` are ``{"path", "gpus"}``, missing files are skipped and not counted."""
    runs = [(read_benchmark(b["path"]), b["gpus"]) for b in benchmarks if Path(b["path"]).exists()]
    rss = [r["max_rss"] for r, _ in runs if not math.isnan(r["max_rss"])]
    gpu_runs = [r["s"] * gpus / 3600 for r, gpus in runs if gpus]
    sizes = [stored_bytes(o) for o in outputs]
    return {
        "jobs": len(runs),
        "wall_s": _sum_or_nan([r["s"] for r, _ in runs]),
        "max_rss_mb": max(rss) if rss else math.nan,
        "gpu_hours": _sum_or_nan(gpu_runs),
        "bytes": math.nan if not sizes or any(s is None for s in sizes) else float(sum(sizes)),
    }


def _total(part: list[dict]) -> dict:
    total = {**{k: part[0][k] for k in ("model", "dataset", "stage")}, "item": "total",
             "jobs": sum(r["jobs"] for r in part)}
    for column in ("wall_s", "gpu_hours", "bytes"):
        values = [r[column] for r in part]
        total[column] = math.nan if any(math.isnan(v) for v in values) else float(sum(values))
    rss = [r["max_rss_mb"] for r in part if not math.isnan(r["max_rss_mb"])]
    total["max_rss_mb"] = max(rss) if rss else math.nan
    return total


def cost_table(groups: list[dict]) -> pd.DataFrame:
    """One row per group (``model, dataset, stage, item, benchmarks, outputs``), rows of a stage together,
    and after a stage of several rows its ``total``.

    Totals add wall time, GPU-hours and bytes and take the largest memory; a total is n/a if any of its
    rows is n/a (a sum over missing numbers would understate the stage).
    """
    rows = [{**{k: g[k] for k in ("model", "dataset", "stage", "item")}, **stage_cost(g["benchmarks"], g["outputs"])}
            for g in groups]
    out = []
    for key in dict.fromkeys((r["model"], r["dataset"], r["stage"]) for r in rows):
        part = [r for r in rows if (r["model"], r["dataset"], r["stage"]) == key]
        out += part + ([_total(part)] if len(part) > 1 else [])
    return pd.DataFrame(out, columns=COLUMNS)


def format_cost(table: pd.DataFrame) -> pd.DataFrame:
    """The cost table for reading: n/a for unknown values, MB for memory, MiB for stored bytes."""
    out = table[["model", "dataset", "stage", "item", "jobs"]].copy()

    def fmt(value, digits):
        return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    out["wall time (s)"] = [fmt(v, 1) for v in table["wall_s"]]
    out["max RSS (MB)"] = [fmt(v, 1) for v in table["max_rss_mb"]]
    out["GPU-hours"] = [fmt(v, 4) for v in table["gpu_hours"]]
    out["stored (MiB)"] = [fmt(v / 2**20 if not math.isnan(v) else v, 2) for v in table["bytes"]]
    return out
