"""What a training job computes, resolved from the config: two jobs with equal specs train the same model, so the plan
runs one of them. SFTMix's reference run (NTP on the full pool, a checkpoint per epoch) is, in the paper configs, the
same training as the plain NTP recipe on that pool: that recipe's run saves the reference checkpoints as well."""

from __future__ import annotations

from sftlab.config import deep_merge, fraction_id, selector_id

#: the rules that train a single run (train_reference: one that is also its pair's reference run)
RUN_TRAINING_RULES = ("train", "train_reference")
#: what the reference run trains: every example of the pool, next-token prediction, one run
REFERENCE_SELECTION = {"name": "full", "fraction": 1.0}
REFERENCE_OBJECTIVE = {"name": "ntp"}


def reference_training(config: dict) -> dict:
    """The reference run's settings: the global training settings, then the reference's own; its epochs reach the
    last checkpoint unless set, and it trains whole epochs (no max_steps)."""
    ref = config["reference"]
    training = deep_merge(config["training"], ref["training"])
    if "epochs" not in ref["training"]:
        training["epochs"] = max(ref["checkpoints"])
    training["max_steps"] = -1
    return training


def _spec(config: dict, model: str, selection: dict, objective: dict, composition: dict, training: dict,
          processes: int) -> dict:
    """The model's config (not its name: two names for one model train alike), the selection's content address (the
    ids file it writes), the objective, the composition, the settings and the process count (the global batch)."""
    return {"model": config["models"][model], "selection": [selector_id(selection), fraction_id(selection["fraction"])],
            "objective": objective, "composition": composition, "training": training, "processes": processes}


def reference_spec(config: dict, model: str, processes: int) -> dict:
    """The reference run's spec on the runs of ``model`` (it trains ``reference.model`` where that is set)."""
    return _spec(config, config["reference"]["model"] or model, REFERENCE_SELECTION, REFERENCE_OBJECTIVE,
                 {"name": "single"}, reference_training(config), processes)


def recipe_spec(config: dict, model: str, recipe: str, processes: int) -> dict:
    r = config["recipes"][recipe]
    return _spec(config, model, r["selection"], r["objective"], r["composition"], r["training"], processes)


def reference_runs(config: dict, pairs, runs, processes: dict[str, int]) -> dict[tuple[str, str], str]:
    """(model, dataset) → the recipe whose run on that pair is the reference run, for each pair in ``pairs`` (those
    needing a reference run) with such a run among ``runs`` ((model, dataset, recipe) triples); ``processes``: the
    processes of a ``reference`` and of a ``train`` job. The first such recipe in name order, where several are."""
    shared = {}
    for model, dataset in pairs:
        ref = reference_spec(config, model, processes["reference"])
        for recipe in sorted(r for (m, d, r) in runs if (m, d) == (model, dataset)):
            if recipe_spec(config, model, recipe, processes["train"]) == ref:
                shared[(model, dataset)] = recipe
                break
    return shared
