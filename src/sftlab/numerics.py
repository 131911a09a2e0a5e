"""Process-wide floating-point settings for every process that trains or scores a model on the CPU.

Denormal (subnormal) floats are flushed to zero. Once MinorSFT's or DPO-SFT's loss saturates (log σ(β·r) → 0 as the
reward r grows), its gradients, and the Adam moments built from them, fall below float32's smallest normal number
(1.2e-38); CPUs without flush-to-zero compute on such values through slow microcode paths (on some cores every op
touching them is tens of times slower), so a CPU run slows down exactly when its loss is done. GPUs flush them by
default, so this changes nothing there; values that small contribute nothing to an update in float32 anyway.
"""

from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this process (x86 with SSE3 and ARM); False where the CPU cannot."""
    return bool(torch.set_flush_denormal(True))
