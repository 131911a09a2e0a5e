"""The workflow's jobs as Snakemake itself plans them: the DAG of a Snakefile, its config files and ``--config``
overrides, built through Snakemake's Python API (no lock, nothing executed), every job with its rule, wildcards,
benchmark file, outputs, GPU request and the jobs it depends on — finished jobs included.

A rule's ``benchmark:`` file carries the cost phase its jobs count under (``phase_benchmark``), declared once in the
rule itself; the cost report reads it from here instead of keeping a list of rules beside the workflow.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from snakemake.io import flag, get_flag_value

#: the phases of the cost report, in report order
PHASES = ("setup", "method preparation", "training", "evaluation", "figures")
PHASE_FLAG = "cost_phase"


def phase_benchmark(phase: str, path: str):
    """A rule's ``benchmark:`` path tagged with the cost phase its jobs count under (one of PHASES)."""
    if phase not in PHASES:
        raise ValueError(f"unknown cost phase {phase!r} for benchmark {path}; one of {', '.join(PHASES)}")
    return flag(path, PHASE_FLAG, phase)


@dataclass(frozen=True)
class DagJob:
    """One job of the DAG. ``dependencies`` are indices into the same job list."""

    rule: str
    wildcards: dict[str, str]
    benchmark: str | None
    phase: str | None
    outputs: tuple[str, ...]
    temp_outputs: tuple[str, ...]
    gpus: int
    dependencies: tuple[int, ...]


def _phase(rule) -> str | None:
    if rule.benchmark is None:
        return None
    value = get_flag_value(rule.benchmark, PHASE_FLAG)
    return value if isinstance(value, str) else None


def dag_jobs(dag, rule_order: list[str]) -> list[DagJob]:
    """The jobs of a built Snakemake DAG, in rule definition order, then by wildcards."""
    order = {name: i for i, name in enumerate(rule_order)}
    jobs = sorted(dag.jobs, key=lambda j: (order[j.rule.name], sorted(j.wildcards_dict.items())))
    index = {job: i for i, job in enumerate(jobs)}
    out = []
    for job in jobs:
        benchmark = job.benchmark
        out.append(DagJob(
            rule=job.rule.name,
            wildcards={k: str(v) for k, v in job.wildcards_dict.items()},
            benchmark=str(benchmark) if benchmark is not None else None,
            phase=_phase(job.rule),
            outputs=tuple(str(o) for o in job.output if not o.is_temp),
            temp_outputs=tuple(str(o) for o in job.output if o.is_temp),
            gpus=int(job.resources.get("gpu", 0)),
            dependencies=tuple(sorted(index[d] for d in dag.dependencies[job])),
        ))
    return out


@contextmanager
def _workflow(snakefile: str | Path, configfiles: list[str], config: dict | None, workdir: str | Path):
    """The parsed workflow (Snakefile with its config files and overrides) through Snakemake's API, quietly."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    here = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, enable_file_logging=False)) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(config=dict(config or {}), configfiles=[Path(f) for f in configfiles]),
                snakefile=Path(snakefile), workdir=Path(workdir))
            workflow_api.dag(DAGSettings())  # attaches the DAG settings to the workflow
            yield workflow_api._workflow  # noqa: SLF001 - the API hands out no workflow object of its own
    finally:
        os.chdir(here)  # the workflow API changes into workdir


def workflow_jobs(snakefile: str | Path, configfiles: list[str], config: dict | None = None,
                  workdir: str | Path = ".") -> list[DagJob]:
    """Every job of the workflow's default target, as ``snakemake -n`` with these config files and overrides would
    plan it in ``workdir`` — including the jobs that have finished (the DAG keeps them; only `needrun` drops them).

    Built like Snakemake's own ``--summary``: the DAG is prepared without a lock and incomplete files are ignored, so
    this can run inside a job of the same workflow while the workflow holds its lock."""
    with _workflow(snakefile, configfiles, config, workdir) as workflow:
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)  # noqa: SLF001
        workflow._build_dag()  # noqa: SLF001
        return dag_jobs(workflow.dag, [rule.name for rule in workflow.rules])


def benchmark_phases(snakefile: str | Path, configfiles: list[str], config: dict | None = None,
                     workdir: str | Path = ".") -> dict[str, str | None]:
    """Rule → the cost phase tagged on its ``benchmark:`` (None where untagged), for every rule with a benchmark."""
    with _workflow(snakefile, configfiles, config, workdir) as workflow:
        return {rule.name: _phase(rule) for rule in workflow.rules if rule.benchmark is not None}


#: help of a report script's --workflow argument (the rule passes PLAN.workflow_json, sftlab.plan.core)
WORKFLOW_HELP = "JSON: the run's snakefile, configfiles and config (--config overrides), to rebuild its DAG"


def run_jobs(workflow: str) -> list[DagJob]:
    """``workflow_jobs`` of the run that ``workflow`` (JSON ``{"snakefile", "configfiles", "config"}``) names, in the
    current directory (a job runs in the workflow's working directory)."""
    run = json.loads(workflow)
    return workflow_jobs(run["snakefile"], run["configfiles"], run["config"])
