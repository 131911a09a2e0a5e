"""Where a run through `--profile slurm` spent its time, read from what it leaves: the kept job logs
(`.snakemake/slurm_logs/`, the profile keeps them) and, where readable, slurmctld's log.

A Slurm job runs Snakemake twice before its rule: the batch script's Snakemake (the job-step executor) parses the
Snakefile, builds the job's DAG and starts `srun`, whose Snakemake parses and builds again, then runs the rule. Per job,
from the timestamps the two Snakemakes print (to the second; each prints its banner after its own imports, about a
second that no column counts):
  step      outer banner -> inner banner: the outer parse and DAG, srun, the inner interpreter's imports
  parse     inner banner -> rule start: the inner parse and DAG
  rule      the rule's own command
  after     rule end -> the outer Snakemake's end (outputs checked, metadata written)
From slurmctld's log (`--slurmctld-log`, CI's cluster writes /var/tmp/sftlab-slurm/log/slurmctld.log): the seconds with
0, 1, 2, ... CPUs allocated between the first job's start and the last job's end (is the cluster kept busy?).

    python bench/slurm_jobs.py RUN_DIR [--slurmctld-log FILE]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

BANNER = re.compile(r"^\s*Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.M)
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.M)
PHASES = ("step", "parse", "rule", "after")


def job_phases(log: str) -> dict | None:
    """The phases of one job from its kept Slurm log, in seconds, with its start; None for a log without both
    Snakemakes' banners and the four time stamps (rule submitted, rule started, rule done, job done) of a job that ran."""
    banners = [datetime.fromisoformat(m) for m in BANNER.findall(log)]
    stamps = [datetime.strptime(m, "%a %b %d %H:%M:%S %Y") for m in STAMP.findall(log)]
    if len(banners) < 2 or len(stamps) < 4:
        return None
    outer, inner = banners[:2]
    rule_start, rule_end, end = stamps[1], stamps[2], stamps[-1]
    seconds = [(inner - outer), (rule_start - inner), (rule_end - rule_start), (end - rule_end)]
    return {"start": outer, "end": end, **{k: s.total_seconds() for k, s in zip(PHASES, seconds)}}


def cpu_occupancy(lines, since: datetime, until: datetime) -> dict[int, float]:
    """Seconds with n CPUs allocated, {n: seconds}, between two times, from slurmctld's allocation and completion
    lines (a job started by the backfill scheduler, whose line names no CPU count, counts one)."""
    events, cpus = [], {}
    for line in lines:
        m = re.match(r"\[(\S+)\] (.*)", line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1).split(".")[0])
        if not since <= t <= until:
            continue
        if a := re.search(r"Allocate JobId=(\d+) .*#CPUs=(\d+)", m.group(2)):
            cpus[a.group(1)] = int(a.group(2))
            events.append((t, 1, a.group(1)))
        elif a := re.search(r"Started JobId=(\d+)", m.group(2)):
            cpus.setdefault(a.group(1), 1)
            events.append((t, 1, a.group(1)))
        elif c := re.search(r"_job_complete: JobId=(\d+) done", m.group(2)):
            events.append((t, -1, c.group(1)))
    held, used, last, live = defaultdict(float), 0, since, set()
    for t, kind, job in sorted(events):
        held[used] += (t - last).total_seconds()
        last = t
        if kind > 0:
            live.add(job)
            used += cpus[job]
        elif job in live:
            live.discard(job)
            used -= cpus[job]
    held[used] += (until - last).total_seconds()
    return dict(sorted(held.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--slurmctld-log", type=Path)
    args = ap.parse_args()
    jobs = defaultdict(list)
    for log in (args.run_dir / ".snakemake" / "slurm_logs").rglob("*.log"):
        rule = log.relative_to(args.run_dir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        if (phases := job_phases(log.read_text(errors="replace"))) is not None:
            jobs[rule].append(phases)
    every = [j for rows in jobs.values() for j in rows]
    if not every:
        sys.exit(f"no finished Slurm job logs under {args.run_dir}/.snakemake/slurm_logs")
    since, until = min(j["start"] for j in every), max(j["end"] for j in every)
    print(f"{len(every)} jobs, {(until - since).total_seconds():.0f} s from the first job's start to the last's end")
    print(f"{'rule':28s} {'jobs':>5s} " + " ".join(f"{p + ' (s)':>9s}" for p in PHASES))
    for rule, rows in sorted(jobs.items(), key=lambda item: -len(item[1])) + [("all (mean)", every)]:
        print(f"{rule:28s} {len(rows):5d} " + " ".join(f"{statistics.mean(r[p] for r in rows):9.1f}" for p in PHASES))
    if args.slurmctld_log:
        with open(args.slurmctld_log, errors="replace") as lines:
            held = cpu_occupancy(lines, since, until)
        total = sum(held.values())
        print("CPUs allocated: " + ", ".join(f"{n}: {s:.0f} s ({s / total:.0%})" for n, s in held.items()))


if __name__ == "__main__":
    main()
