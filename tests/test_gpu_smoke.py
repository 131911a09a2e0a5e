"""bench/gpu_smoke.py end to end on the CPU (--cpu-check: the paths a CPU can run, tiny shapes), its refusal without
a GPU, and its calibration in the cost model's own format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_smoke.py"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_smoke  # noqa: E402

from sftlab.report.gpu_cost import load_assumptions, training_mfu  # noqa: E402

CPU_PATHS = ["train lora sdpa", "train full sdpa", "gradient features", "merge (ties)", "fisher merge"]
CUDA_PATHS = ["train lora flash-attention packed", "train full flash-attention packed", "fsdp save and resume",
              "vllm generation"]


def smoke(*args: str, cuda_visible: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    if not cuda_visible:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "smoke.json"
    proc = smoke("--cpu-check", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc, json.loads(out.read_text())


def test_cpu_check_runs_every_path_a_cpu_can_run(cpu_check):
    _, report = cpu_check
    assert report["device"] == "cpu" and report["cpu_check"] is True and report["peak_bf16_tflops"] is None
    assert report["model"]["params"] > 0 and "random weights" in report["model"]["source"]
    paths = {r["path"]: r for r in report["paths"]}
    assert list(paths) == list(gpu_smoke.PATHS)
    assert sorted(CPU_PATHS + CUDA_PATHS) == sorted(paths)
    for name in CPU_PATHS:
        r = paths[name]
        assert r["status"] == "ok", r
        assert r["seconds"] > 0 and r["assumed"]["source"]
        assert r["mfu"] is None and r["peak_memory_gb"] is None  # neither is measured on a CPU
    for name in CUDA_PATHS:  # each skipped path says why
        assert paths[name]["status"] == "skipped: needs CUDA"
    for name in ("train lora sdpa", "train full sdpa", "gradient features", "fisher merge"):
        assert paths[name]["tokens_per_s_per_gpu"] > 0


def test_cpu_check_training_layouts_and_the_cost_models_assumption(cpu_check):
    _, report = cpu_check
    paths = {r["path"]: r for r in report["paths"]}
    lora, full = paths["train lora sdpa"], paths["train full sdpa"]
    # tiny shapes: 64 tokens an example; LoRA at batch 1, full at 2; 3 steps, the first two untimed
    assert (lora["micro_batch_tokens"], full["micro_batch_tokens"]) == (64, 128)
    assert lora["steps_timed"] == full["steps_timed"] == 1
    n = report["model"]["params"]
    assert (lora["flops_per_token"], full["flops_per_token"]) == (4 * n, 6 * n)
    # both micro-batches lie below the shipped table's first anchors (flat there), with gradient checkpointing:
    # × 4/6 for LoRA, × 6/8 for full fine-tuning
    table = load_assumptions()["training_mfu"]
    assert lora["assumed"]["mfu"] == pytest.approx(table["lora"][min(table["lora"])] * 4 / 6)
    assert full["assumed"]["mfu"] == pytest.approx(table["full"][min(table["full"])] * 6 / 8)
    grads = paths["gradient features"]
    assert grads["batch_tokens"] == 6144 and grads["items"] == 12  # one batch of 12 × 512 tokens


def test_cpu_check_prints_one_table_row_a_path(cpu_check):
    proc, report = cpu_check
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| path | status | tokens/s/GPU | MFU | peak memory")
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == [r["path"] for r in report["paths"]]
    assert not [line for line in proc.stdout.splitlines() if line.startswith("{'loss'")]  # the Trainer's lines go
    # to stderr


def test_refuses_without_a_gpu(tmp_path):
    proc = smoke("--out", str(tmp_path / "x.json"), cuda_visible=False)
    assert proc.returncode != 0
    assert "no CUDA GPU is visible" in proc.stderr and "--cpu-check" in proc.stderr
    assert not (tmp_path / "x.json").exists()
    proc = smoke("--cpu-check", "--calibrate", str(tmp_path / "mfu.yaml"))
    assert proc.returncode != 0 and "--calibrate needs GPU measurements" in proc.stderr


def report_with(paths: list[dict], peak: float | None = 989.0) -> dict:
    return {"device": "NVIDIA H100 80GB HBM3", "peak_bf16_tflops": peak, "date": "2026-12-07 12:00 UTC",
            "model": {"params": 885_000_000}, "paths": paths}


def test_calibration_is_the_cost_models_own_format(tmp_path):
    """Each measured layout becomes an anchor without gradient checkpointing; the cost model, given the calibrated
    table, predicts back the measured MFU of each layout."""
    a = load_assumptions()
    measured = [
        {"path": "train lora sdpa", "status": "ok", "finetuning": "lora", "micro_batch_tokens": 400,
         "gradient_checkpointing": True, "mfu": 0.06},
        {"path": "train full sdpa", "status": "ok", "finetuning": "full", "micro_batch_tokens": 4096,
         "gradient_checkpointing": True, "mfu": 0.30},
        {"path": "train full flash-attention packed", "status": "skipped: flash_attn is not importable"},
    ]
    path = tmp_path / "mfu.yaml"
    gpu_smoke.write_calibration(path, report_with(measured), a)
    table = yaml.safe_load(path.read_text())["training_mfu"]
    assert table["measured"] == {"lora": [400], "full": [4096]} and table["device"] == "NVIDIA H100 80GB HBM3"
    assert table["lora"][400] == pytest.approx(0.09)        # 0.06 / (4/6)
    assert table["full"][4096] == pytest.approx(0.40)       # 0.30 / (6/8)
    assert table["distributed"] == a["training_mfu"]["distributed"]
    assert training_mfu(table, "lora", 400, gradient_checkpointing=True) == pytest.approx(0.06, abs=1e-4)
    assert training_mfu(table, "full", 4096, gradient_checkpointing=True) == pytest.approx(0.30, abs=1e-4)
    # the anchors not measured stay as shipped: a single measured layout does not flatten the whole curve
    for kind, measured_tokens in (("lora", 400), ("full", 4096)):
        shipped = {t: v for t, v in a["training_mfu"][kind].items() if t != measured_tokens}
        assert {t: v for t, v in table[kind].items() if t != measured_tokens} == shipped
    only_lora = gpu_smoke.calibration(report_with(measured[:1]), a)["training_mfu"]
    assert only_lora["full"] == a["training_mfu"]["full"] and only_lora["measured"] == {"lora": [400]}
    with pytest.raises(ValueError, match="no dense bf16 peak"):
        gpu_smoke.calibration(report_with(measured, peak=None), a)


def test_peak_of_a_device_name():
    assert gpu_smoke.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989
    assert gpu_smoke.peak_tflops("NVIDIA H100 PCIe", None) == 756
    assert gpu_smoke.peak_tflops("NVIDIA H200", None) == 989
    assert gpu_smoke.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312
    assert gpu_smoke.peak_tflops("NVIDIA L4", None) is None
    assert gpu_smoke.peak_tflops("NVIDIA L4", 121.0) == 121.0
