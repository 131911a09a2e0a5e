"""Predicted GPU-hours of LESS-T's selection beside LESS's: the selection jobs (warmup, gradient features of the pool
and of the validation sets: the GPU jobs of phase "method preparation" before any recipe) that Snakemake plans for a
config whose recipes name a `selection.model` (as planned: one selection by that model, shared by every model trained
on it), and for the same config with each trained model selecting for itself (the LESS paper's LESS rows of those
models), priced by sftlab.report.gpu_cost under the assumptions in src/sftlab/report/gpu_cost.yaml. Arithmetic, not
GPU measurements.

Usage: ``python bench/selection_cost.py [config]`` (default configs/paper/less.yaml); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _plan import ROOT  # noqa: E402

from sftlab.config import read_yaml  # noqa: E402
from sftlab.preflight import planned  # noqa: E402
from sftlab.report.gpu_cost import load_assumptions, selection_hours  # noqa: E402

#: the warmup adapter's parameters (r 128 on q/k/v/o: r × (d_in + d_out) per projection and layer) of the models that
#: would select for themselves: Llama-2-13B 4 × 128 × (5,120 + 5,120) × 40; Mistral-7B (8 key/value heads: k and v
#: project 4,096 → 1,024) 128 × (8,192 + 5,120 + 5,120 + 8,192) × 32
LORA_PARAMS = {"meta-llama/Llama-2-13b-hf": 209_715_200, "mistralai/Mistral-7B-v0.1": 109_051_904}
#: vocabulary sizes (the gradient jobs' memory check)
VOCAB = {"meta-llama/Llama-2-13b-hf": 32_000, "mistralai/Mistral-7B-v0.1": 32_000}
#: a batch of the self-selection variant: 2 sequences of 2,048 tokens (6,144 tokens of Llama-2-13B need about 94 GB)
SELF_MAX_TOKENS = 4096


def self_selection(raw: dict, a: dict) -> dict:
    """The config with every `selection.model` dropped (each trained model selects for itself), with the gradient
    cost entries of the models that now compute features."""
    out = copy.deepcopy(raw)
    moved = {name for name, recipe in out["recipes"].items() if recipe.get("selection", {}).pop("model", None)}
    # the models that train those recipes now select
    selecting = {m for exp in out["experiments"].values() if moved & set(exp["recipes"]) for m in exp["models"]}
    cost = out["gradients"]["cost"]
    for name in selecting - set(cost["models"]):
        repo = out["models"][name]["repo_id"]
        arch = a["models"][repo]
        cost["models"][name] = {"params": arch["params"], "layers": arch["layers"], "hidden_size": arch["hidden_size"],
                                "vocab_size": VOCAB[repo], "lora_params": LORA_PARAMS[repo]}
    out["gradients"]["max_tokens"] = min(out["gradients"]["max_tokens"], SELF_MAX_TOKENS)
    return out


def planned_hours(raw: dict, a: dict) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        configfile = Path(workdir) / "config.yaml"
        configfile.write_text(yaml.safe_dump(raw))
        (Path(workdir) / "work").mkdir()
        config, jobs = planned(configfile, Path(workdir) / "work")
    return selection_hours(jobs, config, a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "paper" / "less.yaml")
    args = ap.parse_args()
    a = load_assumptions()
    raw = read_yaml(args.config)
    print(f"GPU: {a['gpu']['name']}; GPU-hours of the selection jobs per model that selects, by rule (the GPU jobs "
          "of phase 'method preparation' before any recipe: LESS's warmup and gradient features, RDS's hidden "
          "states)\n")
    variants = {label: planned_hours(config, a) for label, config in (
        ("as planned (selection.model)", raw), ("each model selects for itself", self_selection(raw, a)))}
    rules = list(dict.fromkeys(r for pairs in variants.values() for hours in pairs.values() for r in hours))
    print("| selection | model that selects | " + " | ".join(rules) + " | total |")
    print("|---|---|" + "---:|" * (len(rules) + 1))
    for label, pairs in variants.items():
        for (model, dataset), hours in pairs.items():
            cells = [f"{hours.get(r, 0):,.1f}" for r in rules]
            print(f"| {label} | {model} ({dataset}) | " + " | ".join(cells) + f" | {sum(hours.values()):,.1f} |")


if __name__ == "__main__":
    main()
