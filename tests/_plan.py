"""Dry runs of the workflow as a researcher starts it on a cluster (`snakemake -n --profile profiles/slurm`), with
the network off: shared by the paper-scale planning test and bench/plan_paper.py."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
FIXTURE = ROOT / "tests" / "fixtures" / "paper_plan.yaml"

# loaded by every Python process of the dry run (sitecustomize): any connection beyond this machine fails loudly
OFFLINE_GUARD = ROOT / "tests" / "offline"


# What a dry run with `--sdm conda` asks of conda (Snakemake checks the installation and reads the platform; it
# creates no environment): for machines without conda, where the planning tests run.
CONDA_STUB = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "/nonexistent/conda", "platform": "linux-64"}' ;;
  "--version") echo "conda 24.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "conda stub of the planning tests: $* is not for a dry run" >&2; exit 1 ;;
esac
"""


def offline_env() -> dict[str, str]:
    """This source tree first and the network guard (tests/offline) loaded into every Python process; where conda is
    missing, a stub that answers a dry run's questions."""
    path = os.environ.get("PATH", "")
    if shutil.which("conda") is None:
        stub = Path(tempfile.mkdtemp(prefix="conda-stub-")) / "conda"
        stub.write_text(CONDA_STUB)
        stub.chmod(0o755)
        path = os.pathsep.join([str(stub.parent), path])
    return {**os.environ, "PATH": path, "PYTHONPATH": os.pathsep.join([str(OFFLINE_GUARD), str(ROOT / "src")]),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def plan(configfile: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``snakemake -n -p --profile profiles/slurm --sdm conda --configfile configfile`` in ``workdir``, offline: the
    README's command (vLLM generation needs conda)."""
    env = offline_env()
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "-p", "--profile",
                           str(ROOT / "profiles" / "slurm"), "--sdm", "conda", "--directory", str(workdir),
                           "--configfile", str(configfile), *extra], capture_output=True, text=True, env=env,
                          timeout=600)


def job_counts(output: str) -> dict[str, int]:
    """The dry run's "Job stats" table as {rule: jobs}, without the total."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def dry_run_jobs(output: str) -> list[dict]:
    """Every job the dry run lists, as {"rule", "input", "output", "wildcards", "resources", "benchmark", "shell"}.

    Read from the per-job blocks of ``snakemake -n -p`` (``rule NAME:``, then ``    key: value`` lines, then
    ``Shell command:``): each planned job is listed once, with all its outputs, so an artefact two jobs would make
    shows up twice. Paths and values are split at ", " (none of the workflow's paths has one).
    """
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule \w+:)", output):
        head = re.search(r"^(?:local)?rule (\w+):", block, flags=re.M)
        if not head:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block[head.end():].split("\nShell command:")[0], flags=re.M))
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        jobs.append({
            "rule": head.group(1),
            "input": fields["input"].split(", ") if "input" in fields else [],
            "output": fields["output"].split(", ") if "output" in fields else [],
            "wildcards": dict(kv.split("=", 1) for kv in fields["wildcards"].split(", ")) if "wildcards" in fields else {},
            "resources": dict(kv.split("=", 1) for kv in fields["resources"].split(", ")) if "resources" in fields else {},
            "benchmark": fields.get("benchmark"),
            "shell": shell.group(1) if shell else None,
        })
    return jobs


def job_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, {resource: value}) of every planned job."""
    return [(job["rule"], job["resources"]) for job in dry_run_jobs(output)]


@functools.cache
def planned(configfile: Path) -> subprocess.CompletedProcess:
    """The dry run of ``configfile`` in a fresh working directory, once per test session (several test modules
    check the same plan; planning every paper config takes a while)."""
    return plan(configfile, Path(tempfile.mkdtemp(prefix="plan-")))


@functools.cache
def config_plan(config: str):
    """The `sftlab.plan.Plan` of configs/<config>, without a workflow (the planning unit tests, test_plan_*.py)."""
    from sftlab.config import prepare, read_yaml
    from sftlab.plan import Plan

    return Plan(prepare(read_yaml(ROOT / "configs" / config)), root=ROOT)
