"""Build a dataset's normalised files from its config entry: train pool, held-out set, preference pairs."""

from __future__ import annotations

import random

from sftlab.data import demo
from sftlab.data.loaders import PREFERENCE_FORMATS, convert, iter_rows_hub, iter_rows_local, pair_to_example


def prepare_dataset(name: str, cfg: dict, log=print) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, heldout, pairs) for dataset ``name`` configured as ``cfg`` (the schema's defaults filled in)."""
    if cfg["source"] == "demo":
        train, heldout, pairs = demo.generate(
            per_family=cfg["per_family"], heldout_per_family=cfg["heldout"], degraded_share=cfg["degraded_share"],
            pairs_per_family=cfg["preference_pairs"], families=cfg.get("families"), seed=cfg["seed"],
        )
        log(f"{name}: generated {len(train)} training examples, {len(heldout)} held-out, {len(pairs)} preference pairs")
        return train, heldout, pairs

    if cfg["source"] == "local":
        rows = iter_rows_local(cfg["path"])
    else:
        rows = iter_rows_hub(cfg["path"], cfg.get("name"), cfg.get("split", "train"), cfg.get("revision"))
    items = convert(rows, cfg["format"], source=name, on_bad_rows=cfg["on_bad_rows"],
                    first_turn_only=cfg.get("first_turn_only", False), log=log)
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
    log(f"{name}: {len(train)} training examples, {len(heldout)} held-out, {len(pairs)} preference pairs")
    return train, heldout, pairs
