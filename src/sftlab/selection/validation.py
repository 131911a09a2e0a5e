"""Few-shot validation sets of LESS and ROSE, drawn from a dataset's normalised files.

A validation set holds preference pairs (ROSE's DPO loss; LESS uses their chosen answers) or SFT examples
(LESS), each with a ``subtask``. Items are grouped by subtask (sorted by name) and put in a seeded order
within each subtask, so that "the first k items of each subtask" (``gradients.take_shots``) is a random
sample of k, and the 1-shot items are among the 2-shot items, which are among the 5-shot items.
"""

from __future__ import annotations

import random

from .gradients import row_subtask


def validation_items(rows: list[dict], subtasks: list[str] | None = None, seed: int = 0) -> list[dict]:
    """``rows`` with a ``subtask`` field, only ``subtasks`` (all when None), seeded order within each subtask.

    Each subtask's order comes from its own generator keyed by (seed, subtask): keeping or dropping other
    subtasks never changes which items a subtask contributes.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row_subtask(row), []).append({**row, "subtask": row_subtask(row)})
    if subtasks is not None:
        unknown = sorted(set(subtasks) - set(groups))
        if unknown:
            raise ValueError(f"validation subtasks {unknown} not in the data (it has {sorted(groups)})")
        groups = {name: groups[name] for name in subtasks}
    items = []
    for name in sorted(groups):
        group = groups[name]
        random.Random(f"{seed}/{name}").shuffle(group)
        items += group
    if not items:
        raise ValueError("the validation set is empty")
    return items
