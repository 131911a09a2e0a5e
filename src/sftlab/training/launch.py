"""How a training script is started: plain ``python`` for one process, ``accelerate launch`` for several.

The workflow's ``launcher(stage)`` (sftlab.plan.core) turns a job's GPUs into a process count and calls
``launch_prefix``; the accelerate configs live in ``configs/accelerate/`` (DDP, FSDP full-shard, DeepSpeed ZeRO-3).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "accelerate"
MODES = ("ddp", "fsdp", "deepspeed")


def require_deepspeed() -> None:
    """DeepSpeed is not a pinned dependency: say so plainly instead of failing inside accelerate."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ModuleNotFoundError("training.distributed: deepspeed is selected but the deepspeed package is not "
                                  "installed in this environment (pip install deepspeed, built for torch's CUDA)")


def launch_prefix(processes: int, mode: str = "ddp", config_dir: Path = CONFIG_DIR, python: str = "python") -> list[str]:
    """The command words before the script: ``[python]`` for one process, else ``accelerate launch`` with
    ``processes`` processes on this node under ``mode`` (a free port each time: jobs may share a node)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return [python]
    if mode not in MODES:
        raise ValueError(f"training.distributed: {mode!r} is not one of {list(MODES)}")
    if mode == "deepspeed":
        require_deepspeed()
    config_dir = Path(config_dir)
    words = [python, "-m", "accelerate.commands.launch", "--config_file", str(config_dir / f"{mode}.yaml"),
             "--num_processes", str(processes), "--num_machines", "1", "--main_process_port", "0"]
    if mode == "deepspeed":
        words += ["--deepspeed_config_file", str(config_dir / "zero3.json")]
    return words
