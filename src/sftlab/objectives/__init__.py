"""Objectives (the per-batch loss axis). Importing this package registers every objective."""

from .base import OBJECTIVES, Objective, build_objective, register_objective, sequence_logps, token_logps
from . import ntp  # noqa: F401  (registers "ntp")
from . import minorsft  # noqa: F401  (registers "minorsft", "dpo_sft")
from . import sftmix  # noqa: F401  (registers "sftmix")

__all__ = ["OBJECTIVES", "Objective", "build_objective", "register_objective", "sequence_logps", "token_logps"]
