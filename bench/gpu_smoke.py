"""GPU smoke test: every GPU path of the workflow at reduced shapes, in minutes on one GPU, each with its tokens/s/GPU,
MFU and peak memory beside the cost model's assumption (sftlab.report.gpu_cost, gpu_cost.yaml).

Paths, each through the project's own code:
- training (sftlab.training.trainer.train, bf16, gradient checkpointing as in the paper configs): LoRA (r 128 on
  q/k/v/o, as LESS) at batch 1 x 400 tokens (the LESS / ROSE layout) with sdpa, and at 4 x 512 packed with
  flash-attention 2; full fine-tuning at 4 x 1,024 with sdpa and 4 x 2,048 packed with flash-attention 2;
- an FSDP save and resume: full fine-tuning under `accelerate launch` with configs/accelerate/fsdp.yaml (one process),
  killed (SIGKILL) right after its first checkpoint, rerun: it must resume from that checkpoint and finish;
- gradient features (sftlab.selection.gradients, Adam-preconditioned, sjlt to 8,192) in batches of 6,144 tokens;
- vLLM generation (sftlab.evaluation.generation, backend vllm), in a child process of the vLLM environment;
- a TIES merge (sftlab.compose.merge) and a Fisher merge (sftlab.compose.fisher) of two members.

The model: a Llama-architecture model built from a config with random weights (0.89B parameters; no download), or
``--model-dir`` (a local Hugging Face directory). MFU counts the cost model's FLOPs: k·N a trained token (6·N full,
4·N LoRA), 2·N a decoded token, the gradient stage's own count (sftlab.selection.gradient_cost), 6·N a Fisher token;
the peak is the GPU's dense bf16 figure (``PEAK_BF16_TFLOPS``, by ``torch.cuda.get_device_name``; ``--peak-tflops``
for another). Training throughput is timed over the steps after the first two (a step: forward, backward,
optimiser), peak memory is ``torch.cuda.max_memory_allocated`` of the path.

Output: a Markdown table on stdout, the results as JSON (``--out``), and with ``--calibrate FILE`` the measured
training MFU in gpu_cost.yaml's own ``training_mfu`` format (anchors without gradient checkpointing), to adopt with
``bench/gpu_cost.py --calibration FILE`` or by copying it into gpu_cost.yaml.

Without a GPU it refuses; ``--cpu-check`` runs every path a CPU can run (LoRA and full training steps in fp32,
gradient features, merge, Fisher) at tiny shapes, so that tests exercise this script; the others report
"skipped: needs CUDA".

    python bench/gpu_smoke.py --out smoke.json [--calibrate mfu.yaml] [--vllm-python ENV/bin/python]
    python bench/gpu_smoke.py --cpu-check --out smoke.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: dense bf16 peak TFLOP/s by a part of the device name (first match wins: the PCIe and NVL H100s before the SXM)
PEAK_BF16_TFLOPS = {"H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "GH200": 989, "A100": 312}

#: model shapes: ``gpu`` a 0.89B Llama (TinyLlama's widths, 16 layers), ``cpu`` the tests' tiny one
SHAPES = {
    "gpu": {"hidden_size": 2048, "num_layers": 16, "num_heads": 16, "num_kv_heads": 4, "intermediate_size": 5632,
            "vocab_size": 32000, "max_position_embeddings": 4096},
    "cpu": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 128,
            "vocab_size": 512, "max_position_embeddings": 1024},
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

#: training layouts: (finetuning, attention, micro-batch examples, tokens an example)
TRAIN_LAYOUTS = {
    "train lora sdpa": ("lora", "sdpa", 1, 400),
    "train lora flash-attention packed": ("lora", "flash_attention_2", 4, 512),
    "train full sdpa": ("full", "sdpa", 4, 1024),
    "train full flash-attention packed": ("full", "flash_attention_2", 4, 2048),
}
PATHS = (*TRAIN_LAYOUTS, "fsdp save and resume", "gradient features", "vllm generation", "merge (ties)",
         "fisher merge")
#: tokens a gradient-feature batch (the paper configs' gradients.max_tokens)
GRADIENT_BATCH_TOKENS = 6144
NEEDS_CUDA = "skipped: needs CUDA"

#: words that the tiny test tokenizer and every real one encode as at least one token each
WORDS = "the of and to in is that for it as with was on be by this are answer question".split()


# ----------------------------------------------------------------------------- shared pieces


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """The dense bf16 peak of the device (``override`` first); None for a device the table does not know."""
    if override:
        return override
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def mfu(flops_per_s: float, peak: float | None) -> float | None:
    return flops_per_s / (peak * 1e12) if peak else None


def example(i: int, tokens: int) -> dict:
    """A normalised example whose answer alone is longer than ``tokens``: encoded and cut to ``max_length = tokens``,
    every example has exactly that many tokens."""
    answer = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 * tokens))
    return {"id": f"smoke-{i}", "messages": [{"role": "user", "content": f"Question {i}: repeat the words."},
                                            {"role": "assistant", "content": answer}]}


def examples(n: int, tokens: int) -> list[dict]:
    return [example(i, tokens) for i in range(n)]


def build_model_dir(out: Path, shape: dict, on_gpu: bool) -> Path:
    """A Llama-architecture model with seeded random weights and the tiny test tokenizer, saved in bf16 (GPU) or
    float32 (CPU); initialised on the GPU when there is one (seconds instead of minutes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftlab.models.random_init import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=max(shape["vocab_size"], len(tokenizer)), hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=shape["max_position_embeddings"], tie_word_embeddings=False, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = LlamaForCausalLM(config)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    model.to(dtype)
    model.config.dtype = dtype
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return out


def describe_model(model_dir: Path) -> dict:
    """Parameters (embeddings included, as the cost model counts them), layers, hidden size, vocabulary."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {"params": sum(p.numel() for p in model.parameters()), "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size, "vocab_size": config.vocab_size}


def training_config(finetuning: str, attention: str, batch: int, tokens: int, steps: int, precision: str,
                    lora_rank: int, **changes) -> dict:
    """The effective training settings of one smoke run (every key ``train`` reads)."""
    return {
        "learning_rate": 1e-5, "epochs": 1, "max_steps": steps, "batch_size": batch, "gradient_accumulation": 1,
        "max_length": tokens, "scheduler": "constant", "warmup_ratio": 0.0, "warmup_steps": 0, "weight_decay": 0.0,
        "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "max_grad_norm": 1.0, "seed": 0,
        "precision": precision, "finetuning": finetuning,
        "lora": {"r": lora_rank, "alpha": 4 * lora_rank, "dropout": 0.1, "target_modules": LORA_TARGETS},
        "logging_steps": 1, "eval_steps": 10**6, "save_steps": 10**6, "gradient_checkpointing": True,
        "distributed": "ddp", "attn_implementation": attention,
        "batching": "packed" if attention.startswith("flash") else "auto", "report_to": "none", **changes,
    }


def step_timer(skip: int):
    """A Trainer callback timing each optimiser step after the first ``skip`` (device synchronised at both ends),
    and noting whether the model it trains is wrapped in FSDP."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.fsdp = False
            self.distributed_type = None
            self._start = 0.0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            from accelerate.state import AcceleratorState

            # FSDP1 puts FullyShardedDataParallel units into the module tree, FSDP2 renames classes FSDP<name>
            self.fsdp = model is not None and any("FullyShardedDataParallel" in type(m).__name__ or
                                                  type(m).__name__.startswith("FSDP") for m in model.modules())
            self.distributed_type = str(AcceleratorState().distributed_type)

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            if state.global_step > skip:
                self.times.append(time.perf_counter() - self._start)

    return StepTimer()


def check_lengths(model_dir: Path, tokens: int) -> None:
    from transformers import AutoTokenizer

    from sftlab.data.tokenize import encode_example, ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    length = len(encode_example(tokenizer, example(0, tokens)["messages"], tokens)["input_ids"])
    if length != tokens:
        raise RuntimeError(f"a smoke example encodes to {length} tokens, not {tokens}")


def assumed_training(a: dict, finetuning: str, micro_batch_tokens: int, checkpointing: bool = True) -> dict:
    from sftlab.report.gpu_cost import training_mfu

    return {"mfu": training_mfu(a["training_mfu"], finetuning, micro_batch_tokens, checkpointing),
            "source": "gpu_cost.yaml training_mfu" + ("" if a["training_mfu"].get("measured") else " (unmeasured)")}


# ----------------------------------------------------------------------------- paths


def run_training(ctx, name: str) -> dict:
    from sftlab.report.gpu_cost import training_flops_per_token
    from sftlab.training.trainer import train

    finetuning, attention, batch, tokens = TRAIN_LAYOUTS[name]
    if ctx.cpu_check:
        batch, tokens = min(batch, 2), 64
    check_lengths(ctx.model_dir, tokens)
    steps = ctx.steps
    cfg = training_config(finetuning, attention, batch, tokens, steps, ctx.precision, ctx.lora_rank)
    timer = step_timer(skip=min(2, steps - 1))
    work = ctx.work / name.replace(" ", "_")
    reset_peak()
    train(ctx.model_dir, examples(batch * steps, tokens), examples(1, tokens), cfg, {"name": "ntp"}, None,
          work / "train_log.csv", work / "checkpoints", callbacks=[timer])
    seconds = sum(timer.times)
    rate = batch * tokens * len(timer.times) / seconds
    flops = training_flops_per_token(ctx.model["params"], finetuning)
    return {"tokens_per_s_per_gpu": rate, "mfu": mfu(rate * flops, ctx.peak), "peak_memory_gb": peak_gb(),
            "seconds": seconds, "steps_timed": len(timer.times), "finetuning": finetuning, "attention": attention,
            "micro_batch_tokens": batch * tokens, "gradient_checkpointing": True, "flops_per_token": flops,
            "assumed": assumed_training(ctx.a, finetuning, batch * tokens)}


def fsdp_command(ctx, work: Path, phase: str) -> list[str]:
    from sftlab.training.launch import CONFIG_DIR

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG_DIR / "fsdp.yaml"),
            "--num_processes", "1", "--num_machines", "1", "--main_process_port", "0", str(Path(__file__).resolve()),
            "--child", f"fsdp-{phase}", "--model-dir", str(ctx.model_dir), "--work", str(work),
            "--steps", str(ctx.steps)]


