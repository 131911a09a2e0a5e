"""configs/paper/all.yaml: every paper's tables in one DAG, with what the papers share planned once.

Two views of it. The dry run (`snakemake -n -p --profile profiles/slurm`, offline, parsed job by job): no output file
is planned by two jobs, and the shared stages run once per thing they depend on — a materialised model per base
model, a normalised dataset per dataset, a ref_logprobs table per model × dataset with runs, a reference run per
model × dataset with a confidence-based recipe, a LESS/ROSE warmup per model × pool. The expected sets are worked out
here from the config, not taken from the workflow's own functions. The config (`sftlab.config.load`): every training
run of every single-paper config is a run of all.yaml, with its benchmarks, compared by what decides the run
(model, data, selection, objective, composition, training, and the reference / warmup it reads), and all.yaml
has no run beyond them but the three combined recipes.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from _plan import PAPER_CONFIGS, ROOT, dry_run_jobs, planned
from sftlab.config import deep_merge, load, resources

ALL = ROOT / "configs" / "paper" / "all.yaml"
SINGLE_PAPERS = [p for p in PAPER_CONFIGS if p.name != ALL.name]
COMBINED = {"rose_sftmix", "dtm_minorsft", "sftmix_ambiguous"}


@pytest.fixture(scope="module")
def cfg():
    return load(ALL)


@pytest.fixture(scope="module")
def jobs():
    proc = planned(ALL)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return dry_run_jobs(proc.stdout + proc.stderr)


def runs_of(cfg: dict) -> dict[tuple[str, str, str], set[str]]:
    """(model, dataset, recipe) → benchmarks, over every experiment."""
    runs: dict[tuple[str, str, str], set[str]] = {}
    for exp in cfg["experiments"].values():
        for m in exp["models"]:
            for d in exp["datasets"]:
                for r in exp["recipes"]:
                    runs.setdefault((m, d, r), set()).update(exp["benchmarks"])
    return runs


def uses_confidence(recipe: dict) -> bool:
    sftmix_pairs = recipe["objective"]["name"] == "sftmix" and recipe["objective"]["pairing"] == "confidence"
    return sftmix_pairs or recipe["selection"]["name"] in ("confident", "unconfident", "ambiguous")


def uses_influence(recipe: dict) -> bool:
    return recipe["selection"]["name"] in ("less", "rose")


def pairs_where(cfg: dict, predicate) -> set[tuple[str, str]]:
    return {(m, d) for (m, d, r) in runs_of(cfg) if predicate(cfg["recipes"][r])}


def selecting_pairs_where(cfg: dict, predicate) -> set[tuple[str, str]]:
    """(the model that selects, dataset): `selection.model` where a recipe names one (LESS-T), else the run's model."""
    return {(cfg["recipes"][r]["selection"].get("model", m), d) for (m, d, r) in runs_of(cfg)
            if predicate(cfg["recipes"][r])}


def planned_once(jobs: list[dict], rule: str, *keys: str) -> list[tuple[str, ...]]:
    """The wildcard values of a rule's jobs, after checking that none is planned twice."""
    values = [tuple(job["wildcards"][k] for k in keys) for job in jobs if job["rule"] == rule]
    assert [v for v, n in Counter(values).items() if n > 1] == [], rule
    return values


# ---------------------------------------------------------------- the dry run


def test_no_output_is_planned_by_two_jobs(jobs):
    outputs = Counter(path for job in jobs for path in job["output"])
    assert len(jobs) > 1000 and len(outputs) > len(jobs)
    assert [path for path, n in outputs.items() if n > 1] == []


def test_one_materialised_model_per_base_model(cfg, jobs):
    # a hub id under two names is downloaded twice: only a second prompt format (DTM's Llama-2, SFTMix's Llama-3.1)
    # gives it a second name
    hub_ids = [(m["repo_id"], m["revision"]) for m in cfg["models"].values()]
    formatted = [(m["repo_id"], m["revision"], m["prompt_format"]) for m in cfg["models"].values()]
    assert len(set(formatted)) == len(formatted) == 8 and len(set(hub_ids)) == 5
    used = {m for (m, _d, _r) in runs_of(cfg)}
    assert sorted(planned_once(jobs, "materialise_model", "model")) == sorted((m,) for m in used)
    assert used == set(cfg["models"])


