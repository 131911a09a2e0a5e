"""Warmup checkpoints for LESS/ROSE: the LoRA adapter, Adam moments keyed by parameter name, the epoch's mean lr.

``WarmupCheckpointCallback`` is a ``transformers.TrainerCallback``; at the end of epoch e it writes
``{output_dir}/checkpoint-{e}/`` (e = 1, 2, ...) atomically, holding

- the adapter (``adapter_config.json``, ``adapter_model.safetensors``, peft ``save_pretrained``),
- ``adam_moments.safetensors``: ``exp_avg.{name}`` and ``exp_avg_sq.{name}`` for every trainable parameter,
  ``name`` as in the PeftModel's ``named_parameters`` (LESS keyed them by optimizer index, which breaks
  silently whenever the parameter order changes),
- ``warmup_epoch.json``: ``{"epoch", "global_step", "n_steps", "mean_lr", "betas", "eps"}`` — ``mean_lr`` is the
  mean of the learning rates the optimizer stepped with during the epoch (the influence weight w_e).

Only the main process writes (DDP replicates the optimizer state; sharded optimizers such as ZeRO or FSDP
are not supported and raise).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from sftlab.io import atomic_path

MOMENTS_FILE = "adam_moments.safetensors"
EPOCH_FILE = "warmup_epoch.json"


def _inner_optimizer(optimizer):
    """The torch optimizer behind accelerate's ``AcceleratedOptimizer`` wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def adam_moments_by_name(model: torch.nn.Module, optimizer) -> dict[str, torch.Tensor]:
    """``{"exp_avg.{name}": ..., "exp_avg_sq.{name}": ...}`` for the model's trainable parameters."""
    optimizer = _inner_optimizer(optimizer)
    tensors = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        state = optimizer.state.get(param, {})
        if "exp_avg" not in state or "exp_avg_sq" not in state:
            raise ValueError(
                f"optimizer {type(optimizer).__name__} has no Adam moments for {name!r}: "
                "the warmup needs Adam/AdamW on unsharded parameters"
            )
        if state["exp_avg"].shape != param.shape:
            raise ValueError(f"Adam moments of {name!r} have shape {tuple(state['exp_avg'].shape)}, "
                             f"parameter {tuple(param.shape)}: sharded optimizer states are not supported")
        tensors[f"exp_avg.{name}"] = state["exp_avg"].detach().to("cpu", torch.float32).contiguous()
        tensors[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].detach().to("cpu", torch.float32).contiguous()
    return tensors


class WarmupCheckpointCallback(TrainerCallback):
    """Save adapter + Adam moments + mean lr at the end of every epoch (see the module docstring)."""

    def __init__(self, output_dir: str | Path | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self._epoch_lrs: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_lrs = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # called after optimizer.step() and before lr_scheduler.step(): this is the lr the step used
        self._epoch_lrs.append(float(_inner_optimizer(optimizer).param_groups[0]["lr"]))

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if not self._epoch_lrs:
            raise RuntimeError("an epoch ended without an optimizer step; cannot record its learning rate")
        epoch = round(state.epoch)
        out = (self.output_dir or Path(args.output_dir)) / f"checkpoint-{epoch}"
        group = _inner_optimizer(optimizer).param_groups[0]
        info = {
            "epoch": epoch,
            "global_step": state.global_step,
            "n_steps": len(self._epoch_lrs),
            "mean_lr": sum(self._epoch_lrs) / len(self._epoch_lrs),
            "betas": list(group.get("betas", (0.9, 0.999))),
            "eps": group.get("eps", 1e-8),
        }
        moments = adam_moments_by_name(model, optimizer)
        with atomic_path(out) as tmp:
            model.save_pretrained(tmp)
            save_file(moments, str(tmp / MOMENTS_FILE))
            (tmp / EPOCH_FILE).write_text(json.dumps(info, indent=2) + "\n")


def load_moments(checkpoint: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (exp_avg, exp_avg_sq)}`` from a warmup checkpoint directory."""
    path = Path(checkpoint) / MOMENTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no Adam moments in warmup checkpoint: {path}")
    tensors = load_file(str(path))
    names = [key.removeprefix("exp_avg.") for key in tensors if key.startswith("exp_avg.")]
    unpaired = [n for n in names if f"exp_avg_sq.{n}" not in tensors]
    if unpaired or len(names) * 2 != len(tensors):
        raise ValueError(f"{path}: exp_avg and exp_avg_sq entries do not pair up ({unpaired[:3]})")
    return {n: (tensors[f"exp_avg.{n}"], tensors[f"exp_avg_sq.{n}"]) for n in names}


def load_epoch_info(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / EPOCH_FILE
    if not path.exists():
        raise FileNotFoundError(f"no epoch record in warmup checkpoint: {path}")
    info = json.loads(path.read_text())
    for key in ("mean_lr", "betas"):
        if key not in info:
            raise KeyError(f"{path}: lacks {key!r}")
    return info


def checkpoint_weights(checkpoints: list[str | Path]) -> list[float]:
    """w_i = mean lr of epoch i, normalised to sum 1, in the order given."""
    lrs = [float(load_epoch_info(c)["mean_lr"]) for c in checkpoints]
    total = sum(lrs)
    if not total > 0:
        raise ValueError(f"learning rates of {list(map(str, checkpoints))} sum to {total}; cannot weight checkpoints")
    return [lr / total for lr in lrs]
