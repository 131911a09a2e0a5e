"""Time and peak memory of one SFTMix optimisation step against one NTP step, same model and batch, one run.

Goal (issue 3): SFTMix ≤ 1.25× the NTP step time and ≤ 1.2× its peak memory.

Time: median wall time of interleaved full steps (forward, backward, AdamW step) after warm-up steps.
Peak memory: on CUDA, ``torch.cuda.max_memory_allocated``; on CPU, the process's peak resident set size (VmHWM,
reset through /proc/self/clear_refs before each measured step), with glibc's mmap threshold fixed at 64 KiB so that
freed tensors go back to the OS and the resident size follows live memory; the resident size of the bare runtime
(measured before the model is built) is subtracted. Both the whole peak (weights, AdamW state and the step) and the
step's own increase over the memory held before it are printed. Both objectives train the same model with the same
optimizer, so what is held before each step is the same.

    .venv/bin/python bench/sftmix_step.py [--batch-size 8 --seq-len 256 --repeats 10 --threads 1]
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import sys
import time
from typing import Callable

import torch

from sftlab.data.tokenize import collate
from sftlab.models.random_init import build_random_model
from sftlab.objectives import build_objective

KIB = 1024


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=None,
                        help="resize the embeddings to this vocabulary (e.g. 32000) to see the LM head's share grow")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the benchmark machine is shared)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def bench_model(device: str, vocab: int | None):
    """A Llama-architecture model of about 3.4 M parameters (4 layers, hidden 256) and its vocabulary size."""
    model, tokenizer = build_random_model(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=688, seed=0)
    if vocab is not None:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    return model.to(device).train(), model.config.vocab_size, tokenizer.pad_token_id


def bench_batch(vocab: int, pad_token_id: int, batch_size: int, seq_len: int, device: str) -> dict[str, torch.Tensor]:
    """Random tokens: a 64-token prompt, responses of varying length, right padding; half confident, half not."""
    g = torch.Generator().manual_seed(0)
    features = []
    for i in range(batch_size):
        length = seq_len - int(torch.randint(0, seq_len // 4, (1,), generator=g))
        ids = torch.randint(10, vocab, (length,), generator=g).tolist()
        features.append({
            "input_ids": ids,
            "labels": [-100] * 64 + ids[64:],
            "confident": 1.0 if i < batch_size // 2 else 0.0,
        })
    batch = collate(features, pad_token_id, ("confident",))
    return {k: v.to(device) for k, v in batch.items()}


class Memory:
    """Peak memory of a block: CUDA allocator statistics, or the CPU process's resident set (see module docstring)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.runtime = 0
        if not self.cuda:
            if not sys.platform.startswith("linux"):
                raise RuntimeError("CPU peak memory is read from /proc: Linux only")
            M_MMAP_THRESHOLD = -3
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * KIB)
            self.runtime = self._status("VmRSS")

    def _status(self, key: str) -> int:
        with open("/proc/self/status") as fh:
            return int(re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M).group(1)) * KIB

    def measure(self, block) -> tuple[int, int]:
        """(peak bytes during ``block``, bytes held just before it), both less the bare runtime's."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            block()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated(), before
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident size
        before = self._status("VmRSS")
        block()
        return self._status("VmHWM") - self.runtime, before - self.runtime


def make_step(objective, model, optimizer, batch):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = objective.loss(model, batch)
        loss.backward()
        optimizer.step()

    return step


def compare(candidates: dict[str, Callable[[], None]], memory: Memory, device: str, repeats: int) -> dict[str, dict[str, float]]:
    """Interleaved timings and one peak-memory measurement per step function (after two warm-up steps each)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in candidates.values():
        step()
        step()
    results = {}
    for name, step in candidates.items():
        peak, before = memory.measure(step)
        results[name] = {"peak": peak, "step_memory": peak - before, "times": []}
    for _ in range(repeats):
        for name, step in candidates.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            results[name]["times"].append(time.perf_counter() - start)
    for result in results.values():
        result["time"] = statistics.median(result.pop("times"))
    return results


def report(results: dict[str, dict[str, float]], baseline: str, goals: dict[str, float], args) -> None:
    base = results[baseline]
    print(f"device {args.device}, batch {args.batch_size} x {args.seq_len} tokens, {args.threads} thread(s), "
          f"median of {args.repeats} steps")
    for name, r in results.items():
        print(f"{name:>8}: step {r['time'] * 1e3:8.1f} ms   peak {r['peak'] / 2**20:8.1f} MiB   "
              f"step increase {r['step_memory'] / 2**20:8.1f} MiB")
    for name, r in results.items():
        if name == baseline:
            continue
        ratios = {"time": r["time"] / base["time"], "peak memory": r["peak"] / base["peak"],
                  "step memory": r["step_memory"] / base["step_memory"]}
        for what, ratio in ratios.items():
            goal = goals.get(what)
            verdict = "" if goal is None else f"  (goal <= {goal:.2f}: {'met' if ratio <= goal else 'NOT met'})"
            print(f"{name}/{baseline} {what}: {ratio:.3f}x{verdict}")


def setup(args):
    """(memory meter, model, optimizer, batch) shared by the step benchmarks."""
    torch.set_num_threads(args.threads)
    build_random_model()  # loads the modelling code first, so that the runtime's resident size includes it
    memory = Memory(args.device)
    model, vocab, pad_token_id = bench_model(args.device, args.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = bench_batch(vocab, pad_token_id, args.batch_size, args.seq_len, args.device)
    return memory, model, vocab, optimizer, batch


def main() -> None:
    args = parse_args(__doc__)
    memory, model, vocab, optimizer, batch = setup(args)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary {vocab}")
    candidates = {name: make_step(build_objective(name), model, optimizer, batch) for name in ("ntp", "sftmix")}
    report(compare(candidates, memory, args.device, args.repeats), "ntp", {"time": 1.25, "peak memory": 1.2}, args)


if __name__ == "__main__":
    main()
