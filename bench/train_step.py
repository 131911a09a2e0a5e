"""Useful tokens per second and peak memory of training steps: today's batching and log-probs against the new ones,
for NTP, MinorSFT and SFTMix, on the seeded long-tailed length sample of ``batching.py``, one run.

Variants (each a full step: forward, backward, AdamW):
- ``old``: random order, right padding to the longest row, log-probs from a float32 log-softmax over the whole
  (batch, length, vocabulary) tensor before the gather (the code before issue 18);
- ``grouped``: length-grouped batches (sftlab.data.batching; SFTMix: pairs grouped by length), padded,
  memory-lean log-probs (target logit − chunked log-sum-exp): the CPU default (``training.batching: auto`` with sdpa);
- ``packed``: the same examples as ``old`` concatenated into one padding-free row with per-example position ids. On
  the CPU, sdpa applies a block-diagonal mask over the whole row (O(N²) attention in the packed length); with
  flash-attention on a GPU (the default there) each example attends only to itself. Shown for the record.

Useful tokens are the real (non-padding) tokens of the batches. ``--batches`` micro-batches are drawn at seeded random
positions of each sampler's epoch order (length grouping puts the longest mega-batch first: the first batches would not
be typical); the variants run interleaved, batch by batch. Peak memory: the largest per-step peak over the batches,
measured as in ``sftmix_step.py`` (resident set on the CPU, allocator on CUDA). Model: ``sftmix_step.bench_model``.

    .venv/bin/python bench/train_step.py [--batch-size 8 --batches 4 --median 300 --max-length 1024 --vocab 32000]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

import sftlab.objectives.base as base
from sftlab.data.batching import length_grouped_order
from sftlab.data.tokenize import collate, collate_packed
from sftlab.numerics import flush_denormals
from sftlab.objectives import build_objective
from sftlab.objectives.sftmix import PairSampler

from batching import lognormal_lengths
from sftmix_step import Memory, bench_model


def full_selective_logps(logits, targets):
    """Before issue 18: float32 log-softmax over the whole vocabulary, then gather."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@contextlib.contextmanager
def old_logps(active: bool):
    real = base.selective_logps
    if active:
        base.selective_logps = full_selective_logps
    try:
        yield
    finally:
        base.selective_logps = real


def features_for(lengths: np.ndarray, vocab: int, seed: int = 0) -> list[dict]:
    """Random tokens of the given lengths; the first quarter of each is the prompt (label −100)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = rng.integers(10, vocab, n).tolist()
        prompt = max(1, n // 4)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "ref_logp": -2.0 * (n - prompt),
                    "confident": 0.0})
    return out


def pick_batches(order: np.ndarray, batch_size: int, k: int, rng) -> list[np.ndarray]:
    n = len(order) // batch_size
    return [order[b * batch_size:(b + 1) * batch_size] for b in rng.choice(n, size=k, replace=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--median", type=float, default=300)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=None, help="resize the vocabulary (e.g. 32000): the LM head's share")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--objectives", nargs="*", default=["ntp", "minorsft", "sftmix"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flush_denormals()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench_model(device, None)  # modelling code loaded before the runtime's resident size is taken
    memory = Memory(device)
    model, vocab, pad = bench_model(device, args.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    lengths = np.minimum(lognormal_lengths(median=args.median), args.max_length)
    half = len(lengths) // 2
    confident = np.arange(len(lengths)) < half
    feats = features_for(lengths, vocab)
    for i in np.flatnonzero(confident):
        feats[i]["confident"] = 1.0
    g = torch.Generator().manual_seed(0)
    orders = {
        "random": torch.randperm(len(lengths), generator=g).numpy(),
        "grouped": length_grouped_order(lengths, args.batch_size, np.random.default_rng(0)),
        "pairs": np.array(list(PairSampler(confident, args.batch_size, 0))),
        "pairs grouped": np.array(list(PairSampler(confident, args.batch_size, 0, lengths=lengths))),
    }
    print(f"device {device}, model {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, vocabulary "
          f"{vocab}, micro-batch {args.batch_size}, {args.batches} batches per variant; lengths log-normal, median "
          f"{args.median:.0f}, σ 0.8, cut at {args.max_length} (mean {lengths.mean():.0f})")
    columns = ("ref_logp", "confident")
    for name in args.objectives:
        objective = build_objective(name)
        paired = name == "sftmix"
        rng = np.random.default_rng(1)
        old_rows = pick_batches(orders["pairs" if paired else "random"], args.batch_size, args.batches, rng)
        new_rows = pick_batches(orders["pairs grouped" if paired else "grouped"], args.batch_size, args.batches, rng)
        variants = {
            "old": (True, [collate([feats[i] for i in r], pad, columns) for r in old_rows]),
            "grouped": (False, [collate([feats[i] for i in r], pad, columns) for r in new_rows]),
            "packed": (False, [collate_packed([feats[i] for i in r], columns) for r in old_rows]),
        }
        stats = {v: {"time": 0.0, "tokens": 0, "peak": 0} for v in variants}

        def step(batch, lean):
            optimizer.zero_grad(set_to_none=True)
            with old_logps(lean):
                loss, _ = objective.loss(model, {k: t.to(device) for k, t in batch.items()})
            loss.backward()
            optimizer.step()

        for variant, (is_old, batches) in variants.items():  # warm-up
            step(batches[0], is_old)
        for k in range(args.batches):
            for variant, (is_old, batches) in variants.items():
                batch = batches[k]
                start = time.perf_counter()
                peak, _ = memory.measure(lambda: step(batch, is_old))
                stats[variant]["time"] += time.perf_counter() - start
                stats[variant]["peak"] = max(stats[variant]["peak"], peak)
                real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
                stats[variant]["tokens"] += int(real)
        print(f"\n{name}")
        for variant, s in stats.items():
            s["rate"] = s["tokens"] / s["time"]
            print(f"  {variant:<8} {s['rate']:9.0f} useful tokens/s   peak {s['peak'] / 2**20:8.1f} MiB")
        for variant in ("grouped", "packed"):
            print(f"  {variant}/old: {stats[variant]['rate'] / stats['old']['rate']:.2f}x useful tokens/s, "
                  f"{stats[variant]['peak'] / stats['old']['peak']:.2f}x peak memory")


if __name__ == "__main__":
    main()
