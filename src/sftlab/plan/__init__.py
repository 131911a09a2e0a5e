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
    planning process's checks, code fingerprints, the executor); None in unit tests.

    ``fallback``: during the move of the `.smk` functions into this package, names not yet moved resolve to the
    Snakefile's globals (removed once every function has moved)."""

    def __init__(self, cfg: dict, *, root: Path, workflow=None, fallback: dict | None = None):
        self.cfg = cfg
        self.root = Path(root)
        self.workflow = workflow
        self._fallback = fallback if fallback is not None else {}

    def __getattr__(self, name):
        try:
            return self.__dict__["_fallback"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}") from None