def test_one_normalised_dataset_per_dataset(cfg, jobs):
    settings = [json.dumps({k: v for k, v in d.items() if k != "description"}, sort_keys=True)
                for d in cfg["datasets"].values()]
    assert len(set(settings)) == len(settings) == 15
    used = ({d for (_m, d, _r) in runs_of(cfg)} | {v["dataset"] for v in cfg["validation"].values()}
            | {b["dataset"] for b in cfg["benchmarks"].values() if "dataset" in b})
    assert sorted(planned_once(jobs, "prepare_data", "dataset")) == sorted((d,) for d in used)
    assert used == set(cfg["datasets"])


def test_one_ref_logprobs_table_per_model_and_dataset(cfg, jobs):
    """Every run reads its pair's table (MinorSFT / DPO-SFT weights, the held-out deviation): one per pair with runs,
    MinorSFT's and ROSE's pairs among them."""
    pairs = set(planned_once(jobs, "ref_logprobs", "model", "dataset"))
    assert pairs == {(m, d) for (m, d, _r) in runs_of(cfg)} and len(pairs) == 11
    assert pairs_where(cfg, lambda r: r["objective"]["name"] in ("minorsft", "dpo_sft")) == {
        ("qwen2_7b_instruct", "financeiq"), ("qwen2_7b_instruct", "fineval"), ("llama2_7b_alpaca", "tulu2")}
    assert pairs_where(cfg, lambda r: r["selection"]["name"] == "rose") == {
        ("llama2_7b", "less_pool"), ("llama31_8b", "less_pool")}


def test_one_warmup_per_model_and_pool(cfg, jobs):
    pairs = set(planned_once(jobs, "warmup", "model", "dataset"))
    assert pairs == selecting_pairs_where(cfg, uses_influence) == {("llama2_7b", "less_pool"), ("llama31_8b", "less_pool")}
    # LESS and ROSE share llama2's warmup and its gradient features: 8 shards × 4 checkpoints per model
    assert len(planned_once(jobs, "grad_features", "model", "dataset", "c", "shard")) == 2 * 4 * 8


def test_less_t_runs_train_on_llama2_7bs_own_less_selections(cfg, jobs):
    """LESS-T: Llama-2-13B and Mistral-7B train on the ids Llama-2-7B's LESS runs train on; no selection of theirs."""
    trains = {(j["wildcards"]["model"], j["wildcards"]["recipe"]): j["input"] for j in jobs if j["rule"] == "train"}
    for target in ("mmlu", "tydiqa", "bbh"):
        shots = cfg["validation"][target]["shots"]
        ids = f"results/llama2_7b/less_pool/selection/less-{target}-{shots}shot/0.05.ids"
        assert ids in trains[("llama2_7b", f"less_{target}_frac0.05")]
        for model in ("llama2_13b", "mistral_7b_tulu"):
            assert ids in trains[(model, f"less_{target}_t")]
    selecting = {j["wildcards"]["model"] for j in jobs if j["rule"] == "select_data"
                 and not j["wildcards"]["selector"].startswith("random")}
    assert not selecting & {"llama2_13b", "mistral_7b_tulu"}


def test_one_reference_run_per_model_and_dataset(cfg, jobs):
    """A reference run of its own, or a recipe's run of the same training that saves the reference checkpoints too
    (SFTMix's NTP runs on Alpaca-52K: tests/test_shared_runs.py)."""
    shared = set(planned_once(jobs, "train_reference", "model", "dataset"))
    assert shared == {("llama31_8b_llama3", "alpaca52k"), ("mistral_7b", "alpaca52k")}
    pairs = set(planned_once(jobs, "reference_run", "model", "dataset"))
    assert not pairs & shared
    pairs |= shared
    assert pairs == pairs_where(cfg, uses_confidence)
    assert pairs == {("llama31_8b_llama3", "alpaca52k"), ("llama31_8b_llama3", "ultrachat200k"),
                     ("mistral_7b", "alpaca52k"), ("mistral_7b", "ultrachat200k"), ("llama31_8b", "less_pool")}


def test_the_combined_recipes_reach_the_main_table(cfg, jobs):
    (report,) = [job for job in jobs if job["rule"] == "build_report"]
    for (m, d, r), benchmarks in runs_of(cfg).items():
        if r in COMBINED:
            assert {f"results/{m}/{d}/runs/{r}/scores/{b}.json" for b in benchmarks} <= set(report["input"]), r
    assert {r for (_m, _d, r) in runs_of(cfg)} >= COMBINED


# ---------------------------------------------------------------- every paper's runs


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def _training(training: dict, processes: int) -> dict:
    """Training settings as they decide the run: the global batch rather than its split over processes and
    accumulation steps (all.yaml runs the one-GPU LoRA papers on 8 GPUs with 8× less accumulation)."""
    out = {k: v for k, v in training.items() if k not in ("batch_size", "gradient_accumulation")}
    out["global_batch"] = training["batch_size"] * training["gradient_accumulation"] * processes
    if training["finetuning"] != "lora":
        out.pop("lora")
    return out


