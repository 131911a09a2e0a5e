"""Benchmark types (the evaluation axis): one module per type holding its protocol (the registered class: what it
gathers, generates and judges) and its scoring. Importing this package registers every type; the machinery the
types share (generation, judges, caches, statistics, calibration, the exams job) is ``sftlab.evaluation``."""

from .base import (BENCHMARK_TYPES, DATA_KEYS, GENERATION_KEYS, JUDGE_KEYS, BenchmarkType, benchmark_type,
                   prepare_benchmark_files, register_benchmark_type)
from . import exact_match  # noqa: F401
from . import lm_eval  # noqa: F401
from . import mtbench  # noqa: F401
from . import alpacaeval  # noqa: F401
from . import preference  # noqa: F401
from . import implicit_reward  # noqa: F401
from . import ifeval  # noqa: F401
from . import arena_hard  # noqa: F401
from . import nll  # noqa: F401

__all__ = ["BENCHMARK_TYPES", "DATA_KEYS", "GENERATION_KEYS", "JUDGE_KEYS", "BenchmarkType", "benchmark_type",
           "prepare_benchmark_files", "register_benchmark_type"]
