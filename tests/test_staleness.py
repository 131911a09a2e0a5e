"""Results never go stale silently: local files a job reads are its inputs (an edit reruns its dependents), and a
project copied with its results (`cp -a`) keeps its records. Dry runs, plus one real data-preparation job."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "models": {"m": {"source": "local", "path": "localmodel"}},
    "datasets": {"d": {"source": "local", "path": "data.jsonl", "format": "alpaca", "heldout": 1}},
    "benchmarks": {"exam": {"type": "lm_eval", "task": "exam", "data_dir": "exam"}},
    "training": {"max_steps": 1},
    "recipes": {"sft": {}},
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft"], "benchmarks": ["exam"]}},
}
# every file the evaluation of recipe sft on the exam needs, made by hand (no job has run)
OUTPUTS = ["results/data/d/train.jsonl", "results/data/d/heldout.jsonl", "results/data/d/pairs.jsonl",
           "resources/models/m/config.json", "results/m/d/selection/full/1.ids", "results/m/d/ref_logprobs.parquet",
           "results/m/d/runs/sft/model/config.json", "results/m/d/runs/sft/train_log.csv",
           "results/m/d/runs/sft/exams/exam.json", "results/m/d/runs/sft/exams/exam.jsonl",
           "results/m/d/runs/sft/scores/exam.json", "results/m/d/runs/sft/answers/exam.jsonl"]


def write_project(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    (work / "data.jsonl").write_text("".join(json.dumps({"instruction": f"say {i}", "input": "", "output": str(i)}) + "\n"
                                             for i in range(6)))
    (work / "localmodel").mkdir()
    (work / "localmodel" / "config.json").write_text("{}")
    (work / "exam").mkdir()
    for name in ("test.jsonl", "dev.jsonl"):
        (work / "exam" / name).write_text("{}\n")


def dry_run(work: Path, snakefile: Path, *targets: str) -> str:
    # targets before --configfile, which takes several values
    proc = subprocess.run([sys.executable, "-m", "snakemake", *targets, "-s", str(snakefile), "-n", "--directory",
                           str(work), "--configfile", str(work / "c.yaml")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def planned(output: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith(("rule ", "localrule "))}


def set_mtime(path: Path, t: float) -> None:
    os.utime(path, (t, t))


def test_editing_a_local_file_reruns_the_jobs_that_read_it(tmp_path):
    """Outputs made by hand, newer than every input: nothing to do; edit one local file: its reader is planned."""
    work = tmp_path / "p"
    write_project(work)
    now = time.time()
    for p in [p for p in work.rglob("*") if p.is_file()]:
        set_mtime(p, now - 3600)
    for out in OUTPUTS:
        (work / out).parent.mkdir(parents=True, exist_ok=True)
        (work / out).write_text("{}")
    for p in (work / "results").rglob("*"):
        set_mtime(p, now)
    for p in (work / "resources").rglob("*"):
        set_mtime(p, now)
    targets = ["results/data/d/train.jsonl", "resources/models/m", "results/m/d/runs/sft/scores/exam.json"]
    assert planned(dry_run(work, ROOT / "Snakefile", *targets)) == set()
    # the two upstream edits in one dry run, each job planned for its own file
    for path in ("data.jsonl", "localmodel/config.json"):
        set_mtime(work / path, now + 60)
    reasons = job_reasons(dry_run(work, ROOT / "Snakefile", *targets))
    assert "Updated input files: data.jsonl" in reasons["prepare_data"]
    assert "Updated input files: localmodel/config.json" in reasons["materialise_model"]
    for path in ("data.jsonl", "localmodel/config.json"):
        set_mtime(work / path, now - 3600)
    set_mtime(work / "exam" / "test.jsonl", now + 60)
    reasons = job_reasons(dry_run(work, ROOT / "Snakefile", *targets))
    # the run's exams are scored in one job; the exam's Scores file is copied out of it
    assert set(reasons) == {"evaluate", "exam_results"}
    assert "Updated input files: exam/test.jsonl" in reasons["evaluate"]


def job_reasons(output: str) -> dict[str, str]:
    """rule → the `reason:` line of its job in a dry run's listing."""
    reasons, rule = {}, None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("reason:") and rule:
            reasons[rule] = line.strip()
    return reasons


def copy_workflow(dest: Path) -> Path:
    """The workflow's own files, as a researcher's project holds them (the results are added inside)."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    for name in ("workflow", "scripts", "profiles", "envs", "configs"):
        shutil.copytree(ROOT / name, dest / name)
    return dest / "Snakefile"


def test_a_project_copied_with_its_results_replans_nothing(tmp_path):
    project = tmp_path / "scratch" / "project"
    snakefile = copy_workflow(project)
    write_project(project)
    target = "results/data/d/train.jsonl"
    # a real job, so that Snakemake records its inputs, params and code
    proc = subprocess.run([sys.executable, "-m", "snakemake", target, "-s", str(snakefile), "--cores", "1",
                           "--directory", str(project), "--configfile", str(project / "c.yaml")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    moved = tmp_path / "project_storage" / "deeper" / "project"
    moved.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(project), str(moved)], check=True)
    out = dry_run(moved, moved / "Snakefile", target)
    assert "Nothing to be done" in out, out[-3000:]
