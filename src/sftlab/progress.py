"""Progress bars for the loops that run for minutes (gradient features, scoring, generation, judging).

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


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterable[T]:
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, mininterval=MIN_INTERVAL_S,
                disable=False, dynamic_ncols=False, ncols=100)