def run_fsdp(ctx, name: str) -> dict:
    """Full fine-tuning under FSDP, SIGKILLed right after its first checkpoint, then rerun to the end."""
    if not ctx.has_cuda:
        return {"status": NEEDS_CUDA}
    work = ctx.work / "fsdp"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed = subprocess.run(fsdp_command(ctx, work, "killed"), capture_output=True, text=True, env=env, timeout=600)
    checkpoints = sorted((work / "checkpoints").glob("checkpoint-*"))
    if not checkpoints or not (checkpoints[-1] / "trainer_state.json").exists():
        raise RuntimeError(f"the first FSDP run left no complete checkpoint (exit {killed.returncode}):\n"
                           f"{killed.stderr[-3000:]}")
    resumed = subprocess.run(fsdp_command(ctx, work, "resumed"), capture_output=True, text=True, env=env, timeout=600)
    if resumed.returncode != 0:
        raise RuntimeError(f"the FSDP rerun failed:\n{resumed.stderr[-3000:]}")
    if f"resuming from {checkpoints[-1]}" not in resumed.stderr:
        raise RuntimeError(f"the FSDP rerun did not resume from {checkpoints[-1]}:\n{resumed.stderr[-3000:]}")
    result = json.loads((work / "resumed.json").read_text())
    if not result.pop("fsdp"):
        raise RuntimeError(f"the model trained under accelerate's FSDP config was not wrapped in FSDP (accelerate's "
                           f"distributed type: {result['distributed_type']})")
    if not (work / "model" / "config.json").exists():
        raise RuntimeError("the FSDP run saved no final model")
    return {**result, "resumed_from": checkpoints[-1].name, "killed_exit": killed.returncode,
            "assumed": assumed_training(ctx.a, "full", result["micro_batch_tokens"])}


