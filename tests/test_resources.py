"""Job requests from `res(stage)` (PLAN.res, sftlab.plan.core) under Snakemake's retries: memory and wall time grow
with the attempt, the GPU count does not."""

from __future__ import annotations

import subprocess
import sys

import yaml

from _train_cli import ROOT, env

TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())

# a one-rule workflow on the project's common.smk whose job fails on its first attempt
PROBE = '''
import sys
from pathlib import Path

ROOT = Path({root!r})
sys.path.insert(0, str(ROOT / "src"))

configfile: "config.yaml"

include: str(ROOT / "workflow" / "rules" / "common.smk")

rule probe:
    output: "probe.txt"
    resources: **PLAN.res("train", model=True)
    shell: "echo {{resources.gpu}} {{resources.cpus_per_gpu}} {{resources.mem_mb}} {{resources.runtime}} >> attempts.txt; "
           "test -e failed_once || {{{{ touch failed_once; exit 1; }}}}; cp attempts.txt {{output}}"
'''


def test_memory_and_runtime_grow_with_each_retry(tmp_path):
    cfg = {**TINY, "resources": {"train": {"cpus": 4, "gpus": 2, "mem_mb": 3000, "runtime": 45}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "Snakefile").write_text(PROBE.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "1", "--retries", "2", "probe.txt"],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    attempts = [line.split() for line in (tmp_path / "probe.txt").read_text().splitlines()]
    # gpu, cpus_per_gpu, mem_mb, runtime of attempt 1, then attempt 2
    assert attempts == [["2", "2", "3000", "45"], ["2", "2", "6000", "90"]]
