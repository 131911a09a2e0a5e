"""The papers' reported numbers, shown beside ours with their source label (METHODS.md marks secondary ones).

One YAML file per paper in ``paper_numbers/``::

    paper: SFTMix (arXiv 2410.05248)
    source: secondary            # "paper" (read from the PDF) or "secondary" (from a summary of it)
    judges: {mt_bench: gpt-4-0613}   # the judge of each judged number (judged papers only)
    rows:
      - {model: Llama-3.1-8B, dataset: Alpaca-52K, method: NTP, mt_bench: 4.3625, ...}

Every row keeps the label, so a table never shows a paper number without saying where it came from — and, for a
judged number, which judge produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

NUMBERS_DIR = Path(__file__).with_name("paper_numbers")


def paper_numbers(name: str) -> pd.DataFrame:
    """The reported rows of paper ``name`` with a ``source`` column such as ``SFTMix (arXiv 2410.05248), secondary``."""
    path = NUMBERS_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in NUMBERS_DIR.glob("*.yaml"))
        raise KeyError(f"no reported numbers for paper {name!r} in {NUMBERS_DIR} (known: {known})")
    spec = yaml.safe_load(path.read_text())
    for key in ("paper", "source", "rows"):
        if key not in spec:
            raise ValueError(f"{path}: missing key {key!r}")
    if spec["source"] not in ("paper", "secondary"):
        raise ValueError(f"{path}: source must be 'paper' or 'secondary', got {spec['source']!r}")
    table = pd.DataFrame(spec["rows"])
    table["source"] = f"{spec['paper']}, {spec['source']}" + judges_label(spec.get("judges") or {})
    return table


def judges_label(judges: Mapping[str, str]) -> str:
    """``; judged by gpt-4-0613 (mt_bench), gpt-4-1106-preview (alpacaeval2_wr, alpacaeval2_lc_wr)``, or empty."""
    by_judge: dict[str, list[str]] = {}
    for key, judge in judges.items():
        by_judge.setdefault(judge, []).append(key)
    return "; judged by " + ", ".join(f"{j} ({', '.join(keys)})" for j, keys in by_judge.items()) if judges else ""


#: columns of a paper's rows that are not numbers
DESCRIPTIVE = ("model", "dataset", "method", "table", "source")


def paper_columns(benchmarks: Mapping[str, str], paper: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The columns of a table of ours beside a paper's numbers, and per column the paper's key.

    ``benchmarks`` maps our benchmark names (our columns, in order) to the paper's key for the same benchmark (its
    name or lm-eval task); the paper's benchmarks we did not run get columns of their own, so its numbers always
    show (ours n/a there).
    """
    keys = dict(benchmarks)
    taken = set(keys.values())
    for key in paper.columns:
        if key not in DESCRIPTIVE and key not in taken and paper[key].notna().any():
            keys[key] = key
    return list(keys), keys