def fsdp_child(args, phase: str) -> None:
    """One process of ``run_fsdp``: ``killed`` dies by SIGKILL once its first checkpoint is saved (a preemption);
    ``resumed`` resumes from it, saves the gathered model and writes its throughput."""
    import torch
    from transformers import TrainerCallback

    from sftlab.report.gpu_cost import training_flops_per_token
    from sftlab.training.trainer import train

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    work = Path(args.work)
    batch, tokens, steps = 4, 1024, args.steps
    precision = "bf16" if torch.cuda.is_available() else "fp32"
    cfg = training_config("full", "sdpa", batch, tokens, steps, precision, 8, save_steps=2, distributed="fsdp")
    timer = step_timer(skip=0)
    callbacks = [timer] + ([KillAfterSave()] if phase == "killed" else [])
    reset_peak()
    train(args.model_dir, examples(batch * steps, tokens), examples(1, tokens), cfg, {"name": "ntp"},
          work / "model", work / "train_log.csv", work / "checkpoints", callbacks=callbacks)
    params = describe_model(Path(args.model_dir))["params"]
    seconds = sum(timer.times[1:])  # the first step after resuming pays for loading the sharded state
    rate = batch * tokens * (len(timer.times) - 1) / seconds
    peak = peak_tflops(torch.cuda.get_device_name(), args.peak_tflops) if torch.cuda.is_available() else None
    (work / "resumed.json").write_text(json.dumps({
        "tokens_per_s_per_gpu": rate, "mfu": mfu(rate * training_flops_per_token(params, "full"), peak),
        "peak_memory_gb": peak_gb(), "seconds": seconds,
        "steps_timed": len(timer.times) - 1, "micro_batch_tokens": batch * tokens, "fsdp": timer.fsdp,
        "distributed_type": timer.distributed_type}))


