"""Build a dataset's normalised files from its config entry: train pool, held-out set, preference pairs."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from sftlab.data import demo
from sftlab.data.loaders import (PREFERENCE_FORMATS, convert, iter_rows_hub, iter_rows_local,
                                 lm_eval_fewshot_examples, pair_to_example)

log = logging.getLogger(__name__)


def keep_sources(items: list[dict], sources: list[str], name: str) -> list[dict]:
    """The items whose ``source`` is listed (e.g. four subsets of a mixture); every listed source must occur."""
    kept = [item for item in items if item.get("source") in sources]
    found = {item["source"] for item in kept}
    absent = [s for s in sources if s not in found]
    if absent:
        present = sorted({str(item.get("source")) for item in items})
        raise ValueError(f"datasets.{name}.sources: no rows from {absent} (the data has {present[:20]})")
    return kept


# local files larger than this are not read at planning time (their pool size is checked when prepared)
_COUNT_LIMIT_BYTES = 256 * 2**20


def count_local_rows(path: str | Path) -> int | None:
    """Rows of a local dataset file (non-blank JSONL lines, JSON list items, CSV records); None if unknown."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size > _COUNT_LIMIT_BYTES:
        return None
    if path.suffix in (".json", ".csv"):
        try:
            return sum(1 for _ in iter_rows_local(path))
        except (ValueError, UnicodeDecodeError):
            return None  # a broken file: data preparation reports it with its line
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def pool_bound(cfg: dict) -> int | None:
    """The most training examples a dataset can have, from its config (and a local file's row count), before
    anything is prepared; None when only data preparation can tell (hub data without max_examples)."""
    if cfg["source"] == "demo":
        return cfg["per_family"] * len(cfg.get("families") or demo.FAMILIES)
    rows = count_local_rows(cfg["path"]) if cfg["source"] == "local" else None
    if cfg.get("max_examples"):
        rows = cfg["max_examples"] if rows is None else min(rows, cfg["max_examples"])
    return None if rows is None else rows - cfg.get("heldout", 0)


def prepare_dataset(name: str, cfg: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, heldout, pairs) for dataset ``name`` configured as ``cfg`` (the schema's defaults filled in)."""
    if cfg["source"] == "demo":
        train, heldout, pairs = demo.generate(
            per_family=cfg["per_family"], heldout_per_family=cfg["heldout"], degraded_share=cfg["degraded_share"],
            pairs_per_family=cfg["preference_pairs"], families=cfg.get("families"), seed=cfg["seed"],
        )
        log.info("%s: generated %d training examples, %d held-out, %d preference pairs", name, len(train), len(heldout),
                 len(pairs))
        return train, heldout, pairs

    if cfg["source"] == "lm_eval_fewshot":
        items = lm_eval_fewshot_examples(cfg["task_dir"], source=name)
        log.info("%s: %d few-shot exemplars of lm-eval's %s", name, len(items), cfg["task_dir"])
        return items, [], []

    if cfg["source"] == "local":
        rows = iter_rows_local(cfg["path"])
    else:
        rows = iter_rows_hub(cfg["path"], cfg.get("name"), cfg.get("split", "train"), cfg.get("revision"),
                             cfg.get("data_dirs"))
    items = convert(rows, cfg["format"], source=name, on_bad_rows=cfg["on_bad_rows"],
                    first_turn_only=cfg.get("first_turn_only", False), origin=cfg["path"])
    if cfg.get("sources"):
        items = keep_sources(items, cfg["sources"], name)
    if cfg["format"] in PREFERENCE_FORMATS:
        pairs = items
        examples = [pair_to_example(p) for p in pairs]
    else:
        pairs, examples = [], items
    rng = random.Random(cfg["seed"])
    if cfg.get("max_examples") and len(examples) > cfg["max_examples"]:
        examples = rng.sample(examples, cfg["max_examples"])
    n_heldout = cfg.get("heldout", 0)
    if n_heldout >= len(examples):
        raise ValueError(f"datasets.{name}.heldout: {n_heldout} held-out examples leave none of {len(examples)} to train on")
    order = list(range(len(examples)))
    rng.shuffle(order)
    held = set(order[:n_heldout])
    train = [e for i, e in enumerate(examples) if i not in held]
    heldout = [e for i, e in enumerate(examples) if i in held]
    log.info("%s: %d training examples, %d held-out, %d preference pairs", name, len(train), len(heldout), len(pairs))
    return train, heldout, pairs
