"""Progress bars for the loops that run for minutes (gradient features, scoring, generation, judging, held-out
evaluation, Fisher merging, embeddings).

Jobs write stderr to their log files, which are not terminals: tqdm would switch itself off there, so the bar is
forced on and redrawn at most every ``MIN_INTERVAL_S`` seconds, which keeps a log readable (``tail -f`` shows where
a cluster job stands).
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_INTERVAL_S = 10.0


def progress_bar(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A bar drawn as every job's bars are, for a library that opens its own (vLLM's ``use_tqdm`` takes this)."""
    return tqdm(iterable, **{**kwargs, "file": sys.stderr, "mininterval": MIN_INTERVAL_S, "disable": False,
                             "dynamic_ncols": False, "ncols": 100})


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterable[T]:
    return progress_bar(iterable, desc=desc, total=total, unit=unit)