def run_gradient_features(ctx, name: str) -> dict:
    """Adam-preconditioned LoRA gradient features (``kind: train``) in batches of ``GRADIENT_BATCH_TOKENS``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.data.tokenize import ensure_chat_template
    from sftlab.report.gpu_cost import load_assumptions
    from sftlab.selection.gradient_cost import example_flops, example_seconds, job_memory_gb
    from sftlab.selection.gradients import encode_rows, gradient_features, lora_parameters
    from sftlab.selection.projection import build_projection

    device = "cuda" if ctx.has_cuda else "cpu"
    dtype = torch.bfloat16 if ctx.has_cuda else torch.float32
    tokens, batches = 512, 1 if ctx.cpu_check else 4
    per_batch = GRADIENT_BATCH_TOKENS // tokens
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    ensure_chat_template(tokenizer)
    items, _ = encode_rows(tokenizer, examples(per_batch * batches, tokens), "train", tokens)
    base = AutoModelForCausalLM.from_pretrained(ctx.model_dir, dtype=dtype)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=ctx.lora_rank, lora_alpha=4 * ctx.lora_rank, target_modules=LORA_TARGETS),
                           autocast_adapter_dtype=True).to(device)
    params = lora_parameters(model)
    gen = torch.Generator().manual_seed(1)
    moments = [((torch.randn(p.numel(), generator=gen) * 1e-3).to(device),
                (torch.rand(p.numel(), generator=gen) * 1e-5).to(device)) for p in params.values()]
    projection = build_projection("sjlt", 8192, 0, device)
    warm = items[:per_batch]
    gradient_features(model, warm, "train", tokenizer.pad_token_id, projection, GRADIENT_BATCH_TOKENS, moments)
    reset_peak()
    synchronize()
    start = time.perf_counter()
    features = gradient_features(model, items, "train", tokenizer.pad_token_id, projection, GRADIENT_BATCH_TOKENS,
                                 moments)
    synchronize()
    seconds = time.perf_counter() - start
    if not torch.isfinite(features.float()).all():
        raise RuntimeError("gradient features hold NaN or inf")
    m, lora = ctx.model, sum(p.numel() for p in params.values())
    flops = len(items) * example_flops(tokens, m["params"], m["layers"], m["hidden_size"], lora)
    gpu = load_assumptions()["gpu"]
    predicted = len(items) * example_seconds(tokens, m["params"], m["layers"], m["hidden_size"], lora,
                                             gpu["bf16_dense_tflops"], gpu["bandwidth_gbs"], gpu["mfu"])
    return {"tokens_per_s_per_gpu": len(items) * tokens / seconds, "mfu": mfu(flops / seconds, ctx.peak),
            "peak_memory_gb": peak_gb(), "seconds": seconds, "items": len(items), "batch_tokens": GRADIENT_BATCH_TOKENS,
            "lora_params": lora,
            "assumed": {"mfu": gpu["mfu"], "seconds": predicted, "source": f"sftlab.selection.gradient_cost on "
                        f"{gpu['name']} at gpu_cost.yaml gpu.mfu",
                        "peak_memory_gb": job_memory_gb(GRADIENT_BATCH_TOKENS, m["params"], m["layers"],
                                                        m["hidden_size"], m["vocab_size"], lora,
                                                        2 if ctx.has_cuda else 4)}}


def run_vllm(ctx, name: str) -> dict:
    if not ctx.has_cuda:
        return {"status": NEEDS_CUDA}
    python = ctx.vllm_python or sys.executable
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"status": f"skipped: vllm is not importable by {python} (build envs/vllm.yaml and pass "
                          f"--vllm-python <env>/bin/python)"}
    out = ctx.work / "vllm.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--child", "vllm", "--model-dir",
                           str(decodable_model(ctx)), "--work", str(ctx.work)], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"vLLM generation failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    rate = result["tokens_per_s_per_gpu"]
    return {**result, "mfu": mfu(rate * 2 * ctx.model["params"], ctx.peak),
            "assumed": {"tokens_per_s_per_gpu": ctx.a["decode_tokens_per_s"]["vllm"],
                        "source": "gpu_cost.yaml decode_tokens_per_s.vllm (a 7-8B model)"}}


def decodable_model(ctx) -> Path:
    """The model for vLLM: where the tokenizer is smaller than the model's vocabulary (the random model: the tiny
    test tokenizer, a 32,000-row LM head) a copy whose tokenizer has a placeholder token for every further id, so
    that whatever vLLM samples decodes; the weights are linked, not copied."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    if len(tokenizer) >= ctx.model["vocab_size"]:
        return ctx.model_dir
    target = ctx.work / "vllm_model"
    if not target.exists():
        target.mkdir()
        for path in ctx.model_dir.iterdir():
            if path.suffix == ".safetensors" or path.name in ("config.json", "generation_config.json") or \
                    path.name.endswith(".index.json"):
                (target / path.name).symlink_to(path.resolve())
        tokenizer.add_tokens([f"<t{i}>" for i in range(len(tokenizer), ctx.model["vocab_size"])])
        tokenizer.save_pretrained(target)
    return target


