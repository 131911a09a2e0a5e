"""Generation throughput: batched vs one prompt at a time, same model, same prompts, one run each.

A seeded random Llama-architecture model of a few million parameters answers the same prompts twice
with the transformers backend: once in batches (left padding), once with batch size 1. End-of-sequence
is forbidden, so both runs generate exactly n_prompts × max_new_tokens tokens and tokens/s compare
like with like. Greedy decoding, so the two runs must also produce identical tokens (checked).

    python bench/generation.py [--n-prompts 32] [--max-new-tokens 64] [--batch-size 16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from sftlab.evaluation.generation import GenerationRequest, SamplingParams, TransformersGenerator
from sftlab.models.random_init import build_random_model

TOPICS = ["numbers", "letters", "words", "answers", "questions", "lists", "sums", "colours"]


def prompts(n: int) -> list[list[dict]]:
    """Prompts of varied length, so batching pays its padding cost as it would on a real benchmark."""
    return [
        [{"role": "user", "content": f"Question {i}: " + " ".join(TOPICS[: 1 + i % len(TOPICS)]) * (1 + i % 3)}]
        for i in range(n)
    ]


def timed(generator: TransformersGenerator, requests: list[GenerationRequest]) -> tuple[float, list]:
    start = time.perf_counter()
    generations = generator.generate(requests)
    return time.perf_counter() - start, generations


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer = build_random_model(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
    n_params = sum(p.numel() for p in model.parameters())
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    requests = [GenerationRequest(m, params) for m in prompts(args.n_prompts)]
    # one warm-up call so neither timed run pays for first-call allocation
    TransformersGenerator(model, tokenizer, batch_size=1, stop_at_eos=False).generate(requests[:1])

    result = {
        "model_parameters": n_params,
        "n_prompts": args.n_prompts,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.threads,
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
    }
    outputs = {}
    for label, batch_size in (("batched", args.batch_size), ("one_at_a_time", 1)):
        generator = TransformersGenerator(model, tokenizer, batch_size=batch_size, stop_at_eos=False)
        seconds, generations = timed(generator, requests)
        tokens = sum(len(g.token_ids) for g in generations)
        outputs[label] = [g.token_ids for g in generations]
        result[label] = {"batch_size": batch_size, "seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
    if result["batched"]["tokens"] != result["one_at_a_time"]["tokens"]:
        raise RuntimeError("the two runs generated different numbers of tokens; the comparison is void")
    result["identical_outputs"] = outputs["batched"] == outputs["one_at_a_time"]
    result["speedup"] = round(result["batched"]["tokens_per_s"] / result["one_at_a_time"]["tokens_per_s"], 2)
    print(json.dumps(result, indent=2))
    if args.out:
        from sftlab.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
