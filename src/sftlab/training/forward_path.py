"""The numeric path of a training run's forward pass, so that log πref is scored exactly as the policy computes
log πθ before its first update: r = log πθ − log πref is 0 at step 0 (MinorSFT's weight σ(−β·r)·2 is 1, DPO-SFT's
σ(−β·r) is ½, the deviation m_θ starts at 0).

What a run's forward computes in depends on its settings (trainer.load_model, accelerate's mixed precision):
- full fine-tuning: float32 master weights, the forward under autocast in the training precision;
- LoRA: the frozen base loaded in the training precision (bf16 on GPUs), the adapter in float32 and zero at
  initialisation (B = 0, so the wrapped model is the base), under autocast;
- FSDP with mixed precision: parameters and buffers (RoPE's inverse frequencies included) cast to the training
  precision (``MixedPrecision(param_dtype, buffer_dtype)``), still under accelerate's autocast;
- DeepSpeed (bf16 / fp16 enabled): the whole module in that precision, no autocast (accelerate leaves it to DeepSpeed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

#: distributed modes that cast the model's parameters and buffers to the training precision
SHARDED = ("fsdp", "deepspeed")
COMPUTE = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ForwardPath:
    """``base``: dtype of the weights as loaded (LoRA's frozen base; full fine-tuning: float32);
    ``cast``: dtype parameters and buffers are cast to after loading (FSDP / DeepSpeed mixed precision), or None;
    ``autocast``: the forward's autocast dtype, or None."""

    base: torch.dtype
    cast: torch.dtype | None
    autocast: torch.dtype | None


def resolve_device_precision(precision: str, device: str) -> str:
    """``auto`` → bf16 on a GPU that has it, else fp32; an explicit precision as given (CPU autocast runs bf16 too)."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in COMPUTE:
        raise ValueError(f"training.precision: {precision!r} is not one of {['auto', *COMPUTE]}")
    return precision


def forward_path(cfg: dict, processes: int, precision: str) -> ForwardPath:
    """The forward path of a run with training settings ``cfg`` on ``processes`` processes, ``precision`` resolved."""
    compute = COMPUTE[precision]
    mode = cfg.get("distributed", "ddp") if processes > 1 else None
    if mode in SHARDED and cfg["finetuning"] == "lora":
        raise ValueError(f"training.distributed: {mode} shards full fine-tuning; LoRA runs use ddp")
    base = (compute or torch.float32) if cfg["finetuning"] == "lora" else torch.float32
    cast = compute if mode in SHARDED else None
    autocast = None if mode == "deepspeed" and compute is not None else compute
    return ForwardPath(base, cast, autocast)


def load_policy_at_init(model_dir: str | Path, cfg: dict, path: ForwardPath, device: str):
    """(model, tokenizer): the run's model as its first forward pass sees it — loaded and LoRA-wrapped by the trainer's
    own ``load_model`` (adapter at initialisation), cast as ``path`` says — on ``device``, in eval mode."""
    from sftlab.training.trainer import load_model

    model, tokenizer = load_model(model_dir, cfg, dtype=path.base)
    if path.cast is not None:
        model.to(path.cast)  # floating parameters and buffers alike, as FSDP's buffer_dtype / DeepSpeed's module cast
    return model.to(device).eval(), tokenizer
