"""The plan's exams, generation, judges and calibrations."""

from __future__ import annotations


class BenchmarkPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""
