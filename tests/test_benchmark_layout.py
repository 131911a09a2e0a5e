"""One place per benchmark type: its protocol (the registered class) and its scoring in one module of
sftlab.benchmarks; sftlab.evaluation holds only what the types share, under names no type module has."""

from pathlib import Path

from sftlab.benchmarks import BENCHMARK_TYPES

SRC = Path(__file__).resolve().parents[1] / "src" / "sftlab"


def modules(package: str) -> set[str]:
    return {p.stem for p in (SRC / package).glob("*.py")} - {"__init__"}


def test_each_benchmark_type_is_one_module_and_no_shared_module_bears_a_types_name():
    types = modules("benchmarks") - {"base"}
    assert {cls.__module__ for cls in BENCHMARK_TYPES.values()} == {f"sftlab.benchmarks.{m}" for m in types}
    assert len(BENCHMARK_TYPES) == len(types)
    assert modules("evaluation") & modules("benchmarks") == set()
