"""The selection plan (sftlab.plan.selection): warmup, validation sets, gradient features, the selection report's
runs, the references and the selection baselines, against values worked out by hand from configs/tiny.yaml and
configs/paper/less.yaml, rose.yaml.

Where a function asks another domain of the plan (the runs of the experiments, a stage's resources, run
directories), the test gives that answer itself (``plan_with``): the unit under test is this domain's logic."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError

from sftlab.config import prepare, read_yaml
from sftlab.evaluation.exams import run_benchmarks
from sftlab.plan import Plan
from sftlab.plan.selection import selectors_with

ROOT = Path(__file__).resolve().parents[1]
RAW = {name: read_yaml(ROOT / path) for name, path in
       (("tiny", "configs/tiny.yaml"), ("less", "configs/paper/less.yaml"), ("rose", "configs/paper/rose.yaml"))}


def config(name, edit=None):
    raw = copy.deepcopy(RAW[name])
    if edit:
        edit(raw)
    return prepare(raw)


CFG = {name: config(name) for name in RAW}


def plan(name):
    return Plan(CFG[name], root=ROOT)


def plan_with(cfg, **answers):
    """A Plan of ``cfg`` whose look-ups named in ``answers`` (other domains') answer as given: functions are called
    with the plan's arguments, other values are attributes."""
    members = {k: staticmethod(v) if callable(v) else v for k, v in answers.items()}
    return type("AnsweredPlan", (Plan,), members)(cfg, root=ROOT)


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def alternation(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def wc(**values):
    return SimpleNamespace(**values)


TINY = wc(model="tiny", dataset="demo")


# the warmup


def test_warmup_epochs_and_checkpoints():
    assert plan("tiny").warmup_epochs == [1, 2]  # warmup.training.epochs: 2
    assert plan("tiny").warmup_checkpoints(TINY) == ["results/tiny/demo/warmup/checkpoint-1",
                                                     "results/tiny/demo/warmup/checkpoint-2"]
    assert plan("tiny").warmup_trainer_checkpoints(TINY) == "results/tiny/demo/warmup/trainer-checkpoints"
    # LESS's warmup: 4 epochs of its own
    assert plan("less").warmup_checkpoints(wc(model="llama2_7b", dataset="less_pool"))[-1] == \
        "results/llama2_7b/less_pool/warmup/checkpoint-4"


def test_warmup_training_is_the_global_training_under_the_warmups():
    training = plan("tiny").warmup_training()
    # the warmup's own: 2 epochs, a linear schedule with 3% warmup; the global run's: 64 tokens, batches of 8
    assert (training["epochs"], training["scheduler"], training["warmup_ratio"]) == (2, "linear", 0.03)
    assert (training["max_length"], training["batch_size"]) == (64, 8)
    assert plan("tiny").warmup_run.training(TINY) == training
    less = plan("less").warmup_training()
    assert (less["epochs"], less["max_length"], less["gradient_accumulation"]) == (4, 2048, 32)


def test_warmup_ids_are_the_warmup_selections_of_the_pair():
    asked = []
    p = plan_with(CFG["tiny"], warmup_selection=lambda: {"name": "random", "fraction": 0.25, "seed": 0},
                  selection_ids=lambda *args: asked.append(args) or "ids")
    assert p.warmup_ids(TINY) == "ids"
    assert asked == [("tiny", "demo", {"name": "random", "fraction": 0.25, "seed": 0})]


# the validation sets


def test_validation_sets():
    p = plan("tiny")
    target = wc(name="target", dataset="demo")
    assert p.validation_subtasks(target) == ["arithmetic", "count"]
    assert p.validation_seed(target) == 0
    assert p.validation_source(target) == "results/data/demo/pairs.jsonl"
    assert p.validation_path("target") == "results/data/demo/validation/target.jsonl"
    with pytest.raises(WorkflowError, match="validation set target comes from dataset demo, not other"):
        p.validation_source(wc(name="target", dataset="other"))
    less = plan("less")
    assert less.validation_path("bbh") == "results/data/bbh_exemplars/validation/bbh.jsonl"
    assert less.validation_source(wc(name="tydiqa", dataset="tydiqa_train")) == "results/data/tydiqa_train/train.jsonl"
    assert less.validation_subtasks(wc(name="mmlu")) == []


def test_influence_validation_file_of_a_selector_id():
    assert plan("tiny").influence_validation_file(wc(selector="rose-target-2shot")) == \
        "results/data/demo/validation/target.jsonl"
    assert plan("rose").influence_validation_file(wc(selector="less-hh-1shot")) == \
        "results/data/hh_val/validation/hh.jsonl"
    # a baseline's id is no influence selection
    with pytest.raises(WorkflowError, match="no recipe selects with bm25-target-2shot"):
        plan("tiny").influence_selection(wc(selector="bm25-target-2shot"))


# gradient features


def test_gradient_flags():
    assert plan("tiny").gradient_flags() == ["--projection", "sjlt", "--dim", "256", "--seed", "0",
                                             "--max-tokens", "512", "--cache-mb", "1024", "--dtype", "float32",
                                             "--max-length", "64"]
    assert plan("less").gradient_flags() == ["--projection", "sjlt", "--dim", "8192", "--seed", "0",
                                             "--max-tokens", "6144", "--cache-mb", "1024", "--dtype", "bfloat16",
                                             "--max-length", "2048"]
    assert plan("tiny").grad_shards == [0, 1]
    assert len(plan("less").grad_shards) == 8


def test_validation_flags_by_the_selectors_validation_loss():
    assert plan("tiny").validation_flags(wc(selector="less-target-2shot")) == ["--kind", "ntp", "--shots", "2"]
    assert plan("tiny").validation_flags(wc(selector="rose-target-2shot")) == \
        ["--kind", "dpo", "--shots", "2", "--beta", "0.1"]
    assert plan("rose").validation_flags(wc(selector="rose-shp-1shot")) == \
        ["--kind", "dpo", "--shots", "1", "--beta", "0.1"]


def test_grad_features_minutes_from_the_cost_model():
    # 270,000 examples of 400 tokens over 8 shards: 33,750 a job. Llama-2-7B (N = 6,738,415,616, P = 134,217,728):
    # 4·N·400 + 12·32·400²·4096 + 8·400·P = 11,462,619,955,200 flops at 0.35 × 312 TFLOPS, 0.104969 s, plus
    # 48·P bytes at 0.35 × 2039 GB/s, 0.009027 s: 0.113997 s an example; 10 + ceil(1.5 · 33,750 · 0.113997 / 60)
    # = 10 + ceil(96.18) = 107 minutes. Llama-3.1-8B (N = 8,030,261,248, P = 109,051,904): 0.130495 s,
    # 10 + ceil(110.10) = 121.
    assert plan("less").grad_features_minutes(wc(model="llama2_7b", dataset="less_pool")) == 107
    assert plan("rose").grad_features_minutes(wc(model="llama31_8b", dataset="less_pool")) == 121
    with pytest.raises(WorkflowError, match=r"invalid configuration: config key gradients.cost.models: no entry for "
                                            r"'llama2_13b'"):
        plan("less").grad_features_minutes(wc(model="llama2_13b", dataset="less_pool"))


def test_grad_features_resources():
    def res(stage, **kwargs):
        return {"stage": stage, **kwargs}

    assert plan_with(CFG["tiny"], res=res).grad_features_resources() == {"stage": "grads", "model": True}
    p = plan_with(CFG["less"], res=res)
    resources = p.grad_features_resources()
    assert (resources["stage"], resources["model"]) == ("grads", True)
    assert resources["runtime"](wc(model="llama2_7b", dataset="less_pool")) == 107
    # a batch of 6144 tokens of Llama-2-7B in bf16: weights 2·N + 16·P, activations 6144 × (34·4096·32 + 16·4096·32
    # + 10·32000) bytes: 53.9 GiB, over a 50 GB GPU
    small = config("less", lambda raw: raw["gradients"]["cost"]["gpu"].update(memory_gb=50))
    with pytest.raises(WorkflowError, match="gradients.max_tokens: a batch of 6144 tokens of llama2_7b needs about "
                                            "54 GB, over gradients.cost.gpu.memory_gb 50"):
        plan_with(small, res=res).grad_features_resources()


# the selection report


def curve_plan(name):
    cfg = CFG[name]
    return plan_with(cfg, as_json=as_json, experiment_runs=lambda: run_benchmarks(cfg),
                     run_score_files=lambda runs: [f"{r}/{b}" for (m, d, r), benches in runs.items()
                                                   for b in sorted(benches)])


def test_curve_runs_compare_selectors_on_equal_terms():
    p = curve_plan("tiny")
    # the targeted runs (ntp, and rose_sftmix with SFTMix's loss), with the full and random runs of the same loss,
    # composition and training: sft_full (full fine-tuning), minorsft, dtm... differ in one of them
    assert {r for (m, d, r) in p.curve_runs()} == {
        "sft", "sft_random50", "less_25", "less_50", "rose_25", "rose_50", "bm25_25", "dsir_25", "rds_25",
        "rds_plus_25", "rose_sftmix", "sftmix"}
    recipes = p.curve_recipes()
    assert recipes["rose_sftmix"]["group"] == recipes["sftmix"]["group"] != recipes["sft"]["group"]
    assert {k: recipes["rose_sftmix"][k] for k in ("selector", "name", "fraction", "shots", "validation", "objective",
                                                   "selection_model")} == {
        "selector": "rose-target-2shot", "name": "rose", "fraction": 0.5, "shots": 2, "validation": "target",
        "objective": "sftmix", "selection_model": None}
    # sft is scored on every benchmark of the four experiments it is in
    assert [f for f in p.curve_score_files() if f.startswith("sft/")] == [
        f"sft/{b}" for b in sorted(["heldout_em", "mc_demo", "mt_tiny", "ae_tiny", "pref_tiny", "ir_tiny",
                                    "heldout_nll", "exam_nll"])]
    assert json.loads(p.curve_runs_json(None))[0] == ["tiny", "demo", "bm25_25"]


def test_selection_report_outputs():
    p = curve_plan("tiny")
    # fractions 0.25 and 0.5: the curve is drawn
    assert p.selection_report["curve"] == "reports/figures/selection_fraction_curve"
    outputs = p.selection_report_outputs()
    assert len(outputs) == 2 + 3 * 3 and outputs[:2] == ["reports/figures/selection_fraction_curve.png",
                                                         "reports/figures/selection_fraction_curve.pdf"]
    assert set(p.selection_curve_outputs()) == {"curve_png", "curve_pdf"}
    # one fraction only: the tables, no curve
    def one_fraction(raw):
        raw["experiments"] = {"selection": {**raw["experiments"]["selection"], "recipes": ["sft", "less_25"]}}

    cfg = config("tiny", one_fraction)
    one = plan_with(cfg, as_json=as_json, experiment_runs=lambda: run_benchmarks(cfg))
    assert "curve" not in one.selection_report and one.selection_curve_outputs() == {}
    assert one.selection_report_outputs() == [f"reports/tables/selection_{t}.{ext}" for t in ("shots", "cost", "main")
                                              for ext in ("md", "csv", "tex")]
    # no targeted run: no report
    none = plan_with(cfg, as_json=as_json, experiment_runs=lambda: {("tiny", "demo", "sft"): {"heldout_em"}})
    assert none.selection_report_outputs() == []


def test_less_paper_keys_are_the_lm_eval_tasks():
    p = plan_with(CFG["less"], report_benchmarks=lambda: ["mmlu", "tydiqa_ar", "bbh"])
    assert p.less_paper_keys() == {"mmlu": "mmlu", "tydiqa_ar": "tydiqa_goldp_ar", "bbh": "bbh_fewshot"}


# the references


def reference_plan(cfg, runs=None, processes=1):
    return plan_with(cfg, as_json=as_json, processes_of=lambda stage: processes,
                     experiment_runs=(lambda: runs) if runs is not None else (lambda: run_benchmarks(cfg)))


def test_ref_logprobs_max_length():
    assert reference_plan(CFG["tiny"]).ref_logprobs_max_length(TINY) == 64
    # no run on the pair: the global training's
    longer = config("tiny", lambda raw: raw["training"].update(max_length=128))
    assert reference_plan(longer, runs={}).ref_logprobs_max_length(TINY) == 128
    mixed = config("tiny", lambda raw: raw["recipes"]["sft_full"]["training"].update(max_length=32))
    with pytest.raises(WorkflowError, match=r"tiny × demo use training.max_length \[32, 64\]"):
        reference_plan(mixed).ref_logprobs_max_length(TINY)


def test_ref_logprobs_training_is_the_forward_path_of_the_runs_using_the_reference():
    # minorsft, dpo_sft and dtm_minorsft compare with log πref: the global LoRA training (sft_full's full fine-tuning
    # is another path, but it does not use the table)
    assert json.loads(reference_plan(CFG["tiny"]).ref_logprobs_training(TINY)) == {
        "attn_implementation": "sdpa", "distributed": "ddp", "finetuning": "lora", "precision": "auto",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}
    # no run uses it: all the pair's runs; full fine-tuning has no lora settings
    full_only = reference_plan(CFG["tiny"], runs={("tiny", "demo", "sft_full"): {"heldout_em"}})
    assert json.loads(full_only.ref_logprobs_training(TINY)) == {
        "attn_implementation": "sdpa", "distributed": "ddp", "finetuning": "full", "precision": "auto"}
    mixed = config("tiny", lambda raw: raw["recipes"]["minorsft"].update(training={"finetuning": "full"}))
    with pytest.raises(WorkflowError, match="training.finetuning / precision / distributed"):
        reference_plan(mixed).ref_logprobs_training(TINY)
    # the sharding strategy counts only where training runs several processes
    fsdp = config("tiny", lambda raw: raw["recipes"]["minorsft"].update(training={"distributed": "fsdp"}))
    assert json.loads(reference_plan(fsdp).ref_logprobs_training(TINY))["distributed"] == "fsdp"
    with pytest.raises(WorkflowError, match="training.finetuning / precision / distributed"):
        reference_plan(fsdp, processes=2).ref_logprobs_training(TINY)
    assert reference_plan(fsdp, processes=2).ref_logprobs_processes(TINY) == 2


def test_reference_paths():
    p = plan_with(CFG["tiny"], run_dir=lambda m, d, r: f"runs/{m}/{d}/{r}", REFERENCE_CHECKPOINTS=[1, 2],
                  REFERENCE_RUNS={("tiny", "demo"): "sftmix", ("tiny", "demo_long"): "sft"},
                  reference_checkpoints=lambda m, d: [f"{m}/{d}/c1", f"{m}/{d}/c2"], _alternation=alternation)
    assert p.reference_dir(TINY) == "results/tiny/demo/reference"
    assert p.reference_trainer_checkpoints(TINY) == "results/tiny/demo/reference/trainer-checkpoints"
    assert p.reference_checkpoint_dirs(TINY) == ["tiny/demo/c1", "tiny/demo/c2"]
    assert p.reference_checkpoint_args(wc(model="tiny", dataset="demo", recipe="sftmix")) == [
        "--epoch-models", "runs/tiny/demo/sftmix/reference", "--save-epochs", "1", "2"]
    assert [p.reference_run_alternation(i) for i in (0, 1, 2)] == ["tiny", "demo_long|demo", "sftmix|sft"]


# the selection baselines


def test_baselines_are_declared_by_their_selector_classes():
    assert set(selectors_with(features="lexical")) == {"bm25", "dsir"}
    assert set(selectors_with(features="representations")) == {"rds", "rds_plus"}
    p = plan_with(CFG["tiny"], _alternation=alternation)
    lexical = re.compile(p.selector_id_pattern(features="lexical"))
    influence = re.compile(p.selector_id_pattern(influence=True))
    assert lexical.fullmatch("bm25-target-2shot") and lexical.fullmatch("dsir-target-2shot-s0")
    assert not lexical.fullmatch("rds-target-2shot") and not lexical.fullmatch("bm25")
    assert influence.fullmatch("rose-target-2shot") and not influence.fullmatch("rds_plus-target-2shot")


def test_baseline_scoring_inputs():
    p = plan("tiny")
    assert p.baseline_flags(wc(selector="dsir-target-2shot-s0")) == ["--method", "dsir", "--shots", "2",
                                                                     "--min-words", "0"]
    assert p.baseline_validation_file(wc(selector="bm25-target-2shot")) == "results/data/demo/validation/target.jsonl"
    assert p.pool_hidden_states_file(wc(selector="rds-target-2shot", **vars(TINY))) == \
        "results/tiny/demo/hidden_states/last.pt"
    assert p.pool_hidden_states_file(wc(selector="rds_plus-target-2shot", **vars(TINY))) == \
        "results/tiny/demo/hidden_states/weighted_mean.pt"
    with pytest.raises(WorkflowError, match="no recipe selects with less-target-2shot"):
        p.baseline_selection(wc(selector="less-target-2shot"))
    less = plan("less")
    assert less.baseline_flags(wc(selector="bm25-mmlu-5shot")) == ["--method", "bm25", "--shots", "5",
                                                                  "--min-words", "0"]
    assert less.baseline_validation_file(wc(selector="rds-tydiqa-1shot")) == \
        "results/data/tydiqa_train/validation/tydiqa.jsonl"


def test_representation_flags_are_the_gradient_features():
    assert plan("tiny").representation_flags() == ["--max-length", "64", "--max-tokens", "512", "--dtype", "float32"]
    assert plan("less").representation_flags() == ["--max-length", "2048", "--max-tokens", "6144",
                                                   "--dtype", "bfloat16"]


def test_a_new_lexical_baseline_is_scored_by_the_lexical_rule(monkeypatch):
    from sftlab.selection import SELECTORS
    from sftlab.selection.influence import ValidationScoreSelector

    class Tfidf(ValidationScoreSelector):
        name = "tfidf"
        features = "lexical"
        tables = ("tfidf",)

    monkeypatch.setitem(SELECTORS, "tfidf", Tfidf)
    cfg = config("tiny")
    cfg["recipes"]["tfidf_25"] = {"selection": {"name": "tfidf", "validation": "target", "fraction": 0.25, "shots": 2}}
    p = plan_with(cfg, _alternation=alternation)
    assert re.fullmatch(p.selector_id_pattern(features="lexical"), "tfidf-target-2shot")
    assert p.baseline_flags(wc(selector="tfidf-target-2shot")) == ["--method", "tfidf", "--shots", "2",
                                                                   "--min-words", "0"]
