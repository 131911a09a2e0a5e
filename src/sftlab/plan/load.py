"""The workflow's config, read once where the Snakefile is parsed: checked, its rehearsal applied, local paths resolved."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from sftlab import rehearsal
from sftlab.config import CHECKED_ENV, ConfigError, check_local_files, check_shards_fit, config_digest, prepare, read_yaml
from sftlab.data.prepare import pool_bound


def recorded_path(path) -> str:
    """A workflow path as jobs record it (inputs, params): relative to the working directory when inside it, so that a
    project copied or moved with its results (`cp -a`) keeps its records; absolute otherwise, so that a results tree
    moved on its own keeps them too."""
    rel = os.path.relpath(path)
    return str(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def workflow_path(path, root: Path) -> str:
    """Relative config paths: the working directory's if the path exists there, else the workflow's (``root``)."""
    p = Path(path)
    try:
        here = p.is_absolute() or p.exists()
    except OSError:  # a name too long for the file system: check_local_files names its key
        here = True
    return str(p) if here else recorded_path(Path(root) / p)


def resolve_paths(cfg: dict, root: Path) -> None:
    """Resolve, in place, the config's local paths: benchmark data and includes, local datasets and models, judges."""
    for bench in cfg["benchmarks"].values():
        for key in ("data_dir", "include_path"):
            if key in bench:
                bench[key] = workflow_path(bench[key], root)
        if "data_dir" in bench.get("calibration", {}):
            bench["calibration"]["data_dir"] = workflow_path(bench["calibration"]["data_dir"], root)
    for entry in [*cfg["datasets"].values(), *cfg["models"].values()]:
        if entry["source"] == "local":
            entry["path"] = workflow_path(entry["path"], root)
    for judge in cfg["judges"].values():
        if judge["type"] == "hf" and judge["model"] not in cfg["models"]:
            judge["model"] = workflow_path(judge["model"], root)


def load(config: dict, configfiles, root: Path) -> tuple[dict, dict]:
    """(the config as Snakemake merged it, the checked config the workflow plans) of ``config`` read from
    ``configfiles``; a bad config raises a WorkflowError naming its key.

    Marks the config checked in the environment ($SFTLAB_CONFIG_CHECKED): a cluster job inherits this process's
    environment and parses the config twice more (its job step's Snakemake and srun's); the schema's passes, a
    quarter of that parse, run again only for a config the planner did not check."""
    try:
        # Snakemake's own YAML loading keeps the last of two equal keys: re-read each file with a loader that refuses them
        for configfile in configfiles:
            read_yaml(configfile)
        raw_config = copy.deepcopy(config)
        planned = rehearsal.apply(config)  # `--config rehearsal=true`: the config's rehearsal (sftlab.rehearsal)
        digest = config_digest(planned)
        cfg = prepare(planned, checked=os.environ.get(CHECKED_ENV) == digest)
        os.environ[CHECKED_ENV] = digest
        resolve_paths(cfg, root)
        check_local_files(cfg)
        check_shards_fit(cfg, {name: pool_bound(ds) for name, ds in cfg["datasets"].items()})
    except ConfigError as exc:
        raise WorkflowError(f"invalid configuration: {exc}") from None
    return raw_config, cfg
