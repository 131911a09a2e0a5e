"""Work the paper configs would do twice, done once: SFTMix's reference run on Alpaca-52K is the NTP recipe's run
(same model, pool, objective, settings, epochs and processes), so one training job makes both."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml

from _plan import ROOT, dry_run_jobs, plan, planned
from sftlab.config import prepare, read_yaml
from sftlab.training.spec import reference_runs

SFTMIX = ROOT / "configs" / "paper" / "sftmix.yaml"
PAIRS = [("llama31_8b", "alpaca52k"), ("llama31_8b", "ultrachat200k")]
PROCESSES = {"reference": 8, "train": 8}


def runs(cfg):
    return [(m, d, r) for exp in cfg["experiments"].values() for m in exp["models"] for d in exp["datasets"]
            for r in exp["recipes"]]


def shared(raw, processes=PROCESSES):
    cfg = prepare(raw)
    return reference_runs(cfg, PAIRS, runs(cfg), processes)


def test_the_reference_run_is_the_ntp_run_of_equal_settings_and_epochs():
    # Alpaca-52K: ntp_3ep trains 3 epochs of NTP on the full pool with the global settings, as the reference run
    # (checkpoints 1, 2, 3); UltraChat-200K's ntp_1ep trains 1 epoch, so its pair keeps a reference run of its own
    assert shared(read_yaml(SFTMIX)) == {("llama31_8b", "alpaca52k"): "ntp_3ep"}


@pytest.mark.parametrize("change", [
    lambda raw: raw["reference"].update(training={"learning_rate": 1e-5}),   # other settings
    lambda raw: raw["reference"].update(training={"seed": 1}),               # another seed
    lambda raw: raw["reference"].update(checkpoints=[1, 2]),                 # 2 epochs, not 3
    lambda raw: raw["recipes"]["ntp_3ep"].update(selection={"name": "random", "fraction": 0.5, "seed": 0}),
    lambda raw: raw["recipes"]["ntp_3ep"].update(objective={"name": "minorsft"}),
    # another model: Mistral's config, not Llama's, whatever the reference's name for it
    lambda raw: raw["reference"].update(model="mistral_7b"),
])
def test_any_difference_in_the_resolved_training_keeps_them_apart(change):
    raw = copy.deepcopy(read_yaml(SFTMIX))
    change(raw)
    assert shared(raw) == {}


def test_a_model_of_another_name_but_the_same_config_is_the_same_training():
    raw = copy.deepcopy(read_yaml(SFTMIX))
    raw["models"]["llama_again"] = dict(raw["models"]["llama31_8b"])
    raw["reference"]["model"] = "llama_again"
    assert shared(raw) == {("llama31_8b", "alpaca52k"): "ntp_3ep"}


def test_another_process_count_is_another_global_batch():
    assert shared(read_yaml(SFTMIX), {"reference": 4, "train": 8}) == {}


def ntp_trainings(output, dataset):
    """Per model, the planned jobs training 3 epochs of NTP on the whole pool of ``dataset``: (rule, outputs)."""
    found = {}
    for job in dry_run_jobs(output):
        if not job["shell"] or "scripts/train.py" not in job["shell"]:
            continue
        args = shlex.split(job["shell"].split(" 2> ")[0])
        value = dict(zip(args, args[1:]))
        if (value["--train"] == f"results/data/{dataset}/train.jsonl" and value["--ids"].endswith("/selection/full/1.ids")
                and json.loads(value["--objective"]) == {"name": "ntp"}
                and json.loads(value["--training"])["epochs"] == 3):
            found.setdefault(value["--model-dir"], []).append((job["rule"], job["output"]))
    return found


def test_the_sftmix_plan_trains_alpacas_3_epochs_of_ntp_once_per_model():
    proc = planned(SFTMIX)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    trainings = ntp_trainings(output, "alpaca52k")
    assert sorted(trainings) == ["resources/models/llama31_8b", "resources/models/mistral_7b"]
    confidence = {job["wildcards"]["model"]: job["input"] for job in dry_run_jobs(output)
                  if job["rule"] == "confidence" and job["wildcards"]["dataset"] == "alpaca52k"}
    for model_dir, jobs in trainings.items():
        model = Path(model_dir).name
        assert len(jobs) == 1, jobs
        rule, outputs = jobs[0]
        run = f"results/{model}/alpaca52k/runs/ntp_3ep"
        assert rule == "train_reference" and f"{run}/model" in outputs
        # its epoch models are the checkpoints the confidence split reads
        checkpoints = [f"{run}/reference/checkpoint-{c}" for c in (1, 2, 3)]
        assert set(checkpoints) <= set(outputs) and set(checkpoints) <= set(confidence[model])


def test_a_reference_run_with_other_settings_is_trained_on_its_own(tmp_path):
    raw = yaml.safe_load(SFTMIX.read_text())
    raw["reference"]["training"] = {"learning_rate": 1.0e-5}
    config = tmp_path / "sftmix_other_reference.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = plan(config, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    trainings = ntp_trainings(output, "alpaca52k")
    assert {m: sorted(rule for rule, _ in jobs) for m, jobs in trainings.items()} == {
        f"resources/models/{m}": ["reference_run", "train"] for m in ("llama31_8b", "mistral_7b")}
    assert "train_reference" not in {job["rule"] for job in dry_run_jobs(output)}


def test_the_rehearsal_keeps_the_recipe_run_that_is_the_reference_run():
    """The rehearsal caps epochs at 1 but trains the reference for its 2 checkpoints: a recipe that trains as many
    epochs as the paper's reference trains as many as the rehearsal's, so the plan keeps the same rules."""
    from sftlab import rehearsal

    cfg = prepare(rehearsal.apply({**read_yaml(SFTMIX), "rehearsal": True}))
    assert cfg["recipes"]["ntp_3ep"]["training"]["epochs"] == 2 and cfg["recipes"]["ntp_1ep"]["training"]["epochs"] == 1
    assert reference_runs(cfg, PAIRS, runs(cfg), {"reference": 2, "train": 2}) == {("llama31_8b", "alpaca52k"): "ntp_3ep"}
