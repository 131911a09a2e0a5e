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
from graphlib import TopologicalSorter
from pathlib import Path

import pandas as pd

from sftlab.report.dag import PHASES, DagJob
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


def _gpu_total(part: list[dict]) -> float:
    """GPU-hours of several rows: unknown when a row's wall time is; a row whose jobs had no GPU adds nothing
    (its n/a means "no GPU", not "unknown"); n/a when no row had a GPU."""
    if any(math.isnan(r["wall_s"]) for r in part):
        return math.nan
    return _sum_or_nan([r["gpu_hours"] for r in part if not math.isnan(r["gpu_hours"])])


def _total(part: list[dict]) -> dict:
    total = {**{k: part[0][k] for k in ("model", "dataset", "stage")}, "item": "total",
             "jobs": sum(r["jobs"] for r in part), "gpu_hours": _gpu_total(part)}
    for column in ("wall_s", "bytes"):
        values = [r[column] for r in part]
        total[column] = math.nan if any(math.isnan(v) for v in values) else float(sum(values))
    rss = [r["max_rss_mb"] for r in part if not math.isnan(r["max_rss_mb"])]
    total["max_rss_mb"] = max(rss) if rss else math.nan
    return total


def cost_table(groups: list[dict]) -> pd.DataFrame:
    """One row per group (``model, dataset, stage, item, benchmarks, outputs``), rows of a stage together,
    and after a stage of several rows its ``total``.

    Totals add wall time, GPU-hours and bytes and take the largest memory; a total is n/a if any of its
    rows is n/a (a sum over missing numbers would understate the stage), except that rows without GPUs add
    no GPU-hours.
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


# ---------------------------------------------------------------- the whole pipeline, and per paper

#: model or dataset of a job that has none (the base model's materialisation has no dataset, and so on)
NOT_APPLICABLE = "—"


def served_recipes(jobs: list[DagJob]) -> list[set[str]]:
    """Per job, the recipes whose runs depend on it: the ``recipe`` wildcards of the job and of its descendants."""
    served = [{job.wildcards["recipe"]} if "recipe" in job.wildcards else set() for job in jobs]
    order = TopologicalSorter({i: job.dependencies for i, job in enumerate(jobs)}).static_order()
    for i in reversed(list(order)):  # a job's dependents come first: its set is complete when passed on
        for d in jobs[i].dependencies:
            served[d] |= served[i]
    return served


def job_papers(jobs: list[DagJob], recipe_papers: dict[str, list[str]]) -> list[set[str]]:
    """Per job, the papers it serves: those of the recipes whose runs depend on it (``recipe_papers``: the recipes the
    experiments run). A job no run depends on (the t-SNE figure of the confidence split) serves what its own method
    inputs serve: the jobs it depends on for the same model and dataset that belong to no recipe."""
    papers = [{p for r in recipes if r in recipe_papers for p in recipe_papers[r]} for recipes in served_recipes(jobs)]
    for i, job in enumerate(jobs):
        if not papers[i] and job.benchmark is not None:
            key = (job.wildcards.get("model"), job.wildcards.get("dataset"))
            papers[i] = {p for d in job.dependencies if "recipe" not in jobs[d].wildcards
                         and (jobs[d].wildcards.get("model"), jobs[d].wildcards.get("dataset")) == key
                         for p in papers[d]}
    return papers


def cost_jobs(jobs: list[DagJob], recipe_papers: dict[str, list[str]]) -> list[dict]:
    """The jobs of the DAG with a benchmark file, each with its phase, the papers it serves, its model and dataset
    (NOT_APPLICABLE without), its benchmark file (``{"path", "gpus"}``) and the outputs it keeps.

    A benchmarked rule without a phase, or a benchmarked job serving no paper, is an error: it would drop out of
    the tables silently."""
    papers = job_papers(jobs, recipe_papers)
    out = []
    for job, served in zip(jobs, papers, strict=True):
        if job.benchmark is None:
            continue
        if job.phase not in PHASES:
            raise ValueError(f"rule {job.rule} has a benchmark file but no cost phase: declare it with "
                             f"phase_benchmark(<one of {', '.join(PHASES)}>, ...)")
        if not served:
            raise ValueError(f"job {job.rule} {job.wildcards} serves no recipe of the experiments: its cost would "
                             f"count under no paper")
        out.append({"rule": job.rule, "phase": job.phase, "papers": sorted(served),
                    "model": job.wildcards.get("model", NOT_APPLICABLE),
                    "dataset": job.wildcards.get("dataset", NOT_APPLICABLE),
                    "benchmark": {"path": job.benchmark, "gpus": job.gpus}, "outputs": list(job.outputs)})
    return out


def rule_order(jobs: list[dict]) -> list[str]:
    """The rules of ``jobs`` in pipeline order: by phase, then in the order the workflow defines them (``jobs`` come
    in that order)."""
    rules = list(dict.fromkeys(j["rule"] for j in jobs))
    phase = {j["rule"]: j["phase"] for j in jobs}
    return sorted(rules, key=lambda r: PHASES.index(phase[r]))


def _group(model: str, dataset: str, stage: str, item: str, jobs: list[dict]) -> dict:
    return {"model": model, "dataset": dataset, "stage": stage, "item": item,
            "benchmarks": [j["benchmark"] for j in jobs], "outputs": [o for j in jobs for o in j["outputs"]]}


def pipeline_groups(jobs: list[dict], rules: list[str]) -> list[dict]:
    """One group per (model, dataset, rule) that has jobs: jobs without a model or dataset first, then each model
    and dataset in sorted order, the rules in pipeline order; the item is the rule's phase."""
    order = {r: i for i, r in enumerate(rules)}
    keys = sorted({(j["model"], j["dataset"], j["rule"]) for j in jobs},
                  key=lambda k: (k[0] != NOT_APPLICABLE, k[0], k[1] != NOT_APPLICABLE, k[1], order[k[2]]))
    phase = {j["rule"]: j["phase"] for j in jobs}
    return [_group(m, d, r, phase[r], [j for j in jobs if (j["model"], j["dataset"], j["rule"]) == (m, d, r)])
            for m, d, r in keys]


def paper_groups(jobs: list[dict], papers: list[str], phases: list[str]) -> list[dict]:
    """One group per (paper, phase): the jobs that serve some recipe of the paper. A job serving several papers'
    recipes (the base model, the data, a combined recipe) counts under each of them."""
    return [_group("all", "all", paper, phase, part) for paper in papers for phase in phases
            if (part := [j for j in jobs if paper in j["papers"] and j["phase"] == phase])]


def with_grand_total(table: pd.DataFrame, label: str = "whole pipeline") -> pd.DataFrame:
    """``table`` and a last row totalling its rows (its per-stage totals left out)."""
    part = [r for r in table.to_dict("records") if r["item"] != "total"]
    if not part:
        return table
    total = {**_total(part), "model": "all", "dataset": "all", "stage": label}
    return pd.concat([table, pd.DataFrame([total], columns=COLUMNS)], ignore_index=True)
