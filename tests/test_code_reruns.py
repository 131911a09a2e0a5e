"""Reruns follow the code that computes each result (sftlab.fingerprint): on the tiny DAG with every output made by
hand, a comment anywhere replans nothing, a changed constant in the NTP loss replans the jobs that run it and
what they feed, a changed line in the exact-match scorer only its scorings and the reports. Dry runs of a copy of
the repository."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _plan import dry_run_jobs

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "config.yaml", "workflow", "scripts", "src", "profiles", "envs", "configs")
# upstream of every training, and running no objective: a change to the NTP loss leaves them alone
UPSTREAM = {"prepare_data", "materialise_model", "ref_logprobs", "benchmark_data", "base_log_likelihood"}


def copy_repo(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def dry_run(repo: Path, work: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n", "-p", "--cores", "1",
                           "--directory", str(work), "--configfile", str(repo / "configs" / "tiny.yaml")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(repo / "src"), "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@functools.cache
def tiny_outputs() -> tuple[str, ...]:
    """Every output of the tiny DAG, from a dry run in an empty directory."""
    out = dry_run(ROOT, Path(tempfile.mkdtemp(prefix="tiny-plan-")))
    return tuple(sorted({path for job in dry_run_jobs(out) for path in job["output"]}))


def done_project(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the repository and a working directory holding every output of the tiny DAG, made by hand after
    a first plan wrote the code's fingerprints: nothing to do."""
    repo, work = copy_repo(tmp_path / "repo"), tmp_path / "work"
    work.mkdir()
    dry_run(repo, work)  # writes results/.code
    for rel in tiny_outputs():
        path = work / rel
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:  # a directory() output (models, checkpoints, benchmark data)
            path.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for path in [work / rel for rel in tiny_outputs()]:
        os.utime(path, (now, now))
    return repo, work


def planned(output: str) -> set[str]:
    return {job["rule"] for job in dry_run_jobs(output)}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def test_comments_docstrings_and_formatting_replan_nothing(tmp_path):
    repo, work = done_project(tmp_path)
    assert planned(dry_run(repo, work)) == set()
    for path in [*(repo / "src").rglob("*.py"), *(repo / "scripts").glob("*.py")]:
        text = path.read_text()
        path.write_text(text.replace("\n", "  # a comment\n", 1) + "\n\n# a note at the end\n")
    edit(repo / "src/sftlab/objectives/ntp.py", "prompt tokens carry label -100", "prompt tokens are labelled -100")
    edit(repo / "src/sftlab/objectives/ntp.py", "return -logps.sum() / mask.sum().clamp(min=1)",
         "return -logps.sum() / mask.sum().clamp(\n        min=1)")
    assert planned(dry_run(repo, work)) == set()


def test_a_changed_constant_in_the_ntp_loss_replans_what_runs_it_and_nothing_upstream(tmp_path):
    repo, work = done_project(tmp_path)
    edit(repo / "src/sftlab/objectives/ntp.py", "clamp(min=1)", "clamp(min=2)")
    jobs = dry_run_jobs(dry_run(repo, work))
    rules = {job["rule"] for job in jobs}
    trained = {job["wildcards"]["recipe"] for job in jobs if job["rule"] == "train"}
    # NTP recipes and SFTMix (whose loss adds NTP's); SFTMix's reference run and the LESS/ROSE warmup train with NTP
    assert {"sft", "sft_full", "sft_random50", "sftmix", "less_25", "rose_25"} <= trained
    assert {"reference_run", "warmup", "train_member", "merge", "evaluate", "build_report"} <= rules
    # MinorSFT and DPO+SFT never call the NTP loss
    assert not trained & {"minorsft", "dpo_sft"}
    assert not rules & UPSTREAM
    # selections that train nothing before ranking stay
    assert not [job for job in jobs if job["rule"] == "select_data" and "/selection/full/" in job["output"][0]]


def test_a_changed_line_in_the_exact_match_scorer_replans_only_its_scorings_and_the_reports(tmp_path):
    repo, work = done_project(tmp_path)
    edit(repo / "src/sftlab/benchmarks/exact_match.py", 'text = re.sub(r"\\s+", " ", text)',
         'text = re.sub(r"\\s+", "", text)')
    jobs = dry_run_jobs(dry_run(repo, work))
    # a run's exams are one evaluate job: the runs scored on exact match rescore (the exam cache keeps the results of
    # their other exams, whose code is unchanged) and copy each exam's results out
    scorings = [job for job in jobs if job["rule"] == "evaluate"]
    all_scorings = [path for path in tiny_outputs() if path.endswith("/scores/heldout_em.json")]
    assert sorted(job["output"][0] for job in scorings) == sorted(
        path.replace("/scores/heldout_em.json", "/exams") for path in all_scorings) and all_scorings
    copies = {job["output"][0] for job in jobs if job["rule"] == "exam_results"}
    assert set(all_scorings) <= copies
    # the rest aggregates over runs (reports): no job of one run
    others = [job for job in jobs if job["rule"] not in ("evaluate", "exam_results")]
    assert {"build_report"} <= {job["rule"] for job in others}
    assert [job for job in others if "recipe" in job["wildcards"]] == []
