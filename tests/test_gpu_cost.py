"""The predicted GPU cost (sftlab.report.gpu_cost) of a small config worked out by hand."""

import pytest

from sftlab.report.gpu_cost import load_assumptions, stage_hours, training_flops_per_token, training_mfu

# round numbers: 1,000 TFLOP/s; forward passes at 50% MFU = 5e14 FLOP/s; 6 minutes of startup on each GPU. Training
# MFU by layout: anchors a factor 100 apart in tokens, so a micro-batch of 10x the first anchor sits half way (in log)
ASSUMPTIONS = {
    "gpu": {"name": "test", "bf16_dense_tflops": 1000, "bandwidth_gbs": 1000, "mfu": 0.5},
    "startup_minutes": 6,
    "decode_tokens_per_s": {"vllm": 1000, "transformers": 100},
    "batch_efficiency": {"packed": 1.0, "length_grouped": 0.8, "padded": 0.5, "sftmix_pairs": 0.5},
    "training_mfu": {"full": {1000: 0.2, 100_000: 0.6}, "lora": {1250: 0.1, 125_000: 0.5},
                     "distributed": {"ddp": 1.0, "fsdp": 0.8}},
    "models": {"org/m": {"params": 1e9, "layers": 2, "hidden_size": 1000}},
    "pools": {"org/pool": {"examples": 100_000, "mean_tokens": 1000}},
    "benchmarks": {"mtbench": {"prompts": 100, "answer_tokens": 50}, "lm_eval": {"mmlu": {"forward_tokens": 1e6},
                                                                                   "arc": {"forward_tokens": 3e6}}},
}
LORA = {"finetuning": "lora", "epochs": 1, "batch_size": 1, "gradient_accumulation": 10}
CONFIG = {
    "models": {"m": {"repo_id": "org/m"}},
    "datasets": {"d": {"path": "org/pool", "heldout": 10}},
    "training": {},
    "recipes": {
        "full_ft": {"training": {"finetuning": "full", "epochs": 2, "batch_size": 8, "gradient_accumulation": 2,
                                 "eval_steps": 50, "gradient_checkpointing": True, "distributed": "fsdp"}},
        "lora_half": {"selection": {"name": "random", "fraction": 0.5}, "training": LORA},
        "dtm": {"composition": {"name": "disperse_merge", "k": 4}, "training": LORA},
    },
    "benchmarks": {"mt": {"type": "mtbench", "backend": "vllm"}, "mmlu": {"type": "lm_eval"},
                   "arc": {"type": "lm_eval"}},
    "experiments": {"main": {"models": ["m"], "datasets": ["d"], "recipes": ["full_ft"],
                             "benchmarks": ["mt", "mmlu", "arc"]}},
}


def job(rule, gpus, **wildcards):
    return {"rule": rule, "wildcards": {"model": "m", "dataset": "d", **wildcards},
            "resources": {"gpu": str(gpus)} if gpus else {}}


