"""scripts/train.py as the workflow starts it (a subprocess, plain python or accelerate launch) on the tiny random
model: shared by the multi-process and kill-and-resume tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from sftlab.data import demo
from sftlab.io import write_ids, write_jsonl
from sftlab.models.materialise import materialise

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"

TRAINING = {
    "learning_rate": 1e-3, "epochs": 2, "max_steps": -1, "batch_size": 4, "gradient_accumulation": 1,
    "max_length": 64, "scheduler": "linear", "warmup_ratio": 0.0, "warmup_steps": 0, "weight_decay": 0.0,
    "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "max_grad_norm": 1.0, "seed": 0,
    "precision": "fp32", "finetuning": "full", "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                                        "target_modules": ["q_proj", "v_proj"]},
    "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "gradient_checkpointing": False, "distributed": "ddp",
}


def make_inputs(root: Path, per_family: int = 4) -> Path:
    """A random tiny model and a demo pool (6 families × per_family examples, one held-out each) under ``root``."""
    materialise({"source": "random"}, root / "model")
    train, heldout, _ = demo.generate(per_family=per_family, heldout_per_family=1, degraded_share=0.0,
                                      pairs_per_family=0, seed=0)
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "heldout.jsonl", heldout)
    write_ids(root / "ids", [e["id"] for e in train])
    return root


def train_command(prefix: list[str], inputs: Path, out: Path, training: dict, *extra: str) -> list[str]:
    """``prefix`` (``launch_prefix(n)``) + scripts/train.py with the run's outputs under ``out``."""
    return [*prefix, str(TRAIN_SCRIPT), "--model-dir", str(inputs / "model"), "--train", str(inputs / "train.jsonl"),
            "--ids", str(inputs / "ids"), "--heldout", str(inputs / "heldout.jsonl"), "--training", json.dumps(training),
            "--objective", json.dumps({"name": "ntp"}), "--out", str(out / "model"), "--train-log",
            str(out / "train_log.csv"), "--checkpoints", str(out / "checkpoints"), *extra]


def env() -> dict[str, str]:
    """The job's environment: this source tree first, one thread per process, the venv's python first on PATH."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, env=env(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def read_log(path: Path) -> dict[int, dict[str, str]]:
    with open(path) as fh:
        return {int(row["step"]): row for row in csv.DictReader(fh)}


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {k: v.clone() for k, v in model.state_dict().items()}
