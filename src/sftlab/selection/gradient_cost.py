"""Cost model of the gradient-feature stage on a GPU: the `runtime` of each grad_features job, and its memory.

Per example of T tokens, with a frozen base of N parameters, L layers, hidden size d, and a LoRA adapter of P
parameters (``sftlab.selection.gradients``):

- compute: forward 2·N·T + 4·L·T²·d (attention scores and values); backward through the frozen base its input
  gradients only, 2·N·T, and the attention's about twice its forward; the LoRA matrices forward, input gradients,
  autograd's summed weight gradients and the hooks' per-example ones, 4 × 2·T·P:
  ``flops = 4·N·T + 12·L·T²·d + 8·T·P``, at ``efficiency`` of the GPU's dense bf16 peak;
- memory traffic: per-example gradient (B, out·in) written and read, Adam preconditioning (reads g, m, v,
  writes temporaries) and the sparse projection: about ``BYTES_PER_PARAMETER`` bytes per LoRA parameter per example,
  at ``efficiency`` of the GPU's memory bandwidth (the dense projection adds 2·P·dim flops instead).

The figures these constants stand for were measured by bench/grad_features.py where a machine allowed it (docs/cost.md,
"LESS / ROSE: cost", lists them); the GPU's peak figures are the vendor's.
"""

from __future__ import annotations

import math

#: bytes moved per LoRA parameter per example by the memory-bound steps (gradient 8, preconditioning ~28, sjlt 12)
BYTES_PER_PARAMETER = 48
#: minutes to start a job: load the base model and the adapter, tokenise the shard
STARTUP_MINUTES = 10
#: the runtime asked for is the estimate times this (Slurm kills a job at its limit; retries double it again)
SAFETY = 1.5


def example_flops(tokens: float, model_params: float, layers: int, hidden: int, lora_params: float,
                  projection: str = "sjlt", dim: int = 8192) -> float:
    """Floating-point operations to make one example's feature (see the module docstring)."""
    flops = 4 * model_params * tokens + 12 * layers * tokens**2 * hidden + 8 * tokens * lora_params
    if projection == "dense":
        flops += 2 * lora_params * dim
    return flops


def example_seconds(tokens: float, model_params: float, layers: int, hidden: int, lora_params: float,
                    gpu_tflops: float, gpu_bandwidth_gbs: float, efficiency: float, projection: str = "sjlt",
                    dim: int = 8192) -> float:
    """GPU seconds per example: compute at ``efficiency`` × peak plus memory traffic at ``efficiency`` × bandwidth."""
    compute = example_flops(tokens, model_params, layers, hidden, lora_params, projection, dim) / (
        gpu_tflops * 1e12 * efficiency)
    traffic = BYTES_PER_PARAMETER * lora_params / (gpu_bandwidth_gbs * 1e9 * efficiency)
    return compute + traffic


def job_runtime_minutes(examples: int, seconds_per_example: float) -> int:
    """Slurm `runtime` (minutes) of a job over ``examples`` examples: startup plus the estimate times ``SAFETY``."""
    return STARTUP_MINUTES + math.ceil(SAFETY * examples * seconds_per_example / 60)


def job_memory_gb(max_tokens: int, model_params: float, layers: int, hidden: int, vocab: int, lora_params: float,
                  dtype_bytes: int = 2) -> float:
    """Peak GPU memory of one batch of ``max_tokens`` tokens: the base's weights, the adapter with its two Adam
    moments and summed gradient (fp32), activations kept for the backward (34·d bytes a token a layer in 16-bit,
    Korthikanti et al. 2022, without attention scores: SDPA never stores them; an upper bound, a frozen base keeps
    fewer), the fp32 copies of their inputs that the four q/k/v/o adapters keep (peft casts a 16-bit input to the
    adapter's fp32: 4 × 4·d bytes a token a layer) and the logits (16-bit, their fp32 log-softmax and its gradient:
    10 bytes a vocabulary entry)."""
    weights = dtype_bytes * model_params + 4 * 4 * lora_params
    lora_inputs = 16 * hidden * layers if dtype_bytes < 4 else 0
    activations = max_tokens * (34 * hidden * layers * dtype_bytes / 2 + lora_inputs + 10 * vocab)
    return (weights + activations) / 2**30


def model_memory_gb(cost: dict, model: str, gradients: dict) -> float:
    """``job_memory_gb`` of ``model`` from the config's ``gradients.cost`` and ``gradients`` settings."""
    m = cost["models"][model]
    return job_memory_gb(gradients["max_tokens"], m["params"], m["layers"], m["hidden_size"], m["vocab_size"],
                         m["lora_params"], 2 if gradients["dtype"] == "bfloat16" else 4)


def grad_features_runtime(cost: dict, gradients: dict, shards: int, model: str, dataset: str) -> int:
    """`runtime` (minutes) of one grad_features job of ``model`` on ``dataset``, from the config's ``gradients.cost``."""
    for key, name in (("models", model), ("pools", dataset)):
        if name not in cost[key]:
            raise KeyError(f"config key gradients.cost.{key}: no entry for {name!r} (needed for its runtime)")
    m, pool, gpu = cost["models"][model], cost["pools"][dataset], cost["gpu"]
    seconds = example_seconds(pool["mean_tokens"], m["params"], m["layers"], m["hidden_size"], m["lora_params"],
                              gpu["tflops"], gpu["bandwidth_gbs"], gpu["efficiency"], gradients["projection"],
                              gradients["dim"])
    return job_runtime_minutes(math.ceil(pool["examples"] / shards), seconds)
