"""sftlab.plan.core and sftlab.plan.load: the plan's config look-ups, paths, resources and launchers, against values
worked out by hand from configs/tiny.yaml and configs/paper/minorsft.yaml (no Snakemake process)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError

from sftlab.config import CHECKED_ENV, prepare, read_yaml
from sftlab.plan import Plan
from sftlab.plan.load import load, recorded_path, workflow_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
MINORSFT = ROOT / "configs" / "paper" / "minorsft.yaml"


def plan_of(path, **overrides):
    return Plan(prepare({**read_yaml(path), **overrides}), root=ROOT)


@pytest.fixture(scope="module")
def tiny():
    return plan_of(TINY)


@pytest.fixture(scope="module")
def minorsft():
    return plan_of(MINORSFT)


def wc(**kw):
    return SimpleNamespace(**kw)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    for var in ("SFTLAB_CLUSTER", "SFTLAB_SLURM_GPU_PARTITION", "SFTLAB_SLURM_PARTITION"):
        monkeypatch.delenv(var, raising=False)


# --- resources ------------------------------------------------------------------------------------------------------

def test_stage_resources_fall_back_to_the_default_and_cpu_stages_ask_for_no_gpu(tiny, minorsft):
    # tiny: default {cpus: 1, mem_mb: 2000, runtime: 10}, train {cpus: 2, gpus: 0, mem_mb: 4000, runtime: 20}
    assert tiny.stage_resources("train") == {"cpus": 2, "gpus": 0, "mem_mb": 4000, "runtime": 20}
    assert tiny.stage_resources("score") == {"cpus": 1, "gpus": 0, "mem_mb": 2000, "runtime": 10}
    # minorsft: score {cpus: 8, gpus: 1, ...}; report (a CPU stage) {cpus: 1, mem_mb: 8000, runtime: 30}
    assert minorsft.stage_resources("score") == {"cpus": 8, "gpus": 1, "mem_mb": 64000, "runtime": 240}
    assert minorsft.stage_resources("report") == {"cpus": 1, "gpus": 0, "mem_mb": 8000, "runtime": 30}
    assert [minorsft.threads_of(s) for s in ("train", "data", "report")] == [64, 4, 1]


def test_a_gpu_named_for_a_cpu_stage_is_a_config_error():
    plan = plan_of(TINY, resources={"default": {"cpus": 1, "mem_mb": 2000, "runtime": 10},
                                    "data": {"gpus": 1}})
    with pytest.raises(WorkflowError, match=r"config key resources\.data\.gpus: the data rules run on CPU"):
        plan.stage_resources("data")


def test_res_of_a_gpu_stage_asks_for_one_node_and_grows_with_the_attempt(minorsft):
    # train: 64 CPUs over 8 GPUs → 8 per GPU; mem 512000 MB and 720 min, times the attempt without a cluster
    r = minorsft.res("train", model=True)
    assert {k: r[k] for k in ("gpu", "cpus_per_gpu", "nodes")} == {"gpu": 8, "cpus_per_gpu": 8, "nodes": 1}
    assert "slurm_partition" not in r
    assert [r["mem_mb"](wc(), a) for a in (1, 2, 3)] == [512000, 1024000, 1536000]
    assert [r["runtime"](wc(), a, "train") for a in (1, 2)] == [720, 1440]


def test_res_of_a_cpu_stage_has_no_gpu_keys_and_a_gpu_stage_must_say_whether_it_runs_a_model(tiny, minorsft):
    r = tiny.res("report")
    assert set(r) == {"mem_mb", "runtime"}
    assert r["mem_mb"](wc(), 2) == 4000  # tiny's default 2000 MB, second attempt
    with pytest.raises(WorkflowError, match=r"res\('score'\): say whether the rule runs a model"):
        minorsft.res("score")


def test_res_caps_retries_at_the_partition_and_names_the_gpu_partition(minorsft, monkeypatch, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("default_partition: gpu\npartitions:\n"
                       "  gpu: {time_limit: '1-00:00:00', mem_mb: 1000000, gpus: 8, cpus: 112}\n")
    monkeypatch.setenv("SFTLAB_CLUSTER", str(cluster))
    plan = Plan(minorsft.cfg, root=ROOT)  # a fresh plan: the cluster description is read once per plan
    r = plan.res("train", model=True)
    # 3 × 512000 = 1536000 MB over the partition's 1000000; 3 × 720 = 2160 min over its day (1440 min)
    assert r["mem_mb"](wc(), 3) == 1000000
    assert r["runtime"](wc(), 3, "train") == 1440
    assert r["runtime"](wc(), 1, "train") == 720
    monkeypatch.setenv("SFTLAB_SLURM_GPU_PARTITION", "h100")
    r = plan.res("train", model=True)
    assert r["slurm_partition"] == "h100"
    with pytest.raises(WorkflowError, match="invalid configuration: SFTLAB_SLURM_GPU_PARTITION=h100: no partition"):
        r["mem_mb"](wc(), 1)


def test_cluster_none_means_no_checks(minorsft, monkeypatch):
    monkeypatch.setenv("SFTLAB_CLUSTER", "none")
    plan = Plan(minorsft.cfg, root=ROOT)
    assert plan.cluster() is None and plan.partition_of(8) is None


# --- processes and launchers ----------------------------------------------------------------------------------------

def test_launcher_is_python_for_one_process_and_accelerate_with_one_process_per_gpu(tiny, minorsft):
    assert tiny.launcher("train") == ["python"]
    assert tiny.train_launcher(wc(recipe="sft")) == ["python"]
    # minorsft: train on 8 GPUs under FSDP (training.distributed: fsdp), reference on none
    assert (minorsft.processes_of("train"), minorsft.processes_of("reference")) == (8, 1)
    launch = minorsft.launcher("train")
    assert launch[:3] == ["python", "-m", "accelerate.commands.launch"]
    assert launch[launch.index("--config_file") + 1] == "configs/accelerate/fsdp.yaml"
    assert launch[launch.index("--num_processes") + 1] == "8"


def test_launcher_refuses_sharded_lora_and_processes_that_differ_from_the_gpus(minorsft):
    lora = {**minorsft.cfg["training"], "finetuning": "lora"}
    with pytest.raises(WorkflowError, match=r"config key recipes\.x\.training\.distributed: fsdp shards full"):
        minorsft.launcher("train", lora, "recipes.x.training")
    cfg = {**minorsft.cfg, "resources": {**minorsft.cfg["resources"],
                                         "train": {**minorsft.cfg["resources"]["train"], "processes": 4}}}
    with pytest.raises(WorkflowError, match=r"config key resources\.train\.processes: 4 processes on 8 GPUs"):
        Plan(cfg, root=ROOT).processes_of("train")


# --- runs, selections and their files -------------------------------------------------------------------------------

def test_run_dir_and_selection_ids(tiny):
    assert tiny.run_dir("tiny", "demo", "sft") == "results/tiny/demo/runs/sft"
    assert tiny.run_checkpoints(wc(model="tiny", dataset="demo", recipe="dtm")) == "results/tiny/demo/runs/dtm/checkpoints"
    # sft_random50: {name: random, fraction: 0.5, seed: 1}; the warmup: random at 0.25 with the default seed 0
    assert tiny.selection_path(wc(model="tiny", dataset="demo", recipe="sft_random50")) == \
        "results/tiny/demo/selection/random-s1/0.5.ids"
    assert tiny.selection_ids("tiny", "demo", tiny.warmup_selection()) == "results/tiny/demo/selection/random-s0/0.25.ids"
    assert tiny.recipe_selection_ids("tiny", "demo", tiny.cfg["recipes"]["sft"]) == \
        "results/tiny/demo/selection/full/1.ids"


def test_selection_config_is_the_selectors_settings_and_an_unknown_one_is_an_error(tiny):
    assert tiny.selection_config(wc(selector="random-s1", fraction="0.5")) == {"name": "random", "fraction": 0.5,
                                                                                "seed": 1}
    assert tiny.selection_config(wc(selector="random-s0", fraction="0.25"))["name"] == "random"  # the warmup's
    with pytest.raises(WorkflowError, match="no recipe selects random-s7 at fraction 0.5"):
        tiny.selection_config(wc(selector="random-s7", fraction="0.5"))


def test_selector_tables_name_the_table_the_selector_reads(tiny):
    w = wc(model="tiny", dataset="demo", selector="less-target-2shot", fraction="0.25")
    assert tiny.selector_tables(w) == {"influence_less": "results/tiny/demo/influence/less-target-2shot.parquet"}
    assert tiny.selector_table_args(w) == ["--table", "influence_less=results/tiny/demo/influence/less-target-2shot.parquet"]
    assert tiny.selector_tables(wc(model="tiny", dataset="demo", selector="random-s1", fraction="0.5")) == {}


def test_objective_tables_are_the_columns_the_objective_reads(tiny):
    run = dict(model="tiny", dataset="demo")
    assert tiny.objective_tables(wc(recipe="sft", **run)) == []
    assert tiny.objective_tables(wc(recipe="minorsft", **run)) == ["results/tiny/demo/ref_logprobs.parquet"]
    assert tiny.objective_tables(wc(recipe="sftmix", **run)) == ["results/tiny/demo/confidence.parquet"]


def test_experiment_runs_score_files_and_report_benchmarks(tiny, minorsft):
    runs = tiny.experiment_runs()
    # main 14 recipes; judged and mechanisms: all in main; selection: 9 more (less, rose ×2 each, rose_sftmix, 4 baselines)
    assert len(runs) == 14 + 9
    assert runs[("tiny", "demo", "sft")] >= {"heldout_em", "mc_demo", "mt_tiny", "heldout_nll"}
    assert tiny.report_benchmarks() == ["heldout_em", "mc_demo", "mt_tiny", "ae_tiny", "pref_tiny", "ir_tiny",
                                        "heldout_nll", "exam_nll"]
    assert tiny.score_files()[:2] == ["results/tiny/demo/runs/sft/scores/ae_tiny.json",
                                      "results/tiny/demo/runs/sft/scores/exam_nll.json"]
    assert tiny.run_score_files({("m", "d", "r"): {"b", "a"}}, only={"b"}) == ["results/m/d/runs/r/scores/b.json"]
    # minorsft: 2 datasets × (4 SFT + 12 DPO-SFT + 12 MinorSFT grid points), each on 2 benchmarks
    assert len(minorsft.experiment_runs()) == 56
    assert len(minorsft.score_files()) == 112
    assert ("qwen2_7b_instruct", "fineval", "minorsft_beta0.2_lr2e-05") in minorsft.experiment_runs()
    assert minorsft.train_logs()[0] == "results/qwen2_7b_instruct/financeiq/runs/sft_lr1e-06/train_log.csv"


def test_confidence_reference_and_tsne(tiny, minorsft):
    # sftmix, confident_only, sftmix_ambiguous, rose_sftmix read the confidence split: one pair, one reference run
    assert tiny.confidence_pairs() == [("tiny", "demo")] == tiny.reference_pairs()
    assert tiny.REFERENCE_CHECKPOINTS == [1, 2]
    assert tiny.reference_checkpoints("tiny", "demo") == ["results/tiny/demo/reference/checkpoint-1",
                                                         "results/tiny/demo/reference/checkpoint-2"]
    # full-pool single runs of NTP or SFTMix (sft_full is NTP with full fine-tuning)
    assert tiny.tsne_runs("tiny", "demo") == ["sft", "sft_full", "sftmix"]
    assert tiny.tsne_models(wc(model="tiny", dataset="demo")) == {
        "reference": "results/tiny/demo/reference/checkpoint-2", "sft": "results/tiny/demo/runs/sft/model",
        "sft_full": "results/tiny/demo/runs/sft_full/model", "sftmix": "results/tiny/demo/runs/sftmix/model"}
    assert minorsft.confidence_pairs() == [] and minorsft.REFERENCE_RUNS == {}
    assert tiny.reference_model(wc(model="tiny")) == "resources/models/tiny"


def test_report_outputs_hold_the_main_table_the_figures_and_the_paper_reports():
    plan = plan_of(TINY)
    plan.PAPER_REPORTS.append(lambda: ["reports/x.md"])
    assert plan.report_outputs() == [
        "reports/tables/main.md", "reports/tables/main.csv", "reports/tables/main.tex",
        "reports/figures/loss_curves.png", "reports/figures/loss_curves.pdf",
        "reports/figures/scores.png", "reports/figures/scores.pdf",
        "reports/figures/tsne_tiny_demo.png", "reports/figures/tsne_tiny_demo.pdf", "reports/x.md"]


def test_compositions_and_recipe_constraints(tiny):
    assert tiny.SINGLE_RUN == ["single"]
    assert set(tiny.SHARDED) == {"disperse_merge", "seed_shards"}
    # longest first, so that `dtm` does not match the start of `dtm_fisher`
    assert tiny.recipes_composed("disperse_merge") == "dtm_task_arithmetic|dtm_init_different|dtm_minorsft|dtm_fisher|dtm"
    assert tiny.recipes_composed("no_such") == "(?!x)x"
    assert tiny._alternation(["a.b", "c"]) == r"a\.b|c"


def test_objective_and_benchmark_modules(tiny):
    assert tiny.objective_module(wc(recipe="minorsft")) == "sftlab.objectives.minorsft"
    assert tiny.recipe_objective_name(wc(recipe="dtm_minorsft")) == "minorsft"
    assert tiny.benchmark_module(wc(benchmark="mt_tiny")).endswith("mtbench")


def test_params_helpers(tiny):
    assert tiny.option_args({"max_new_tokens": 8, "judge": "x"}) == ["--judge", "x", "--max-new-tokens", "8"]
    assert tiny.table_args("--model", ["a", "b"]) == ["--model", "a", "--model", "b"]
    assert tiny.output_stem("md")(wc(), {"md": "reports/tables/cost.md"}) == "reports/tables/cost"
    assert tiny.recipe_max_length(wc(recipe="sft")) == 64
    assert tiny.as_json({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert tiny.input_table_args(wc(), wc(tables=["t.parquet"])) == ["--table", "t.parquet"]


def test_resumable_runs_read_the_recipes_training(tiny):
    w = wc(recipe="sft_full")
    assert tiny.RECIPE_RUN.training(w)["finetuning"] == "full"
    assert tiny.RECIPE_RUN.objective(w) == "ntp"


# --- code fingerprints and files ------------------------------------------------------------------------------------

def test_code_names_the_script_where_it_is_and_writes_a_fingerprint_once(tiny, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert str(tiny.code("train")["script"]) == "scripts/train.py"
    monkeypatch.chdir(tmp_path)
    plan = Plan(tiny.cfg, root=ROOT)  # outside the repository: the script by its absolute path
    inputs = plan.code("train", plan.objective_module)
    assert str(inputs["script"]) == str(ROOT / "scripts" / "train.py")
    name = inputs["code"](wc(recipe="minorsft"))
    assert name.startswith("results/.code/") and (tmp_path / name).is_file()
    assert plan.code("train", "sftlab.objectives.minorsft")["code"](wc()) == name  # the same variant, the same file
    assert inputs["code"](wc(recipe="sft")) != name


def test_local_files_are_inputs(tmp_path):
    (tmp_path / "d" / ".cache").mkdir(parents=True)
    (tmp_path / "d" / "a.json").write_text("{}")
    (tmp_path / "d" / ".cache" / "x").write_text("")
    plan = Plan({"datasets": {"loc": {"source": "local", "path": str(tmp_path / "d")}, "hub": {"source": "hub"}}},
                root=ROOT)
    assert plan.local_dataset_files(wc(dataset="loc")) == [str(tmp_path / "d" / "a.json")]
    assert plan.local_dataset_files(wc(dataset="hub")) == []


# --- sftlab.plan.load -----------------------------------------------------------------------------------------------

def test_load_resolves_paths_against_the_working_directory_else_the_workflow(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKED_ENV, raising=False)
    config = read_yaml(TINY)
    monkeypatch.chdir(ROOT)
    raw, cfg = load(config, [TINY], ROOT)
    assert raw == read_yaml(TINY)
    assert cfg["benchmarks"]["mc_demo"]["data_dir"] == "workflow/benchmarks/mc_demo"
    monkeypatch.chdir(tmp_path)  # not there: the workflow's, by its absolute path (outside the working directory)
    _, cfg = load(config, [TINY], ROOT)
    assert cfg["benchmarks"]["mc_demo"]["data_dir"] == str(ROOT / "workflow" / "benchmarks" / "mc_demo")
    assert cfg["benchmarks"]["mt_tiny"]["calibration"]["data_dir"] == \
        str(ROOT / "workflow" / "benchmarks" / "calibration_demo" / "mt_bench")
    (tmp_path / "workflow" / "benchmarks" / "mc_demo").mkdir(parents=True)  # there: the working directory's
    _, cfg = load(config, [TINY], ROOT)
    assert cfg["benchmarks"]["mc_demo"]["data_dir"] == "workflow/benchmarks/mc_demo"


def test_load_refuses_a_bad_config_and_repeated_keys(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKED_ENV, raising=False)
    with pytest.raises(WorkflowError, match=r"invalid configuration: .*resources\.train\.cpus"):
        load({**read_yaml(TINY), "resources": {"train": {"cpus": "many"}}}, [], ROOT)
    twice = tmp_path / "twice.yaml"
    twice.write_text("models: {}\nmodels: {}\n")
    with pytest.raises(WorkflowError, match="invalid configuration"):
        load(read_yaml(TINY), [twice], ROOT)


def test_recorded_and_workflow_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert recorded_path(tmp_path / "a" / "b") == "a/b"
    assert recorded_path(ROOT / "scripts") == str(ROOT / "scripts")
    assert workflow_path("/abs/x", ROOT) == "/abs/x"
    assert workflow_path("configs", ROOT) == str(ROOT / "configs")
