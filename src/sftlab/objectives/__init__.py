"""Objectives (the per-batch loss axis). Importing this package registers every objective."""

from .base import OBJECTIVES, Objective, build_objective, register_objective, sequence_logps, token_logps
from . import ntp  # noqa: F401  (registers "ntp")

__all__ = ["OBJECTIVES", "Objective", "build_objective", "register_objective", "sequence_logps", "token_logps"]
