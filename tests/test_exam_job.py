"""A run's exams in one evaluate job (sftlab.evaluation.exams, scripts/evaluate.py): the model loads once; a rerun
after one exam's settings changed scores that exam alone and takes the others' results from the run's cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sftlab.evaluation.exams import cached_result, code_digest, exam_key, keep_result, model_signature, run_exams

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "benchmarks": {"em": {"type": "exact_match"}, "mmlu": {"type": "lm_eval"}, "mt": {"type": "mtbench"},
                   "nll": {"type": "nll"}, "arc": {"type": "lm_eval"}},
    "experiments": {"a": {"models": ["m"], "datasets": ["d"], "recipes": ["r1", "r2"], "benchmarks": ["mmlu", "mt"]},
                    "b": {"models": ["m"], "datasets": ["d"], "recipes": ["r1"], "benchmarks": ["em", "arc", "nll"]}},
}


def test_a_runs_exams_are_its_in_process_benchmarks_from_every_experiment():
    # r1: mmlu (a) and em, arc (b); the judged mt and the log-likelihood nll have rules of their own
    assert run_exams(CONFIG, "m", "d", "r1") == ["arc", "em", "mmlu"]
    assert run_exams(CONFIG, "m", "d", "r2") == ["mmlu"]
    assert run_exams(CONFIG, "m", "d", "r3") == []


def test_the_key_moves_with_settings_input_bytes_model_code_and_device(tmp_path):
    data = tmp_path / "heldout.jsonl"
    data.write_text("a\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"1234")
    cfg = {"type": "exact_match", "max_new_tokens": 8}
    key = exam_key(cfg, {"heldout": str(data)}, model_signature(model), "code", "cpu")
    assert exam_key(dict(cfg), {"heldout": str(data)}, model_signature(model), "code", "cpu") == key
    others = [exam_key({**cfg, "max_new_tokens": 9}, {"heldout": str(data)}, model_signature(model), "code", "cpu"),
              exam_key(cfg, {"heldout": str(data)}, model_signature(model), "code2", "cpu"),
              exam_key(cfg, {"heldout": str(data)}, model_signature(model), "code", "cuda")]
    data.write_text("b\n")  # same size, other bytes
    others.append(exam_key(cfg, {"heldout": str(data)}, model_signature(model), "code", "cpu"))
    data.write_text("a\n")
    os.utime(model / "w.bin", ns=(1, 1))  # the model rewritten
    others.append(exam_key(cfg, {"heldout": str(data)}, model_signature(model), "code", "cpu"))
    assert len({key, *others}) == 6


def test_the_code_of_an_exam_is_the_scripts_with_its_own_type():
    script = ROOT / "scripts" / "evaluate.py"
    lm_eval = code_digest(script, "sftlab.benchmarks.lm_eval")
    assert lm_eval == code_digest(script, "sftlab.benchmarks.lm_eval")
    assert lm_eval != code_digest(script, "sftlab.benchmarks.exact_match")


def test_a_kept_result_is_read_back_under_its_key_alone(tmp_path):
    keep_result(tmp_path / "cache", "em", "k1", {"value": 1.0}, [{"id": "x"}])
    assert cached_result(tmp_path / "cache", "em", "k1") == ({"value": 1.0}, [{"id": "x"}])
    assert cached_result(tmp_path / "cache", "em", "k2") is None
    assert cached_result(tmp_path / "cache", "other", "k1") is None


# --- the script ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from sftlab.models.materialise import materialise

    path = tmp_path_factory.mktemp("base") / "model"
    materialise({"source": "random"}, path)
    return path


def heldout(path: Path) -> Path:
    rows = [{"id": f"h{i}", "messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                         {"role": "assistant", "content": str(i + 1)}]} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def evaluate(model_dir: Path, work: Path, exams: dict) -> subprocess.CompletedProcess:
    arg = {name: {"config": cfg, "inputs": {"heldout": str(work / "heldout.jsonl"), "train": str(work / "heldout.jsonl")},
                  "scores": str(work / "out" / f"{name}.json"), "answers": str(work / "out" / f"{name}.jsonl")}
           for name, cfg in exams.items()}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model-dir", str(model_dir),
                           "--exams", json.dumps(arg), "--cache", str(work / "cache")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}, timeout=600)


def test_a_rerun_scores_only_the_exams_whose_key_changed(model_dir, tmp_path):
    heldout(tmp_path / "heldout.jsonl")
    exams = {"em_a": {"type": "exact_match", "max_new_tokens": 4, "batch_size": 2},
             "em_b": {"type": "exact_match", "max_new_tokens": 4, "batch_size": 2}}
    proc = evaluate(model_dir, tmp_path, exams)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in exams:
        score = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert score["benchmark"] == name and score["n"] == 3
        assert len((tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()) == 3
    # mark both kept results: whichever the rerun takes from the cache carries the mark into its Scores file
    for name in exams:
        entry = json.loads((tmp_path / "cache" / f"{name}.json").read_text())
        entry["scores"]["value"] = -1.0
        (tmp_path / "cache" / f"{name}.json").write_text(json.dumps(entry))
    exams["em_b"] = {**exams["em_b"], "max_new_tokens": 5}
    proc = evaluate(model_dir, tmp_path, exams)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text())["value"] for name in exams}
    assert values["em_a"] == -1.0 and values["em_b"] != -1.0
    # the model retrained: every exam is scored again
    weights = next(f for f in model_dir.iterdir() if f.suffix == ".safetensors")
    os.utime(weights, ns=(1, 1))
    proc = evaluate(model_dir, tmp_path, exams)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(json.loads((tmp_path / "out" / f"{n}.json").read_text())["value"] != -1.0 for n in exams)


# --- the plan -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("paper", ["sftmix", "dtm"])
def test_the_paper_plan_scores_each_runs_exams_in_one_job(paper):
    """sftmix: IFEval on the 8 main runs; dtm: 5 lm-eval exams on each of 14 runs — one evaluate job per run, each
    exam's Scores file copied out of it."""
    import shlex

    from _plan import dry_run_jobs, planned
    from sftlab.config import prepare, read_yaml

    configfile = ROOT / "configs" / "paper" / f"{paper}.yaml"
    proc = planned(configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = dry_run_jobs(proc.stdout + proc.stderr)
    cfg = prepare(read_yaml(configfile))
    expected = {}
    for exp in cfg["experiments"].values():
        for r in exp["recipes"]:
            lm_eval = {b for b in exp["benchmarks"] if cfg["benchmarks"][b]["type"] in ("lm_eval", "ifeval")}
            if lm_eval:
                for m in exp["models"]:
                    for d in exp["datasets"]:
                        expected.setdefault((m, d, r), set()).update(lm_eval)
    scored = {}
    for job in jobs:
        if job["rule"] == "evaluate":
            run = tuple(job["wildcards"][k] for k in ("model", "dataset", "recipe"))
            assert run not in scored, run  # one job per run
            args = shlex.split(job["shell"].split(" 2> ")[0])
            scored[run] = set(json.loads(args[args.index("--exams") + 1]))
    assert scored == expected
    assert len(scored) == {"sftmix": 8, "dtm": 14}[paper]
    copies = sorted((j["wildcards"]["model"], j["wildcards"]["dataset"], j["wildcards"]["recipe"],
                     j["wildcards"]["benchmark"]) for j in jobs if j["rule"] == "exam_results")
    assert copies == sorted((*run, b) for run, benches in expected.items() for b in benches)


def test_each_exams_settings_are_in_the_params_snakemake_records(tmp_path):
    """Snakemake's params trigger compares only the params computed from the wildcards alone (a params function that
    reads the job's input or output is left out of its records): every exam's settings must be among those, so that
    changing them reruns the job."""
    from sftlab.report.dag import _workflow

    tiny = ROOT / "configs" / "tiny.yaml"
    # a dry run first: planning writes the code fingerprints (results/.code) that the jobs read
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--directory",
                          str(tmp_path), "--configfile", str(tiny)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    with _workflow(ROOT / "Snakefile", [str(tiny)], None, tmp_path) as workflow:
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        jobs = [j for j in workflow.dag.jobs if j.rule.name in ("evaluate", "log_likelihood")]
        assert {j.rule.name for j in jobs} == {"evaluate", "log_likelihood"}
        for job in jobs:
            recorded = [json.loads(p) for p in job.non_derived_params if isinstance(p, str) and p.startswith("{")]
            exams = json.loads(job.params.exams)
            assert exams in recorded, job
            assert all(exam["config"]["type"] for exam in exams.values())
