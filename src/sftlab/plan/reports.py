"""The plan's tables, figures, mechanisms, the methods' reports and the cost report."""

from __future__ import annotations


class ReportPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""
