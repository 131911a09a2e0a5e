"""log πref is scored through the forward path of the runs that compare their log-probs with it, so that
r = log πθ − log πref is 0 at step 0: full fine-tuning (float32 weights, bf16 autocast), LoRA (the frozen base in bf16,
the adapter at initialisation) and FSDP's mixed precision (parameters and buffers — RoPE's frequencies too — cast to
bf16). The policy side is built as a run builds it: the trainer's load_model, FSDP's cast, accelerate's autocast."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sftlab.data import demo
from sftlab.data.tokenize import collate, encode_example
from sftlab.io import write_jsonl
from sftlab.models.random_init import save_random_model
from sftlab.objectives.base import batch_sequence_logps, model_inputs
from sftlab.training.forward_path import forward_path
from sftlab.training.trainer import load_model

REPO = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
RUNS = {  # name: (training settings, processes)
    "full": ({"finetuning": "full", "precision": "bf16", "distributed": "ddp", "seed": 0}, 1),
    "lora": ({"finetuning": "lora", "lora": LORA, "precision": "bf16", "distributed": "ddp", "seed": 0}, 1),
    "fsdp": ({"finetuning": "full", "precision": "bf16", "distributed": "fsdp", "seed": 0}, 2),
}


def ref_logprobs_script():
    spec = importlib.util.spec_from_file_location("script_ref_logprobs", REPO / "scripts" / "ref_logprobs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_path")
    save_random_model(root / "model", seed=3)
    train, _, _ = demo.generate(per_family=1, heldout_per_family=0, degraded_share=0.0, pairs_per_family=0, seed=0)
    write_jsonl(root / "train.jsonl", train)
    return root, train


def policy_logps(model_dir: Path, examples: list[dict], cfg: dict, processes: int) -> list[float]:
    """log πθ(y|x) of each example in the run's first forward pass: loaded by the trainer's load_model (a GPU's
    weights_dtype: bf16 for LoRA's base), cast to bf16 with its buffers under FSDP (MixedPrecision param_dtype =
    buffer_dtype = bf16), in training mode, under the bf16 autocast accelerate wraps the forward in."""
    lora = cfg["finetuning"] == "lora"
    model, tokenizer = load_model(model_dir, cfg, dtype=torch.bfloat16 if lora else None)
    if processes > 1 and cfg["distributed"] == "fsdp":
        model.to(torch.bfloat16)
    model.train()
    out = []
    for ex in examples:
        batch = collate([encode_example(tokenizer, ex["messages"], 64)], tokenizer.pad_token_id)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(**model_inputs(batch)).logits
        out.append(float(batch_sequence_logps(logits.float(), batch)[0][0]))
    return out


def scored(root: Path, cfg: dict, processes: int, name: str) -> list[float]:
    out = root / f"{name}.parquet"
    ref_logprobs_script().main(["--model", str(root / "model"), "--data", str(root / "train.jsonl"), "--out", str(out),
                                "--max-length", "64", "--device", "cpu", "--batch-size", "1",
                                "--training", json.dumps(cfg), "--processes", str(processes)])
    return pd.read_parquet(out)["ref_logp"].tolist()


@pytest.mark.parametrize("run", list(RUNS))
def test_reward_is_zero_at_step_zero(inputs, run):
    root, examples = inputs
    cfg, processes = RUNS[run]
    policy = policy_logps(root / "model", examples, cfg, processes)
    reference = scored(root, cfg, processes, run)
    assert max(abs(p - r) for p, r in zip(policy, reference)) < 1e-5


def test_the_paths_differ_enough_to_matter(inputs):
    """The old reference path (float32 weights under autocast, whatever the run) is off for LoRA and FSDP by far more
    than the tolerance above (here 1.3e-3 to 3.6e-3 nats at most): the bf16 residual stream, norms and RoPE frequencies of those runs."""
    root, examples = inputs
    old = policy_logps(root / "model", examples, RUNS["full"][0], 1)
    for run in ("lora", "fsdp"):
        policy = policy_logps(root / "model", examples, *RUNS[run])
        assert max(abs(p - o) for p, o in zip(policy, old)) > 5e-4, run


def test_forward_paths():
    bf16 = torch.bfloat16
    full = forward_path(RUNS["full"][0], 8, "bf16")
    assert (full.base, full.cast, full.autocast) == (torch.float32, None, bf16)  # DDP: float32 weights, autocast
    lora = forward_path(RUNS["lora"][0], 8, "bf16")
    assert (lora.base, lora.cast, lora.autocast) == (bf16, None, bf16)
    fsdp = forward_path(RUNS["fsdp"][0], 8, "bf16")
    assert (fsdp.base, fsdp.cast, fsdp.autocast) == (torch.float32, bf16, bf16)
    assert forward_path(RUNS["fsdp"][0], 1, "bf16").cast is None  # one process: nothing sharded, nothing cast
    zero3 = forward_path({**RUNS["fsdp"][0], "distributed": "deepspeed"}, 8, "bf16")
    assert (zero3.cast, zero3.autocast) == (bf16, None)
    fp32 = forward_path(RUNS["lora"][0], 1, "fp32")
    assert (fp32.base, fp32.cast, fp32.autocast) == (torch.float32, None, None)
    with pytest.raises(ValueError, match="LoRA runs use ddp"):
        forward_path({**RUNS["lora"][0], "distributed": "fsdp"}, 2, "bf16")


def dry_run(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p", "--cores", "1",
                           "--directory", str(tmp_path), "--configfile", str(path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)


def test_the_reference_table_takes_its_runs_forward_path(tmp_path):
    """One ref_logprobs table per model × dataset, scored through its runs' path: the command carries their path
    settings and process count; a DPO-SFT run fine-tuned fully beside LoRA MinorSFT runs is refused at plan time."""
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    proc = dry_run(tmp_path / "ok", tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (command,) = [line for line in proc.stdout.splitlines() if "scripts/ref_logprobs.py" in line and "Shell" in line]
    training = json.loads(command.split("--training ")[1].split(" --processes")[0].strip("'"))
    assert training["finetuning"] == "lora" and "learning_rate" not in training and "--processes 1 " in command
    full_dpo = {**tiny["recipes"]["dpo_sft"], "training": {"finetuning": "full"}}
    proc = dry_run(tmp_path / "mixed", {**tiny, "recipes": {**tiny["recipes"], "dpo_sft": full_dpo}})
    assert proc.returncode != 0
    assert "use training.finetuning / precision / distributed" in proc.stdout + proc.stderr
