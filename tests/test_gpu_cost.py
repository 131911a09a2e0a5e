"""The predicted GPU cost (sftlab.report.gpu_cost) of a small config worked out by hand."""

from pathlib import Path

import pytest

from sftlab.report.dag import DagJob
from sftlab.report.gpu_cost import (STARTUP_ONLY, CostModel, load_assumptions, rule_hours, stage_hours,
                                    training_flops_per_token, training_mfu)

ROOT = Path(__file__).resolve().parents[1]

# round numbers: 1,000 TFLOP/s; forward passes at 50% MFU = 5e14 FLOP/s; 6 minutes of startup on each GPU. Training
# MFU by layout: anchors a factor 100 apart in tokens, so a micro-batch of 10x the first anchor sits half way (in log)
ASSUMPTIONS = {
    "gpu": {"name": "test", "bf16_dense_tflops": 1000, "bandwidth_gbs": 1000, "mfu": 0.5},
    "startup_minutes": 6,
    "decode_tokens_per_s": {"vllm": 1000, "transformers": 100},
    "batch_efficiency": {"packed": 1.0, "length_grouped": 0.8, "padded": 0.5, "pairs": 0.5},
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


def job(rule, gpus, phase="training", **wildcards):
    return DagJob(rule=rule, wildcards={"model": "m", "dataset": "d", **wildcards}, benchmark=f"benchmarks/{rule}.tsv",
                  phase=phase, outputs=(), temp_outputs=(), gpus=gpus, dependencies=())


def test_gpu_hours_of_a_small_config_by_hand():
    jobs = [job("train", 2, recipe="full_ft"), job("train", 1, recipe="lora_half"),
            job("train_member", 1, recipe="dtm", member="shards/shard-0"),
            job("generate", 1, "evaluation", recipe="full_ft", benchmark="mt"),
            job("evaluate", 1, "evaluation", recipe="full_ft"),
            job("judge", 0, "evaluation", recipe="full_ft", benchmark="mt")]
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
    assert list(hours) == ["training", "evaluation"]  # the phases the rules declare, in report order
    assert hours["training"] == pytest.approx((full_ft + lora_half + member) / 3600, rel=1e-9)
    assert hours["evaluation"] == pytest.approx((generation + evaluation) / 3600, rel=1e-9)
    by_rule = rule_hours(jobs, CONFIG, ASSUMPTIONS)
    assert list(by_rule) == ["train", "train_member", "generate", "evaluate"]  # judge: an API, no GPU
    assert by_rule["generate"] == pytest.approx(generation / 3600, rel=1e-9)


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
    # the selections' settings come from the recipes (the selector wildcard is their id), not from parsing the id
    config = {**CONFIG, "validation": {"v": {"dataset": "d", "shots": 5, "subtasks": ["a", "b"]}},
              "recipes": {**CONFIG["recipes"],
                          "plus": {"selection": {"name": "rds_plus", "validation": "v", "shots": 2, "fraction": 0.05}},
                          "rds": {"selection": {"name": "rds", "validation": "v", "fraction": 0.05}}}}
    prep = "method preparation"
    hours = stage_hours([job("pool_hidden_states", 1, prep, pooling="weighted_mean"),
                         job("representation_scores", 1, prep, selector="rds_plus-v-2shot"),
                         job("representation_scores", 1, prep, selector="rds-v")], config, ASSUMPTIONS)
    # the pool: 100,000 × 1,000 tokens × 2e9 = 2e17 / 5e14 = 400 s, + 360; the validation items: 2 shots × 2
    # subtasks × 1,000 × 2e9 / 5e14 = 0.016 s, + 360; the set's 5 shots × 2 subtasks: 0.04 s, + 360
    assert list(hours) == [prep]
    assert hours[prep] == pytest.approx((400 + 0.016 + 0.04 + 3 * 360) / 3600, rel=1e-9)
    with pytest.raises(KeyError, match="no recipe's selection has the id 'rds-w'"):
        stage_hours([job("representation_scores", 1, prep, selector="rds-w")], config, ASSUMPTIONS)


def test_log_likelihood_is_one_forward_pass_of_the_items():
    config = {**CONFIG, "benchmarks": {"nll": {"type": "nll", "items": "heldout"},
                                       "exam": {"type": "nll", "items": "exam"}}}
    a = {**ASSUMPTIONS, "benchmarks": {**ASSUMPTIONS["benchmarks"], "nll": {"exam_tokens": 5e5}}}
    hours = rule_hours([job("log_likelihood", 1, "evaluation", recipe="full_ft", benchmark="nll"),
                        job("base_log_likelihood", 1, "evaluation", benchmark="exam")], config, a)
    # 10 held-out examples × 1,000 tokens × 2e9 / 5e14 = 0.04 s; the exam's 5e5 tokens: 2 s; each + 360
    assert hours == {"log_likelihood": pytest.approx(360.04 / 3600), "base_log_likelihood": pytest.approx(362 / 3600)}


def test_a_gpu_job_without_a_price_or_a_phase_fails_loudly():
    with pytest.raises(KeyError, match="no price for rule 'new_gpu_rule'"):
        stage_hours([job("new_gpu_rule", 1, recipe="full_ft")], CONFIG, ASSUMPTIONS)
    with pytest.raises(ValueError, match="rule train runs on a GPU but its benchmark file carries no cost phase"):
        stage_hours([job("train", 1, None, recipe="full_ft")], CONFIG, ASSUMPTIONS)
    assert stage_hours([job("new_cpu_rule", 0, None)], CONFIG, ASSUMPTIONS) == {}


def test_every_gpu_rule_of_the_tiny_dag_is_priced(tmp_path):
    """Every job the tiny config plans with a GPU for each stage is priced: at least its startup, and more where it
    does work (a rule missing from a hand-kept list used to be priced at 0: log_likelihood, base_log_likelihood)."""
    from sftlab.config import prepare, read_yaml
    from sftlab.report.dag import workflow_jobs

    tiny = ROOT / "configs" / "tiny.yaml"
    # one GPU for each stage all.yaml gives GPUs to
    paper = read_yaml(ROOT / "configs" / "paper" / "all.yaml")["resources"]
    gpus = {stage: {"cpus": 1, "gpus": 1, "mem_mb": 2000, "runtime": 10} for stage, r in paper.items() if r.get("gpus")}
    jobs = workflow_jobs(ROOT / "Snakefile", [str(tiny)], {"resources": gpus}, tmp_path)
    config = prepare({**read_yaml(tiny), "resources": gpus})
    config["gradients"]["cost"] = {"models": {"tiny": {"lora_params": 1e5}}}
    # round numbers for the tiny model and pool (gpu_cost.yaml prices the paper configs' hub models and pools)
    a = {**load_assumptions(), "models": {"tiny": {"params": 1e9, "layers": 2, "hidden_size": 128}},
         "pools": {"demo": {"examples": 1000, "mean_tokens": 100}}}
    work = {"prompts": 10, "answer_tokens": 10, "forward_tokens": 1e5}
    for key, bench in config["benchmarks"].items():  # the tiny config's own benchmark types and tasks
        if bench["type"] == "lm_eval":
            a["benchmarks"]["lm_eval"][key] = work
        else:
            a["benchmarks"].setdefault(bench["type"], work)
        if "dataset" in bench:
            a["benchmarks"]["test_sets"][config["datasets"][bench["dataset"]].get("path", bench["dataset"])] = 10
    model = CostModel(config, a)
    gpu_rules = {j.rule for j in jobs if j.gpus}
    assert {"train", "train_member", "log_likelihood", "base_log_likelihood", "warmup", "grad_features",
            "confidence", "pool_hidden_states", "evaluate"} <= gpu_rules
    startup = 60 * model.a["startup_minutes"]
    for j in (j for j in jobs if j.gpus):
        seconds = model.job_seconds(j.rule, j.wildcards, j.gpus)
        assert seconds > startup or (j.rule in STARTUP_ONLY and seconds == startup), (j.rule, j.wildcards, seconds)
    assert set(stage_hours(jobs, config, model.a)) <= {"setup", "method preparation", "training", "evaluation",
                                                       "figures"}
