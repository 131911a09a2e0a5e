"""A paper config's rehearsal end to end through ``--profile slurm`` (tests/test_rehearsal.py), started in the
background as soon as pytest has collected the test that checks it (tests/conftest.py): all.yaml's ~390 Slurm jobs
then run beside the rest of the suite, which keeps one of CI's two cores busy, instead of after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from _openai_stub import OpenAIStub, rehearsal_responder
from _plan import OFFLINE_GUARD, PAPER_CONFIGS, ROOT

PAPERS = {path.stem: path for path in PAPER_CONFIGS}

# CI runs all.yaml's rehearsal end to end: it holds every run of the five papers (test_all_plan.py), ~390 Slurm jobs,
# on the node .ci/run starts (4 fake GPUs, CPUs oversubscribed 2:1); SFTLAB_REHEARSAL_E2E (config names,
# space-separated) runs others instead, e.g. "minorsft dtm" (~5 min each). `make rehearsal` runs one locally, without
# Slurm.
END_TO_END = os.environ.get("SFTLAB_REHEARSAL_E2E", "all").split()

#: nltk's punkt_tab in nltk's layout (IFEval's sentence counts), standing in for what the preflight fetches on a
#: login node: scoring never downloads it (all.yaml's first run through Slurm here found no copy on the machine)
NLTK_FIXTURE = ROOT / "tests" / "fixtures" / "nltk_data"

#: the whole run's limit (all.yaml: ~35 min on CI's 2 cores beside the rest of the suite)
RUN_TIMEOUT_S = 5400


def slurm_up() -> bool:
    return shutil.which("sbatch") is not None and subprocess.run(
        [str(ROOT / ".ci" / "slurm-up.sh"), "--check"], capture_output=True).returncode == 0


def rehearsal_env(workdir: Path) -> dict[str, str]:
    """As on an offline compute node: the network guard in every Python process (jobs inherit it through sbatch's
    exported environment), the hub offline, the datasets cache inside the run, nltk's data from the fixture; the
    judge's key as usual."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(workdir / ".cache" / "datasets"), "OPENAI_API_KEY": "rehearsal-key",
            "NLTK_DATA": str(NLTK_FIXTURE), "PYTHONPATH": os.pathsep.join([str(OFFLINE_GUARD), str(ROOT / "src")])}


class RehearsalRun:
    """One paper config's rehearsal in ``workdir``: planned, then run through the Slurm profile in a child process,
    its judge a local server in this process; ``result()`` waits for it and plans once more."""

    def __init__(self, paper: str, workdir: Path):
        self.paper, self.workdir = paper, Path(workdir)
        self.judge = OpenAIStub(api_key="rehearsal-key", responder=rehearsal_responder)
        self.process = None
        self._result = None
        self._judging = False

    def _snakemake(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(self.workdir),
                "--configfile", str(PAPERS[self.paper]), "--config",
                f"rehearsal={{judge_url: {self.judge.base_url}}}", "--profile", "slurm", *extra]

    def _plan(self) -> subprocess.CompletedProcess:
        return subprocess.run(self._snakemake("-n"), cwd=ROOT, capture_output=True, text=True,
                              env=rehearsal_env(self.workdir), timeout=600)

    def start(self) -> "RehearsalRun":
        self.judge.__enter__()
        self._judging = True
        self.dry = self._plan()
        if self.dry.returncode == 0:
            # the profile as users use it, with CI's overrides (as tests/test_slurm.py): no account, squeue for
            # status, sooner status checks, no retries (a failure is the finding), a short latency wait
            self.log = (self.workdir / "rehearsal.log").open("w")
            self.process = subprocess.Popen(
                self._snakemake("--slurm-no-account", "--slurm-status-command", "squeue",
                                "--slurm-init-seconds-before-status-checks", "5", "--latency-wait", "10",
                                "--retries", "0"),
                cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True, env=rehearsal_env(self.workdir))
        return self

    def result(self) -> tuple:
        """(workdir, the plan's output, the run's output and exit status, the second plan, judge completions)."""
        if self._result is None:
            if self.process is None:
                self.stop()
                raise AssertionError(f"{self.paper}: the rehearsal's plan failed\n{self.dry.stderr[-3000:]}")
            try:
                code = self.process.wait(timeout=RUN_TIMEOUT_S)
            finally:
                self.stop()
            output = (self.workdir / "rehearsal.log").read_text()
            again = self._plan()
            self._result = (self.workdir, self.dry.stdout, output, code, again, self.judge.completions)
        return self._result

    def stop(self) -> None:
        """Stop the run (Snakemake cancels its Slurm jobs on SIGTERM) and the judge."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._judging:
            self.judge.__exit__(None, None, None)
            self._judging = False

    def judges(self) -> set:
        return {b.get("judge") for b in yaml.safe_load(PAPERS[self.paper].read_text()).get("benchmarks", {})
                .values()} - {None}


#: runs started by tests/conftest.py, by paper
STARTED: dict[str, RehearsalRun] = {}
