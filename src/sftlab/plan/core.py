"""The plan's config look-ups, run directories, resources and the cluster's checks, code fingerprints."""

from __future__ import annotations


class CorePlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""
