"""bench/slurm_jobs.py: the phases of a kept Slurm job log and the cluster's CPU occupancy, on logs shaped as
Snakemake 9 and Slurm 22.05 write them (times worked out by hand)."""

import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from slurm_jobs import cpu_occupancy, job_phases  # noqa: E402

JOB_LOG = """
SNAKEMAKE
=========
  Date: 2026-12-07 16:11:25
  Command: .../snakemake --target-jobs ref_logprobs:model=m --executor slurm-jobstep --mode remote
Building DAG of jobs...
[Mon Dec  7 16:11:26 2026]
rule ref_logprobs:
    jobid: 0
srun: cluster configuration lacks support for cpu binding

SNAKEMAKE
=========
  Date: 2026-12-07 16:11:28
Building DAG of jobs...
[Mon Dec  7 16:11:29 2026]
localrule ref_logprobs:
[Mon Dec  7 16:11:36 2026]
Finished jobid: 0 (Rule: ref_logprobs)
[Mon Dec  7 16:11:38 2026]
Finished jobid: 0 (Rule: ref_logprobs)
"""


def test_a_job_logs_phases():
    phases = job_phases(JOB_LOG)
    assert {k: phases[k] for k in ("step", "parse", "rule", "after")} == {"step": 3, "parse": 1, "rule": 7, "after": 2}
    assert phases["start"] == datetime(2026, 12, 7, 16, 11, 25) and phases["end"] == datetime(2026, 12, 7, 16, 11, 38)
    # a job that failed before its rule ran (one banner) has no phases
    assert job_phases(JOB_LOG.split("srun:")[0]) is None


def test_cpu_occupancy_from_slurmctld_lines():
    lines = ["[2026-12-07T16:00:00.100] sched: Allocate JobId=1 NodeList=vm #CPUs=1 Partition=debug",
             "[2026-12-07T16:00:02.000] sched/backfill: _start_job: Started JobId=2 in debug on vm",
             "[2026-12-07T16:00:05.000] _job_complete: JobId=1 WEXITSTATUS 0",
             "[2026-12-07T16:00:05.000] _job_complete: JobId=1 done",
             "[2026-12-07T16:00:06.000] _job_complete: JobId=2 done",
             "[2026-12-07T16:00:07.000] sched: Allocate JobId=3 NodeList=vm #CPUs=2 Partition=debug",
             "[2026-12-07T16:00:09.000] _job_complete: JobId=3 done",
             "[2026-12-07T17:00:00.000] sched: Allocate JobId=4 NodeList=vm #CPUs=2 Partition=debug"]
    held = cpu_occupancy(lines, datetime(2026, 12, 7, 16, 0, 0), datetime(2026, 12, 7, 16, 0, 10))
    # 0 CPUs: 16:00:00-00, 06-07, 09-10; 1: 00-02, 05-06; 2: 02-05 (two jobs of one), 07-09
    assert held == {0: 2, 1: 3, 2: 5}
