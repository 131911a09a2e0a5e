"""Multi-process training: two processes (DDP over gloo on the CPU) give the run of one process, and only process 0
writes. Also the launcher's command, the shipped accelerate configs, and the workflow's use of them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _train_cli import ROOT, TRAINING, env, make_inputs, read_log, run, train_command, weights
from sftlab.training.launch import CONFIG_DIR, launch_prefix

EPOCH_MODELS = ("--save-epochs", "1", "2")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    # 24 examples at a global batch of 4 × 2 = 8: three optimiser steps an epoch, no partial batch
    return make_inputs(tmp_path_factory.mktemp("inputs"), per_family=4)


@pytest.fixture(scope="module")
def one_and_two(inputs, tmp_path_factory):
    """The same global batch of 8: one process accumulating two micro-batches of 4, or two processes with 4 each."""
    runs = {}
    for n in (1, 2):
        out = tmp_path_factory.mktemp(f"processes{n}")
        training = {**TRAINING, "batch_size": 4, "gradient_accumulation": 2 // n}
        proc = run(train_command(launch_prefix(n, "ddp", CONFIG_DIR, sys.executable), inputs, out, training,
                                 "--epoch-models", str(out / "epochs"), *EPOCH_MODELS))
        runs[n] = (out, proc.stderr)
    return runs


def test_two_processes_give_the_loss_curve_of_one(one_and_two):
    (one, _), (two, _) = one_and_two[1], one_and_two[2]
    log1, log2 = read_log(one / "train_log.csv"), read_log(two / "train_log.csv")
    assert sorted(log1) == sorted(log2) == list(range(7))  # step 0 (evaluation) and 2 epochs × 3 steps
    for step in range(1, 7):
        for column in ("loss", "grad_norm", "learning_rate"):
            assert float(log2[step][column]) == pytest.approx(float(log1[step][column]), rel=1e-5), (step, column)
    for step in (0, 2, 4, 6):
        assert float(log2[step]["eval_loss"]) == pytest.approx(float(log1[step]["eval_loss"]), rel=1e-5)
    # the run learned something: not two equally broken runs
    assert float(log1[6]["eval_loss"]) < float(log1[0]["eval_loss"]) - 0.1
    # linear decay from 1e-3 over 6 steps, logged after each step
    assert [float(log1[s]["learning_rate"]) for s in range(1, 7)] == pytest.approx([1e-3 * (6 - k) / 6 for k in range(6)])


def test_two_processes_give_the_weights_of_one(one_and_two):
    (one, _), (two, _) = one_and_two[1], one_and_two[2]
    for model in ("model", "epochs/checkpoint-1", "epochs/checkpoint-2"):
        w1, w2 = weights(one / model), weights(two / model)
        assert w1.keys() == w2.keys()
        for key in w1:
            torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=f"{model}: {key}")


def test_only_process_zero_writes(one_and_two):
    for n, (out, stderr) in one_and_two.items():
        # one log line for the run, one per held-out evaluation: not one per process
        assert stderr.count("training on 24 examples") == 1, stderr[-3000:]
        assert f"{n} process(es) on device cpu; global batch 8, 3 steps per epoch" in stderr
        assert stderr.count("'eval_loss'") == 4
        assert sorted(p.name for p in (out / "epochs").iterdir()) == ["checkpoint-1", "checkpoint-2"]
        assert not (out / "checkpoints").exists()  # removed once the run is complete
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no atomic-write leftovers


def test_launch_prefix():
    assert launch_prefix(1) == ["python"]
    words = launch_prefix(4, "fsdp", Path("/cfg"))
    assert words[:3] == ["python", "-m", "accelerate.commands.launch"]
    assert words[words.index("--config_file") + 1] == "/cfg/fsdp.yaml"
    assert words[words.index("--num_processes") + 1] == "4"
    assert words[words.index("--main_process_port") + 1] == "0"  # a free port: jobs may share a node
    with pytest.raises(ValueError, match="not one of"):
        launch_prefix(2, "horovod")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_missing_is_a_clear_error():
    assert launch_prefix(1, "deepspeed") == ["python"]  # one process: nothing to shard, nothing needed
    with pytest.raises(ModuleNotFoundError, match="deepspeed package is not installed"):
        launch_prefix(2, "deepspeed")


def test_accelerate_configs_load():
    """Each shipped config is one accelerate itself reads, with the sharding the docs promise."""
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}
    for mode, kind in expected.items():
        cfg = load_config_from_file(str(CONFIG_DIR / f"{mode}.yaml"))
        assert cfg.distributed_type.value == kind and cfg.num_machines == 1 and cfg.main_process_port == 0
        assert cfg.mixed_precision == "no"  # training.precision decides
    fsdp = load_config_from_file(str(CONFIG_DIR / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    zero = yaml.safe_load((CONFIG_DIR / "zero3.json").read_text())["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True


# --- the workflow: which command a job gets ---------------------------------------------------------------------

TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def dry_run(tmp_path, cfg, *args) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--cores", "2",
                           "--directory", str(tmp_path), "--configfile", str(path), *args],
                          capture_output=True, text=True, env=env(), timeout=300)


def test_workflow_launches_one_process_per_gpu(tmp_path):
    cfg = {**TINY, "resources": {**TINY["resources"], "train": {"cpus": 4, "gpus": 2, "mem_mb": 4000},
                                 "reference": {"cpus": 1, "gpus": 0, "processes": 2}}}
    proc = dry_run(tmp_path, cfg, "-p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the LESS/ROSE warmup is its own stage (resources.warmup): one process here
    commands = [line.removeprefix("Shell command: ") for line in proc.stdout.splitlines()
                if "scripts/train.py" in line and "--model-dir" in line and "--warmup-dir" not in line]
    recipes = [TINY["recipes"][r] for r in dict.fromkeys(r for e in TINY["experiments"].values() for r in e["recipes"])]
    # composed recipes that differ only in how they merge (the merge-method ablation) share their member runs
    member_sets = {json.dumps({**{k: v for k, v in r.items() if k != "description"},
                               "composition": {k: v for k, v in r["composition"].items() if k != "merge"}},
                              sort_keys=True): r for r in recipes if "composition" in r}
    runs = sum(1 for r in recipes if "composition" not in r or r["composition"]["name"] == "single")
    runs += sum(r["composition"]["k"] if r["composition"]["name"] == "disperse_merge" else len(r["composition"]["seeds"])
                for r in member_sets.values() if r["composition"]["name"] != "single")
    assert len(commands) == runs + 1  # every single run, every DTM / soup member and the reference run
    for command in commands:
        assert command.startswith(f"python -m accelerate.commands.launch --config_file {CONFIG_DIR}/ddp.yaml "
                                  "--num_processes 2 --num_machines 1 --main_process_port 0 "), command[:300]
    # other rules stay single-process python
    assert any(line.startswith("Shell command: python ") and "scripts/ref_logprobs.py" in line
               for line in proc.stdout.splitlines())


@pytest.mark.parametrize("change, message", [
    ({"resources": {"train": {"gpus": 2}}, "training": {"distributed": "fsdp"}},
     "distributed: fsdp shards full fine-tuning; LoRA runs use ddp"),
    ({"resources": {"select": {"gpus": 1}}}, "resources.select.gpus: the select rules run on CPU"),
    ({"resources": {"train": {"gpus": 2, "processes": 3}}}, "resources.train.processes: 3 processes on 2 GPUs"),
])
def test_workflow_rejects_launches_it_cannot_run(tmp_path, change, message):
    cfg = {**TINY, "resources": {**TINY["resources"], **change.get("resources", {})},
           "training": {**TINY["training"], **change.get("training", {})}}
    proc = dry_run(tmp_path, cfg)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
