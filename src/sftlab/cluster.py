"""What a Slurm cluster will honour, checked while planning: each planned job's request against the partition it
goes to (one node of it), its predicted runtime against its time limit, and the growth of its request on retries
capped at the partition's limits.

The cluster is described by a YAML file (``profiles/slurm/cluster.yaml``, filled from ``sinfo``)::

    default_partition: gpu          # the partition sinfo marks with a *: jobs that name none go there
    partitions:
      gpu: {time_limit: "2-00:00:00", mem_mb: 2000000, gpus: 8, cpus: 112}   # per node; time as Slurm writes it

A job's runtime is predicted by the project's GPU cost model (``sftlab.report.gpu_cost``); jobs it cannot price (a
CPU job, a model or pool it has no entry for) are not checked against their limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from sftlab.config import ConfigError


class ClusterError(ConfigError):
    """A request the cluster would not honour; the message names the config key (or setting) to change."""


_SLURM_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")


def slurm_minutes(value: Any) -> float:
    """Minutes of a time limit as Slurm writes it ("2-00:00:00", "48:00:00", "30", "UNLIMITED") or a number of
    minutes; ``math.inf`` for no limit."""
    if isinstance(value, bool):
        raise ValueError(f"not a time limit: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return math.inf
    m = _SLURM_TIME.match(text)
    if not m:
        raise ValueError(f"not a Slurm time limit: {value!r}")
    parts = [int(p) for p in m.group("rest").split(":")]
    if m.group("days") is not None:
        # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return int(m.group("days")) * 1440 + hours * 60 + minutes + seconds / 60
    # minutes, minutes:seconds, hours:minutes:seconds
    if len(parts) == 3:
        return parts[0] * 60 + parts[1] + parts[2] / 60
    return parts[0] + (parts[1] / 60 if len(parts) == 2 else 0)


def hours(minutes: float) -> str:
    return f"{minutes / 60:.1f} h"


@dataclass(frozen=True)
class Partition:
    """One partition: its time limit (minutes) and what one of its nodes has."""

    name: str
    time_limit: float
    mem_mb: int
    gpus: int
    cpus: int


@dataclass(frozen=True)
class Cluster:
    path: str
    partitions: Mapping[str, Partition]
    default: str | None

    def partition(self, name: str | None, setting: str) -> Partition:
        """The partition a job goes to: ``name`` (from ``setting``, an environment variable), else the default."""
        chosen = name or self.default
        if chosen is None:
            raise ClusterError(f"{self.path}: no default_partition, and {setting} is not set: which partition the "
                               f"jobs go to is unknown")
        if chosen not in self.partitions:
            where = f"{setting}={name}" if name else f"default_partition {chosen!r}"
            raise ClusterError(f"{where}: no partition {chosen!r} in the cluster description {self.path} "
                               f"(it has {', '.join(sorted(self.partitions))})")
        return self.partitions[chosen]


PARTITION_KEYS = {"time_limit", "mem_mb", "gpus", "cpus"}


def load_cluster(path: str | Path) -> Cluster:
    """The cluster description at ``path``; a missing or malformed entry raises naming the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterError(f"cluster description {path}: {exc.strerror}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("partitions"), dict) or not raw["partitions"]:
        raise ClusterError(f"{path}: expected a mapping `partitions:` of partition name → "
                           f"{{{', '.join(sorted(PARTITION_KEYS))}}}")
    unknown = set(raw) - {"partitions", "default_partition"}
    if unknown:
        raise ClusterError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    partitions = {}
    for name, spec in raw["partitions"].items():
        where = f"{path}: partitions.{name}"
        if not isinstance(spec, dict) or set(spec) != PARTITION_KEYS:
            raise ClusterError(f"{where}: give exactly {', '.join(sorted(PARTITION_KEYS))} (per node)")
        try:
            limit = slurm_minutes(spec["time_limit"])
        except ValueError as exc:
            raise ClusterError(f"{where}.time_limit: {exc}") from None
        for key in ("mem_mb", "gpus", "cpus"):
            if isinstance(spec[key], bool) or not isinstance(spec[key], int) or spec[key] < 0:
                raise ClusterError(f"{where}.{key}: a count, got {spec[key]!r}")
        partitions[name] = Partition(name, limit, spec["mem_mb"], spec["gpus"], spec["cpus"])
    default = raw.get("default_partition")
    if default is not None and default not in partitions:
        raise ClusterError(f"{path}: default_partition {default!r} is not among the partitions")
    return Cluster(str(path), partitions, default)


@dataclass(frozen=True)
class Request:
    """A job's first-attempt request, from ``resources.<stage>`` (``runtime`` in minutes; ``cpus`` of the whole
    job: CPUs per GPU × GPUs for a GPU job, as the Slurm executor submits it)."""

    stage: str
    gpus: int
    cpus: int
    mem_mb: int
    runtime: float


def check_fits(request: Request, partition: Partition, description: str) -> None:
    """A job needs one node: its GPUs, CPUs and memory within one node of its partition, its time within the
    partition's limit."""
    key = f"config key resources.{request.stage}"
    where = f"partition {partition.name} ({description})"
    if request.gpus > partition.gpus:
        raise ClusterError(f"{key}.gpus: {request.gpus} GPUs on one node; a node of {where} has {partition.gpus}")
    if request.cpus > partition.cpus:
        raise ClusterError(f"{key}.cpus: {request.cpus} CPUs on one node; a node of {where} has {partition.cpus}")
    if request.mem_mb > partition.mem_mb:
        raise ClusterError(f"{key}.mem_mb: {request.mem_mb} MB on one node; a node of {where} has "
                           f"{partition.mem_mb} MB")
    if request.runtime > partition.time_limit:
        raise ClusterError(f"{key}.runtime: {request.runtime:g} min is over the time limit of {where}, "
                           f"{partition.time_limit:g} min")


def grown(value: float, attempt: int, limit: float | None = None) -> int:
    """A request on retry ``attempt`` (1, 2, ...): ``value`` × attempt, capped at ``limit`` (the partition's)."""
    out = value * attempt
    return int(out if limit is None else min(out, limit))


def checkpoint_seconds(cost, model: str, dataset: str, training: Mapping, gpus: int, objective: str) -> float:
    """Wall seconds of a training job between two checkpoints (``save_steps`` steps of its global batch) on
    ``gpus`` GPUs, plus its start-up: what one attempt must fit for a resumed run to make progress."""
    processes = max(1, gpus)
    global_batch = training["batch_size"] * training.get("gradient_accumulation", 1) * processes
    one_pass = {**training, "epochs": 1}
    seconds = cost.training_seconds(model, dataset, one_pass, training["save_steps"] * global_batch, gpus, objective)
    return seconds / processes + 60 * cost.a["startup_minutes"]


@dataclass(frozen=True)
class Resumable:
    """How a training rule's job resumes from its checkpoints: its training settings (``save_steps`` among them)
    and objective name, each a function of the job's wildcards."""

    training: Callable[[Any], Mapping]
    objective: Callable[[Any], str] = lambda wildcards: "ntp"


def check_runtime(request: Request, rule: str, wildcards: Mapping[str, str], cost,
                  resumed: tuple[Mapping, str] | None = None) -> None:
    """A job the cost model prices must fit its time limit (``resources.<stage>.runtime``): the whole job if it
    cannot resume, else the stretch between two checkpoints, since a rerun continues from the last one (``resumed``:
    the job's training settings and objective name). Nothing is checked where the cost model has no price (a CPU
    job; a model or pool missing from gpu_cost.yaml)."""
    if request.gpus == 0:
        return
    try:
        minutes = cost.job_seconds(rule, wildcards, request.gpus) / request.gpus / 60
        if minutes and resumed is not None:
            training, objective = resumed
            minutes = min(minutes, checkpoint_seconds(cost, wildcards["model"], wildcards["dataset"], training,
                                                      request.gpus, objective) / 60)
    except KeyError:
        return
    if minutes <= request.runtime:
        return
    what = f"rule {rule} ({_wildcards(wildcards)}) is predicted to take {hours(minutes)}"
    if resumed is None:
        raise ClusterError(f"config key resources.{request.stage}.runtime: {request.runtime:g} min, but {what} on "
                           f"{request.gpus} GPU(s) (sftlab.report.gpu_cost) and cannot resume; ask for more time "
                           f"(within the partition's limit) or more GPUs")
    raise ClusterError(f"config key resources.{request.stage}.runtime: {request.runtime:g} min, but {what} between "
                       f"two checkpoints (save_steps) on {request.gpus} GPU(s) (sftlab.report.gpu_cost): a rerun "
                       f"would never get past the last one; ask for more time or save more often")


def _wildcards(wildcards: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in wildcards.items())


def check_model_gpu(request: Request, rule: str, config: Mapping) -> None:
    """A rule that runs a model gets a GPU wherever the config gives GPUs to any stage: a stage left out of
    ``resources`` falls to ``resources.default`` (CPU-only in the paper configs) and would run a 7B model there."""
    if request.gpus:
        return
    with_gpus = sorted(stage for stage, r in config.get("resources", {}).items() if r.get("gpus"))
    if with_gpus:
        raise ClusterError(f"config key resources.{request.stage}.gpus: rule {rule} runs a model, but stage "
                           f"{request.stage} asks for no GPU while {', '.join(with_gpus)} do; set "
                           f"resources.{request.stage}.gpus")
