"""Merge time and peak memory against model size (Disperse-Then-Merge's merge step).

For each size of the tiny Llama architecture it writes a base model and K sub-models (base + noise), then runs
each merge in a fresh subprocess that first merges a micro model (so imports and lazy initialisation are done),
reads its resident memory, runs the measured merge, and reports:

- time: wall-clock seconds of the measured merge
- before: resident memory (RSS) just before it, the interpreter with torch, transformers and mergekit loaded
- peak: the process's peak RSS (VmHWM); peak anon: peak anonymous (heap) RSS, sampled every 5 ms
- the merge's own memory, (peak − before) and (peak anon − before anon), in units of one sub-model's size

Anonymous memory is what the merge allocates; the rest of RSS is file pages of the memory-mapped inputs,
which the kernel can drop under pressure. Usage: ``python bench/merge.py [--k 4] [--sizes S M L]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# hidden size, layers, MLP size (vocab ≈ 512 from the tiny tokenizer)
SIZES = {"S": (256, 4, 688), "M": (512, 8, 1376), "L": (1024, 8, 2752)}
CASES = [  # (merge method, bytes per output shard; None = the library's default)
    ("average", None),
    ("ties", None),
    ("average", 32 * 1000**2),
]


def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def worker(args) -> None:
    from sftlab.compose.merge import merge_models
    from sftlab.models.random_init import save_random_model

    with tempfile.TemporaryDirectory() as tmp:
        micro = Path(tmp)
        save_random_model(micro / "base", hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
        _copy_with_noise(micro / "base", micro / "sub0", 0)
        _copy_with_noise(micro / "base", micro / "sub1", 1)
        merge_models([micro / "sub0", micro / "sub1"], micro / "out", args.method, base_model=micro / "base")

    models = [Path(p) for p in args.models]
    kwargs = {"out_shard_bytes": args.out_shard_bytes} if args.out_shard_bytes else {}
    before = _status()
    peak_anon = [before["RssAnon"]]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak_anon[0] = max(peak_anon[0], _status()["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    merge_models(models, args.out, args.method, base_model=args.base, **kwargs)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    after = _status()
    print(json.dumps({"seconds": seconds, "before": before["VmRSS"], "before_anon": before["RssAnon"],
                      "peak": after["VmHWM"], "peak_anon": max(peak_anon[0], after["RssAnon"])}))


def _copy_with_noise(base: Path, out: Path, seed: int) -> None:
    """A sub-model: a copy of ``base`` with seeded Gaussian noise added to every weight (in the weight's dtype)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    gen = torch.Generator().manual_seed(seed)
    weights = load_file(base / "model.safetensors")
    noisy = {k: v + (0.01 * torch.randn(v.shape, generator=gen)).to(v.dtype) for k, v in weights.items()}
    save_file(noisy, out / "model.safetensors", metadata={"format": "pt"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4, help="number of sub-models")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--out-shard-bytes", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from sftlab.models.random_init import save_random_model

    mb = 1000**2
    header = (f"{'size':>4} {'params':>8} {'model MB':>8} {'method':>8} {'shard MB':>8} {'time s':>7} "
              f"{'before MB':>9} {'peak MB':>8} {'anon MB':>8} {'peak/model':>10} {'(peak-before)/model':>19} "
              f"{'(anon-before)/model':>19}")
    rows = [header, "-" * len(header)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for size in args.sizes:
        hidden, layers, mlp = SIZES[size]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_random_model(tmp / "base", hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                              intermediate_size=mlp)
            for k in range(args.k):
                _copy_with_noise(tmp / "base", tmp / f"sub{k}", k)
            model_bytes = (tmp / "base" / "model.safetensors").stat().st_size
            params = model_bytes // 4
            for i, (method, shard) in enumerate(CASES):
                cmd = [sys.executable, __file__, "--worker", "--method", method, "--base", str(tmp / "base"),
                       "--out", str(tmp / f"out{i}"), "--models", *(str(tmp / f"sub{k}") for k in range(args.k))]
                if shard:
                    cmd += ["--out-shard-bytes", str(shard)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"merge worker failed ({method}, size {size}):\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                shard_mb = f"{(shard or 2 * 1000**3) / mb:.0f}"
                rows.append(
                    f"{size:>4} {params / 1e6:>7.1f}M {model_bytes / mb:>8.1f} {method:>8} {shard_mb:>8} "
                    f"{r['seconds']:>7.2f} {r['before'] / mb:>9.0f} {r['peak'] / mb:>8.0f} {r['peak_anon'] / mb:>8.0f} "
                    f"{r['peak'] / model_bytes:>10.2f} {(r['peak'] - r['before']) / model_bytes:>19.2f} "
                    f"{(r['peak_anon'] - r['before_anon']) / model_bytes:>19.2f}"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"K = {args.k} sub-models, float32, 1 thread; model MB = one sub-model's safetensors file")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
