"""Objectives (the per-batch loss axis). Importing this package registers every objective."""

from .base import (BASELINE_OBJECTIVE, OBJECTIVES, REFERENCE_COLUMN, Objective, build_objective, objective_label,
                   paper_objectives, reference_objectives, register_objective, sequence_logps, token_logps)
from . import ntp  # noqa: F401  (registers "ntp")
from . import minorsft  # noqa: F401  (registers "minorsft", "dpo_sft")
from . import sftmix  # noqa: F401  (registers "sftmix")

__all__ = ["BASELINE_OBJECTIVE", "OBJECTIVES", "REFERENCE_COLUMN", "Objective", "build_objective", "objective_label",
           "paper_objectives", "reference_objectives", "register_objective", "sequence_logps", "token_logps"]
