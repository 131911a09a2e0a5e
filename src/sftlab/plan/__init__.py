"""Planning: what each rule's jobs read, write and ask for, as pure functions of (config, wildcards).

The `.smk` files keep rules; their input, params and resources functions are methods of one `Plan`, built once from
the checked config (`workflow/rules/common.smk`): `input: PLAN.selection_path`. Each domain is a mixin with its own
unit tests (tests/test_plan_*.py):

    core         config look-ups, run directories, resources and the cluster's checks, code fingerprints
    benchmarks   exams, generation, judges, calibrations
    selection    references, πref tables, warmup, gradients and influence, the selection baselines
    compose      shards, members and merges
    reports      tables, figures, mechanisms, the methods' reports and the cost report
"""

from __future__ import annotations

from pathlib import Path

from sftlab.plan.benchmarks import BenchmarkPlan
from sftlab.plan.compose import CompositionPlan
from sftlab.plan.core import CorePlan
from sftlab.plan.reports import ReportPlan
from sftlab.plan.selection import SelectionPlan


class Plan(CorePlan, BenchmarkPlan, SelectionPlan, CompositionPlan, ReportPlan):
    """The plan of one config. ``workflow``: Snakemake's workflow object where the plan serves a Snakefile (the
    planning process's checks, code fingerprints, the executor); None in unit tests."""

    def __init__(self, cfg: dict, *, root: Path, workflow=None):
        self.cfg = cfg
        self.root = Path(root)
        self.workflow = workflow
