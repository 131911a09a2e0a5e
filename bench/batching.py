"""Share of the computed tokens that are real ones: today's batching (random order, right padding to the longest row
of each micro-batch) against length-grouped batches and padding-free packed rows, one run.

Two length samples:
(a) the demo pool (config.yaml's dataset `demo`: 16 examples per family, 30% degraded), encoded with the tiny test
    tokenizer (sftlab.models.random_init; a byte-level BPE over 512 tokens, so sequences are longer than with
    SmolLM2's tokenizer, their spread similar) at the demo's max_length 96 — and, with --tokenizer DIR, any HF tokenizer;
(b) a seeded long-tailed sample: 20,000 lengths, log-normal with median 300 tokens and σ = 0.8 (mean ≈ 410, 95th
    percentile ≈ 1,100), cut to [16, 2,048] — the shape of Alpaca / UltraChat / Tulu lengths.

Samplers: `random` (today's: the Trainer's random sampler), `length_grouped` (sftlab.data.batching: transformers'
LengthGroupedSampler's mega-batches of 50 micro-batches sorted by length, seeded per epoch), `packed` (each micro-batch concatenated into one row with per-example
position ids: nothing is padded; flash-attention computes each example's own attention), and SFTMix's pair batches
(`PairSampler`, confident × unconfident pairs) without and with length grouping of the pairs.
Goal (issue 18): ≥ 0.95 packed, ≥ 0.9 length-grouped on (b).

    .venv/bin/python bench/batching.py [--batch-size 8] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sftlab.data import demo
from sftlab.data.batching import length_grouped_order
from sftlab.data.tokenize import encode_example
from sftlab.objectives.sftmix import PairSampler


def real_share(lengths: np.ndarray, order: np.ndarray, batch_size: int) -> float:
    """Real tokens over computed tokens when ``order`` is cut into micro-batches padded to their longest row."""
    real = computed = 0
    for start in range(0, len(order), batch_size):
        rows = lengths[order[start:start + batch_size]]
        real += int(rows.sum())
        computed += int(rows.max()) * len(rows)
    return real / computed


def demo_lengths(tokenizer_dir: str | None, max_length: int = 96) -> np.ndarray:
    if tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        from sftlab.models.random_init import build_tokenizer

        tokenizer = build_tokenizer()
    train, _, _ = demo.generate(per_family=16, heldout_per_family=5, degraded_share=0.3, pairs_per_family=8, seed=0)
    encoded = (encode_example(tokenizer, e["messages"], max_length) for e in train)
    return np.array([len(e["input_ids"]) for e in encoded if e is not None])


def lognormal_lengths(n: int = 20_000, median: float = 300, sigma: float = 0.8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), 16, 2048).astype(int)


def shares(lengths: np.ndarray, batch_size: int, seed: int = 0) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    random_order = torch.randperm(len(lengths), generator=g).numpy()
    grouped = length_grouped_order(lengths, batch_size, np.random.default_rng(seed))
    confident = np.random.default_rng(seed).permutation(len(lengths)) < len(lengths) // 2

    def pair_order(group: bool) -> np.ndarray:
        return np.array(list(PairSampler(confident, batch_size, seed, lengths=lengths if group else None)))

    return {
        "random (today)": real_share(lengths, random_order, batch_size),
        "length_grouped": real_share(lengths, grouped, batch_size),
        "packed": 1.0,  # one row per micro-batch, no padding by construction: computed == real
        "sftmix pairs (today)": real_share(lengths, pair_order(False), batch_size),
        "sftmix pairs, length-grouped": real_share(lengths, pair_order(True), batch_size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokenizer", help="HF tokenizer directory for the demo pool (default: the tiny test tokenizer)")
    args = ap.parse_args()
    samples = {"demo pool": demo_lengths(args.tokenizer), "log-normal (median 300, sigma 0.8)": lognormal_lengths()}
    print(f"micro-batch {args.batch_size}; real tokens / computed tokens")
    for name, lengths in samples.items():
        print(f"\n{name}: {len(lengths)} examples, lengths median {np.median(lengths):.0f}, mean {lengths.mean():.0f}, "
              f"max {lengths.max()}")
        for sampler, share in shares(lengths, args.batch_size).items():
            print(f"  {sampler:<30} {share:.3f}")


if __name__ == "__main__":
    main()