def test_gpu_hours_of_a_small_config_by_hand():
    jobs = [job("train", 2, recipe="full_ft"), job("train", 1, recipe="lora_half"),
            job("train_member", 1, recipe="dtm", member="shards/shard-0"),
            job("generate", 1, recipe="full_ft", benchmark="mt"), job("evaluate", 1, recipe="full_ft"),
            job("judge", 0, recipe="full_ft", benchmark="mt")]
    # full_ft on 2 GPUs, FSDP, gradient checkpointing: a micro-batch of 8 × 1,000 / 0.8 (length-grouped) = 10,000
    # computed tokens, half way between the anchors in log: MFU 0.4, × 6/8 (checkpointing) × 0.8 (fsdp) = 0.24.
    # 100,000 × 2 epochs × 1,000 / 0.8 = 2.5e8 tokens × 6e9 = 1.5e18 FLOPs / (1e15 × 0.24) = 6,250 s;
    # 200,000 examples / global batch 32 = 6,250 steps, 1 + 6,250 // 50 = 126 held-out passes × 10 × 1,000 × 2e9
    # = 2.52e15 at the forward MFU 0.5: 5.04 s; + 6 min × 2 GPUs
    full_ft = 6250 + 5.04 + 720
    # lora_half, one GPU: a micro-batch of 1 × 1,000 / 0.8 = 1,250 tokens, the first anchor: MFU 0.1, no
    # checkpointing. 50,000 × 1,000 / 0.8 = 6.25e7 tokens × 4e9 = 2.5e17 / 1e14 = 2,500 s; one held-out pass 2e13 /
    # 5e14 = 0.04 s; + 360
    lora_half = 2500.04 + 360
    # a disperse member: a quarter of the pool, 25,000 × 1,000 / 0.8 × 4e9 = 1.25e17 / 1e14 = 1,250 s, + 0.04 + 360
    member = 1250.04 + 360
    generation = 100 * 50 / 1000 + 360          # 100 answers × 50 tokens at 1,000 tokens/s (vLLM)
    # both exams of the run in one job: 1e6 + 3e6 forward tokens × 2·N at the forward MFU, one startup
    evaluation = 2e9 * 4e6 / 5e14 + 360
    hours = stage_hours(jobs, CONFIG, ASSUMPTIONS)
    assert list(hours) == ["training", "generation", "evaluation"]
    assert hours["training"] == pytest.approx((full_ft + lora_half + member) / 3600, rel=1e-9)
    assert hours["generation"] == pytest.approx(generation / 3600, rel=1e-9)
    assert hours["evaluation"] == pytest.approx(evaluation / 3600, rel=1e-9)


def test_training_mfu_of_a_layout():
    table = ASSUMPTIONS["training_mfu"]
    assert training_mfu(table, "full", 500) == 0.2                    # flat below the first anchor
    assert training_mfu(table, "full", 1e6) == 0.6                    # and above the last
    assert training_mfu(table, "full", 10_000) == pytest.approx(0.4)  # log-linear between them
    assert training_mfu(table, "lora", 12_500, gradient_checkpointing=True) == pytest.approx(0.3 * 4 / 6)
    assert training_mfu(table, "full", 10_000, distributed="fsdp") == pytest.approx(0.32)
    with pytest.raises(KeyError, match="training_mfu.distributed: no factor for 'deepspeed'"):
        training_mfu(table, "full", 10_000, distributed="deepspeed")


def test_training_flops_and_clear_errors():
    assert training_flops_per_token(1e9, "full") == 6e9
    assert training_flops_per_token(1e9, "lora") == 4e9
    with pytest.raises(KeyError, match="gpu_cost.yaml models: no entry for 'org/other'"):
        stage_hours([job("train", 1, recipe="full_ft")], {**CONFIG, "models": {"m": {"repo_id": "org/other"}}},
                    ASSUMPTIONS)


def test_the_shipped_assumptions_price_every_paper_model_and_pool():
    """Each paper config's hub models and training pools have an entry (a new one fails here, not in the bench)."""
    from pathlib import Path

    import yaml

    a = load_assumptions()
    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/paper/*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        for name, model in cfg["models"].items():
            assert model["repo_id"] in a["models"], (path.name, name)
        for exp in cfg["experiments"].values():
            for dataset in exp["datasets"]:
                assert cfg["datasets"][dataset]["path"] in a["pools"], (path.name, dataset)


def test_rds_hidden_state_features_are_one_forward_pass_of_the_pool_and_the_validation_items():
    config = {**CONFIG, "validation": {"v": {"dataset": "d", "shots": 5, "subtasks": ["a", "b"]}}}
    hours = stage_hours([job("pool_hidden_states", 1, pooling="weighted_mean"),
                         job("representation_scores", 1, selector="rds_plus-v-2shot"),
                         job("representation_scores", 1, selector="rds-v")], config, ASSUMPTIONS)
    # the pool: 100,000 × 1,000 tokens × 2e9 = 2e17 / 5e14 = 400 s, + 360; the validation items: 2 shots × 2
    # subtasks × 1,000 × 2e9 / 5e14 = 0.016 s, + 360; the set's 5 shots × 2 subtasks: 0.04 s, + 360
    assert list(hours) == ["hidden-state features"]
    assert hours["hidden-state features"] == pytest.approx((400 + 0.016 + 0.04 + 3 * 360) / 3600, rel=1e-9)