def _processes(cfg: dict, stage: str) -> int:
    return max(1, resources(cfg, stage)["gpus"])


def run_key(cfg: dict, model: str, dataset: str, recipe_name: str) -> str:
    """What decides a training run, with every name resolved to what it stands for (hub id, dataset settings,
    validation items), plus the reference run or warmup its selection / objective reads."""
    recipe = cfg["recipes"][recipe_name]
    strip = lambda d: {k: v for k, v in d.items() if k != "description"}  # noqa: E731
    selection = dict(recipe["selection"])
    if "model" in selection:  # the model that selects (LESS-T), as it stands
        selection["model"] = strip(cfg["models"][selection["model"]])
    if "validation" in selection:
        vset = dict(cfg["validation"][selection["validation"]])
        vset["dataset"] = strip(cfg["datasets"][vset["dataset"]])
        selection["validation"] = vset
    key = {"model": strip(cfg["models"][model]), "dataset": strip(cfg["datasets"][dataset]), "selection": selection,
           "objective": recipe["objective"], "composition": recipe["composition"],
           "training": _training(recipe["training"], _processes(cfg, "train"))}
    if uses_confidence(recipe):
        key["reference"] = {"checkpoints": cfg["reference"]["checkpoints"], "model": cfg["reference"]["model"],
                            "training": _training(deep_merge(cfg["training"], cfg["reference"]["training"]),
                                                  _processes(cfg, "reference"))}
    if uses_influence(recipe):  # the warmup is one process (its own stage)
        warmup = _training(deep_merge(cfg["training"], cfg["warmup"]["training"]), 1)
        # all but its batch: all.yaml shares one warmup per pool between LESS and ROSE (LESS's 32 sequences a step),
        # while rose.yaml warms up with its authors' 4 (test_paper_settings checks both)
        warmup.pop("global_batch")
        key["warmup"] = {"fraction": cfg["warmup"]["fraction"], "seed": cfg["warmup"]["seed"],
                         "training": warmup,
                         # the cost model sizes each job's runtime request; it does not change a feature
                         "gradients": {k: v for k, v in cfg["gradients"].items() if k != "cost"}}
    return _canonical(key)


def bench_key(cfg: dict, name: str) -> str:
    bench = dict(cfg["benchmarks"][name])
    if "judge" in bench:
        bench["judge"] = {k: v for k, v in cfg["judges"][bench["judge"]].items() if k != "description"}
    if "dataset" in bench:
        bench["dataset"] = cfg["datasets"][bench["dataset"]]
    return _canonical(bench)


def run_table(cfg: dict) -> dict[str, dict]:
    """run key → {"names": [(model, dataset, recipe)...], "benchmarks": {benchmark keys}}."""
    table: dict[str, dict] = {}
    for (m, d, r), benchmarks in runs_of(cfg).items():
        entry = table.setdefault(run_key(cfg, m, d, r), {"names": [], "benchmarks": set()})
        entry["names"].append((m, d, r))
        entry["benchmarks"] |= {bench_key(cfg, b) for b in benchmarks}
    return table


@pytest.fixture(scope="module")
def all_runs(cfg):
    return run_table(cfg)


@pytest.mark.parametrize("paper", SINGLE_PAPERS, ids=lambda p: p.name)
def test_every_run_of_a_paper_is_in_all_yaml(paper, all_runs):
    runs = run_table(load(paper))
    assert len(runs) == len(runs_of(load(paper)))  # a paper config plans no run twice itself
    missing = [entry["names"] for key, entry in runs.items() if key not in all_runs]
    assert missing == []
    fewer = [entry["names"] for key, entry in runs.items() if not entry["benchmarks"] <= all_runs[key]["benchmarks"]]
    assert fewer == []


def test_all_yaml_is_the_papers_runs_and_the_combined_recipes(cfg, all_runs):
    papers = set().union(*(run_table(load(p)) for p in SINGLE_PAPERS))
    extra = [entry["names"] for key, entry in all_runs.items() if key not in papers]
    assert sorted(extra) == sorted([(m, d, r)] for (m, d, r) in runs_of(cfg) if r in COMBINED)
    assert len(all_runs) == len(runs_of(cfg)) == 16 + 56 + 60 + 34 - 5 + 14 + 3  # LESS and ROSE share 5 runs; LESS: 17 + 8 LESS-T + 9 baselines
