"""The gradient-feature cost model (runtime and memory of grad_features jobs) and the token-budget config check."""

import copy
from pathlib import Path

import pytest

from sftlab.config import ConfigError, load, prepare
from sftlab.selection.gradient_cost import (
    BYTES_PER_PARAMETER,
    SAFETY,
    STARTUP_MINUTES,
    example_flops,
    example_seconds,
    grad_features_runtime,
    job_memory_gb,
    job_runtime_minutes,
    model_memory_gb,
)

ROOT = Path(__file__).resolve().parents[1]


def test_example_cost_by_hand():
    # N = 1e9, T = 100, L = 2, d = 10, P = 1000: 4·1e9·100 + 12·2·100²·10 + 8·100·1000 = 4e11 + 2.4e6 + 8e5
    assert example_flops(100, 1e9, 2, 10, 1000) == 4e11 + 2.4e6 + 8e5
    assert example_flops(100, 1e9, 2, 10, 1000, "dense", dim=8) == 4e11 + 2.4e6 + 8e5 + 2 * 1000 * 8
    # 1 TFLOP/s peak at half efficiency: 4.000032e11 / 5e11 s; traffic 48·1000 bytes at 0.5 × 1 GB/s
    seconds = example_seconds(100, 1e9, 2, 10, 1000, gpu_tflops=1, gpu_bandwidth_gbs=1, efficiency=0.5)
    assert seconds == pytest.approx(0.8000064 + BYTES_PER_PARAMETER * 1000 / 5e8)
    # 1000 examples at 0.6 s = 10 minutes, times the safety factor, plus start-up
    assert job_runtime_minutes(1000, 0.6) == STARTUP_MINUTES + round(10 * SAFETY)


def test_job_memory_by_hand():
    # bf16 weights 2·1e9 bytes, adapter + 2 moments + summed gradient 16·1e6; per token 34·100·4 activations,
    # 16·100·4 fp32 adapter inputs, 10·1000 logits bytes
    expected = (2e9 + 16e6 + 50 * (34 * 100 * 4 + 16 * 100 * 4 + 10 * 1000)) / 2**30
    assert job_memory_gb(50, 1e9, 4, 100, 1000, 1e6) == pytest.approx(expected)
    assert job_memory_gb(50, 1e9, 4, 100, 1000, 1e6, dtype_bytes=4) > expected


@pytest.mark.parametrize("name", ["less", "rose", "all"])
def test_paper_configs_fit_an_80_gb_gpu_and_take_runtimes_from_the_cost_model(name):
    config = load(ROOT / "configs" / "paper" / f"{name}.yaml")
    g = config["gradients"]
    cost = g["cost"]
    assert cost["gpu"]["memory_gb"] == 80
    for model in cost["models"]:
        assert model_memory_gb(cost, model, g) < 80
        minutes = grad_features_runtime(cost, g, g["shards"], model, "less_pool")
        assert STARTUP_MINUTES < minutes < 24 * 60  # a job that finishes within a day on one GPU
    with pytest.raises(KeyError, match="gradients.cost.pools: no entry for 'alpaca'"):
        grad_features_runtime(cost, g, g["shards"], next(iter(cost["models"])), "alpaca")


def test_token_budget_must_hold_one_item():
    raw = load_raw(ROOT / "configs" / "tiny.yaml")
    prepare(copy.deepcopy(raw))
    raw["gradients"]["max_tokens"] = 100  # tiny: max_length 64, and rose pairs need 2 × 64
    with pytest.raises(ConfigError, match="gradients.max_tokens: 100 tokens cannot hold one item of a rose pair"):
        prepare(raw)


def load_raw(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