def vllm_child(args) -> None:
    """Decode exactly ``answer_tokens`` tokens for each of ``prompts`` prompts (end-of-sequence ignored)."""
    from sftlab.evaluation.generation import GenerationRequest, SamplingParams, build_generator

    prompts, answer_tokens = 256, 256
    generator = build_generator("vllm", args.model_dir, seed=0, stop_at_eos=False, dtype="bfloat16",
                                gpu_memory_utilization=0.5, max_model_len=2048)
    requests = [GenerationRequest(messages=[{"role": "user", "content": f"Question {i}: write a long answer."}],
                                  params=SamplingParams(max_new_tokens=answer_tokens, temperature=1.0))
                for i in range(prompts)]
    generator.generate(requests[:8])
    start = time.perf_counter()
    answers = generator.generate(requests)
    seconds = time.perf_counter() - start
    decoded = sum(len(a.token_ids) for a in answers)
    # vLLM's engine runs in its own process and takes gpu_memory_utilization of the GPU: no peak measured here
    Path(args.work, "vllm.json").write_text(json.dumps({
        "tokens_per_s_per_gpu": decoded / seconds, "seconds": seconds, "prompts": prompts, "decoded_tokens": decoded,
        "gpu_memory_utilization": 0.5}))


def merge_members(ctx) -> list[Path]:
    """Two members: the base with seeded noise on every weight (bench/merge.py's copies), made once."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from merge import _copy_with_noise

    members = [ctx.work / f"member{k}" for k in range(2)]
    for k, member in enumerate(members):
        if not member.exists():
            _copy_with_noise(ctx.model_dir, member, k)
    return members


def run_merge(ctx, name: str) -> dict:
    from sftlab.compose.merge import merge_models

    members = merge_members(ctx)
    reset_peak()
    start = time.perf_counter()
    merge_models(members, ctx.work / "merged", "ties", base_model=ctx.model_dir, device="auto")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "params_per_s": 2 * ctx.model["params"] / seconds, "peak_memory_gb": peak_gb(),
            "assumed": {"seconds": 60 * ctx.a["startup_minutes"],
                        "source": "gpu_cost.yaml startup_minutes (the merge rule is priced at its startup only)"}}


def run_fisher(ctx, name: str) -> dict:
    from sftlab.compose.fisher import fisher_merge

    members = merge_members(ctx)
    samples, tokens = (2, 64) if ctx.cpu_check else (16, 512)
    check_lengths(ctx.model_dir, tokens)
    pool = examples(samples, tokens)
    reset_peak()
    start = time.perf_counter()
    fisher_merge(members, ctx.work / "fisher", ctx.model_dir, [pool, pool], [0.5, 0.5], samples, tokens,
                 device="cuda" if ctx.has_cuda else "cpu")
    seconds = time.perf_counter() - start
    rate = 2 * samples * tokens / seconds  # loading the members is part of the time: a lower bound on the rate
    return {"tokens_per_s_per_gpu": rate, "mfu": mfu(rate * 6 * ctx.model["params"], ctx.peak),
            "peak_memory_gb": peak_gb(), "seconds": seconds, "examples": 2 * samples,
            "assumed": {"seconds": 60 * ctx.a["startup_minutes"],
                        "source": "gpu_cost.yaml startup_minutes (the merge rule is priced at its startup only)"}}


# ----------------------------------------------------------------------------- orchestration, output


class Context:
    def __init__(self, args, work: Path):
        import torch

        from sftlab.report.gpu_cost import load_assumptions

        self.cpu_check, self.work, self.steps = args.cpu_check, work, args.steps
        self.has_cuda = torch.cuda.is_available()
        self.device_name = torch.cuda.get_device_name() if self.has_cuda else "cpu"
        self.peak = peak_tflops(self.device_name, args.peak_tflops) if self.has_cuda else None
        self.precision = "bf16" if self.has_cuda else "fp32"
        self.lora_rank = 4 if args.cpu_check else 128
        self.a = load_assumptions()
        self.vllm_python = args.vllm_python
        if args.model_dir:
            self.model_dir = Path(args.model_dir)
            self.model_source = f"local directory {self.model_dir}"
        else:
            shape = SHAPES["cpu" if args.cpu_check else "gpu"]
            self.model_dir = build_model_dir(work / "base", shape, self.has_cuda)
            self.model_source = "random weights from a Llama config " + json.dumps(shape)
        self.model = describe_model(self.model_dir)


RUNNERS = {**{name: run_training for name in TRAIN_LAYOUTS}, "fsdp save and resume": run_fsdp,
           "gradient features": run_gradient_features, "vllm generation": run_vllm, "merge (ties)": run_merge,
           "fisher merge": run_fisher}


def skip_reason(ctx, name: str) -> str | None:
    if name in TRAIN_LAYOUTS and TRAIN_LAYOUTS[name][1].startswith("flash"):
        if not ctx.has_cuda:
            return NEEDS_CUDA
        if importlib.util.find_spec("flash_attn") is None:
            return "skipped: flash_attn is not importable (pip install flash-attn, built for this torch and CUDA)"
    return None


def run_path(ctx, name: str) -> dict:
    reason = skip_reason(ctx, name)
    if reason:
        return {"path": name, "status": reason}
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer's log lines: stdout holds the table only
            result = RUNNERS[name](ctx, name)
    except Exception as exc:  # a smoke test reports every path: one failure must not hide the others
        traceback.print_exc()
        return {"path": name, "status": f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}",
                "wall_s": time.perf_counter() - start}
    # every path's record has the four figures; None where a path does not measure one (a merge has no tokens)
    figures = dict.fromkeys(("tokens_per_s_per_gpu", "mfu", "peak_memory_gb", "seconds"))
    return {"path": name, "status": "ok", **figures, **result, "wall_s": time.perf_counter() - start}


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def assumption_text(assumed: dict | None) -> str:
    if not assumed:
        return "–"
    parts = []
    if "mfu" in assumed:
        parts.append(f"MFU {assumed['mfu']:.0%}")
    if "tokens_per_s_per_gpu" in assumed:
        parts.append(f"{assumed['tokens_per_s_per_gpu']:,.0f} tokens/s")
    if "seconds" in assumed:
        parts.append(f"{assumed['seconds']:,.1f} s")
    if "peak_memory_gb" in assumed:
        parts.append(f"{assumed['peak_memory_gb']:.1f} GiB")
    return ", ".join(parts) + f" ({assumed['source']})"


def markdown(report: dict) -> str:
    lines = [f"GPU smoke on {report['device']} (dense bf16 peak {fmt(report['peak_bf16_tflops'], ',.0f')} TFLOP/s); "
             f"model: {report['model']['params'] / 1e6:,.1f}M parameters, {report['model']['source']}", "",
             "| path | status | tokens/s/GPU | MFU | peak memory (GiB) | time (s) | cost model assumes |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in report["paths"]:
        lines.append(f"| {r['path']} | {r['status']} | {fmt(r.get('tokens_per_s_per_gpu'), ',.0f')} | "
                     f"{fmt(r.get('mfu'), '.1%')} | {fmt(r.get('peak_memory_gb'), '.1f')} | "
                     f"{fmt(r.get('seconds'), ',.2f')} | {assumption_text(r.get('assumed'))} |")
    return "\n".join(lines)


def calibration(report: dict, assumptions: dict) -> dict:
    """The measured training MFU in gpu_cost.yaml's ``training_mfu`` format: one anchor per measured layout (tokens
    of its micro-batch), converted to MFU without gradient checkpointing (÷ k / (k + 2)), over the shipped anchors
    (``assumptions``; those not measured stay, and ``measured`` lists the ones that were); the multi-GPU factors stay
    as they are (one GPU cannot measure them)."""
    from sftlab.report.gpu_cost import training_flops_per_token

    if report["peak_bf16_tflops"] is None:
        raise ValueError(f"no dense bf16 peak for {report['device']!r}: MFU was not measured, nothing to calibrate "
                         f"(give --peak-tflops on a GPU the table does not know)")
    shipped = assumptions["training_mfu"]
    anchors = {kind: dict(shipped[kind]) for kind in ("lora", "full")}
    measured: dict[str, list[int]] = {}
    for r in report["paths"]:
        if r["status"] != "ok" or r["path"] not in TRAIN_LAYOUTS or r.get("mfu") is None:
            continue
        k = training_flops_per_token(1, r["finetuning"])
        value = r["mfu"] / (k / (k + 2)) if r["gradient_checkpointing"] else r["mfu"]
        anchors[r["finetuning"]][int(r["micro_batch_tokens"])] = round(value, 4)
        measured.setdefault(r["finetuning"], []).append(int(r["micro_batch_tokens"]))
    if not measured:
        raise ValueError("no training path ran: nothing to calibrate")
    return {"training_mfu": {"measured": measured, "device": report["device"], "date": report["date"],
                             "model_params": report["model"]["params"],
                             **{kind: dict(sorted(a.items())) for kind, a in anchors.items()},
                             "distributed": dict(shipped["distributed"])}}


def write_calibration(path: Path, report: dict, assumptions: dict) -> None:
    import yaml

    header = (f"# measured by bench/gpu_smoke.py on {report['device']}, {report['date']}, a "
              f"{report['model']['params'] / 1e9:.2f}B model: MFU without gradient checkpointing by tokens of a "
              f"micro-batch (the anchors under `measured`; the others as shipped).\n# Adopt: bench/gpu_cost.py --calibration {path.name}, or copy it over training_mfu in "
              f"src/sftlab/report/gpu_cost.yaml.\n")
    path.write_text(header + yaml.safe_dump(calibration(report, assumptions), sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="results as JSON")
    ap.add_argument("--calibrate", type=Path, help="write the measured training MFU in gpu_cost.yaml's format")
    ap.add_argument("--cpu-check", action="store_true",
                    help="run the paths a CPU can run at tiny shapes (tests); the others are skipped")
    ap.add_argument("--model-dir", help="a local Hugging Face model directory instead of the random 0.89B model")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), metavar="PATH",
                    help=f"paths to run (default all): {', '.join(PATHS)}")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps a training run (default 20; CPU 3)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of a GPU the table does not know")
    ap.add_argument("--vllm-python", help="python of the vLLM environment (envs/vllm.yaml); default this one")
    ap.add_argument("--work", help="working directory (default: a temporary one, removed)")
    ap.add_argument("--child", choices=["fsdp-killed", "fsdp-resumed", "vllm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_check:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the tiny shapes on the CPU even where a GPU is visible
    args.steps = args.steps or (3 if args.cpu_check else 20)
    from sftlab.logs import setup_logging
    from sftlab.numerics import flush_denormals

    setup_logging()
    flush_denormals()
    if args.child:
        return vllm_child(args) if args.child == "vllm" else fsdp_child(args, args.child.split("-")[1])
    if not args.cpu_check and not cuda():
        raise SystemExit("bench/gpu_smoke.py: no CUDA GPU is visible; it measures GPU paths. Run it on a GPU node, "
                         "or pass --cpu-check to run the paths a CPU can run at tiny shapes (no figures).")
    if args.calibrate and args.cpu_check:
        raise SystemExit("--calibrate needs GPU measurements; --cpu-check measures none")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        ctx = Context(args, work)
        report = {"device": ctx.device_name, "peak_bf16_tflops": ctx.peak, "cpu_check": args.cpu_check,
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "model": {**ctx.model, "source": ctx.model_source}, "paths": []}
        for name in PATHS:
            if name in args.paths:
                report["paths"].append(run_path(ctx, name))
                print(f"[gpu_smoke] {name}: {report['paths'][-1]['status']}", file=sys.stderr, flush=True)
        report["wall_s"] = time.perf_counter() - start
    print(markdown(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    if args.calibrate:
        write_calibration(args.calibrate, report, ctx.a)
    if any(r["status"].startswith("failed") for r in report["paths"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
