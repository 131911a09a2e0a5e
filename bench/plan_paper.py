"""Planning time at paper scale: `snakemake -n --profile profiles/slurm --configfile configs/paper/<each>.yaml`.

Each dry run is a fresh process, offline, in an empty working directory (nothing built yet: every job is planned),
timed by wall clock and by the CPU time (user + system) of the process and its children — on a shared machine the
wall clock includes waiting for a core, the CPU time does not. Also timed, to show where the time goes: starting
Python with Snakemake (`snakemake --version`), importing the sftlab modules the workflow's rule files import, and
`scontrol show config`, which the Slurm executor plugin runs when Snakemake loads it (every snakemake command, even
`--version`): instant on a cluster, up to its 10 s timeout where Slurm's tools are installed but no controller answers.

The four-paper grid configs/paper/all.yaml (else the largest config) is timed ``--repeat`` times, best kept;
goal: under 10 s. Without configs/paper/ the test fixture tests/fixtures/paper_plan.yaml stands in.
Usage: ``python bench/plan_paper.py [--repeat 3] [configs ...]``.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _plan import FIXTURE, PAPER_CONFIGS, ROOT, job_counts, offline_env, plan  # noqa: E402

GOAL_S = 10.0
ALL_PAPERS = ROOT / "configs" / "paper" / "all.yaml"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the child processes, result)."""
    start, cpu = time.perf_counter(), children_cpu()
    out = fn()
    return time.perf_counter() - start, children_cpu() - cpu, out


def plan_once(configfile: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as workdir:
        wall, cpu, proc = timed(lambda: plan(configfile, Path(workdir)))
    if proc.returncode != 0:
        raise SystemExit(f"{configfile}: the dry run failed\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall, cpu, sum(job_counts(proc.stdout + proc.stderr).values())


def python_seconds(code: list[str]) -> str:
    wall, cpu, _ = timed(lambda: subprocess.run([sys.executable, *code], capture_output=True, env=offline_env()))
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU"


def workflow_imports() -> str:
    """``import ...`` of every sftlab module the Snakefile's rule files import while planning."""
    modules = sorted({m for f in (ROOT / "workflow" / "rules").glob("*.smk")
                      for m in re.findall(r"^from (sftlab[\w.]*) import", f.read_text(), flags=re.M)})
    return "import " + ", ".join(modules)


def slurm_probe_seconds() -> float:
    """Wall seconds of the plugin's `scontrol show config` (0 without Slurm's tools: the plugin skips it)."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return 0.0
    wall, _, _ = timed(lambda: subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30))
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("configs", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    configs = args.configs or PAPER_CONFIGS or [FIXTURE]

    print(f"python + snakemake (snakemake --version):        {python_seconds(['-m', 'snakemake', '--version'])}")
    print(f"python + the sftlab modules the rules import:   {python_seconds(['-c', workflow_imports()])}")
    probe = slurm_probe_seconds()
    print(f"the Slurm plugin's probe (scontrol show config): {probe:.2f} s wall")
    results = {c: plan_once(c) for c in configs}
    target = ALL_PAPERS if ALL_PAPERS in results else max(results, key=lambda c: results[c][2])
    runs = [results[target]] + [plan_once(target) for _ in range(args.repeat - 1)]
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"\n{'config':<40} {'jobs':>6} {'wall (s)':>9} {'CPU (s)':>8}")
    for config, (w, c, jobs) in results.items():
        print(f"{config.name:<40} {jobs:>6} {w:>9.2f} {c:>8.2f}")
    verdict = "within" if wall < GOAL_S else "OVER"
    print(f"\n{target.name}: {results[target][2]} jobs planned in {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(best of {args.repeat}; goal < {GOAL_S:.0f} s wall: {verdict})")
    if probe > 1.0:
        print(f"without the Slurm probe, which a cluster answers at once: {wall - probe:.2f} s wall "
              f"({'within' if wall - probe < GOAL_S else 'OVER'} the goal)")


if __name__ == "__main__":
    main()
