"""Generation throughput of the transformers backend on real prompts and real answers, one run per layout.

The model is the demo's SmolLM2-135M-Instruct (``resources/models/smollm2``, materialised by ``make demo``; or
``--model DIR``, any Hugging Face directory; ``--random`` for a seeded random Llama of a few million parameters).
The prompts are the repository's MT-Bench and AlpacaEval fixtures (tests/fixtures: each MT-Bench question's two turns
as single prompts, and the AlpacaEval instructions), so their lengths vary as a benchmark's do. Answers stop at the
model's end-of-sequence tokens (up to ``--max-new-tokens``): tokens/s counts the tokens of the answers returned,
not the positions a batch computed for rows that had already finished (``decoded_positions``: a static batch decodes
every row until its longest answer ends; ``real_share``: answer tokens / decoded positions).

Layouts, greedy decoding, in one run:

- ``one_at_a_time``: batch size 1 (no padding, nothing wasted on finished rows; the reference answers);
- ``static_request_order``: static batches of ``--batch-size`` in request order (how the backend batched before
  it sorted by prompt length: the issue's "static batches of 8");
- ``backend``: ``TransformersGenerator`` as the workflow runs it: batches of ``--batch-size`` sorted by prompt
  length (less left padding in a batch), fp32 on a CPU (bf16 on a GPU).

Under greedy decoding every layout must return the answers of ``one_at_a_time``; ``identical_outputs`` says whether
they do (left padding changes a row's floating-point sums a little, which can flip a near-tie late in an answer:
``differing_answers`` counts them).

    python bench/generation.py [--model DIR | --random] [--max-new-tokens 96] [--batch-size 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sftlab.evaluation.generation import GenerationRequest, SamplingParams, TransformersGenerator

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DEMO_MODEL = ROOT / "resources" / "models" / "smollm2"


def fixture_prompts() -> list[str]:
    """MT-Bench fixture turns and AlpacaEval fixture instructions, in file order."""
    questions = [json.loads(line) for line in (FIXTURES / "mt_bench" / "question.jsonl").read_text().splitlines()]
    turns = [turn for q in questions for turn in q["turns"]]
    instructions = [row["instruction"] for row in json.loads((FIXTURES / "alpaca_eval" / "eval_set.json").read_text())]
    return turns + instructions


class RequestOrderGenerator(TransformersGenerator):
    """The backend with static batches in request order (no sorting by prompt length)."""

    def _batches(self, prompts, requests):
        return [list(range(k, min(k + self.batch_size, len(requests)))) for k in range(0, len(requests), self.batch_size)]


def load(args) -> tuple[object, object, str]:
    if args.random:
        from sftlab.models.random_init import build_random_model

        model, tokenizer = build_random_model(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
        return model, tokenizer, "random Llama (seeded)"
    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path}: no model directory; run `make demo` (it materialises {DEMO_MODEL}), pass --model "
                         "DIR or --random")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path), str(path)


def timed(generator: TransformersGenerator, requests: list[GenerationRequest]) -> tuple[float, list]:
    start = time.perf_counter()
    generations = generator.generate(requests)
    return time.perf_counter() - start, generations


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEMO_MODEL))
    ap.add_argument("--random", action="store_true", help="a seeded random model instead (no answer ends early)")
    ap.add_argument("--n-prompts", type=int, default=0, help="the first N prompts (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer, name = load(args)
    prompts = fixture_prompts()[: args.n_prompts or None]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    requests = [GenerationRequest([{"role": "user", "content": p}], params) for p in prompts]
    # one warm-up call so no timed run pays for first-call allocation
    TransformersGenerator(model, tokenizer, batch_size=1).generate(requests[:1])

    result = {"model": name, "model_parameters": sum(p.numel() for p in model.parameters()),
              "n_prompts": len(requests), "max_new_tokens": args.max_new_tokens, "torch_threads": args.threads,
              "device": "cpu", "machine": platform.processor() or platform.machine()}
    layouts = {"one_at_a_time": TransformersGenerator(model, tokenizer, batch_size=1),
               "static_request_order": RequestOrderGenerator(model, tokenizer, batch_size=args.batch_size),
               "backend": TransformersGenerator(model, tokenizer, batch_size=args.batch_size)}
    reference = None
    for label, generator in layouts.items():
        seconds, generations = timed(generator, requests)
        answers = [g.token_ids for g in generations]
        reference = reference or answers
        tokens = sum(len(a) for a in answers)
        # a static batch decodes every row until its longest answer ends
        batches = generator._batches([[0] * g.prompt_tokens for g in generations], requests)
        computed = sum(len(b) * max(len(answers[i]) for i in b) for b in batches)
        result[label] = {"batch_size": generator.batch_size, "seconds": round(seconds, 2), "answer_tokens": tokens,
                         "decoded_positions": computed, "real_share": round(tokens / computed, 3),
                         "tokens_per_s": round(tokens / seconds, 1),
                         "identical_outputs": answers == reference,
                         "differing_answers": sum(a != r for a, r in zip(answers, reference))}
    base = result["static_request_order"]["tokens_per_s"]
    result["backend_vs_static_request_order"] = round(result["backend"]["tokens_per_s"] / base, 2)
    result["backend_vs_one_at_a_time"] = round(result["backend"]["tokens_per_s"] / result["one_at_a_time"]["tokens_per_s"], 2)
    print(json.dumps(result, indent=2))
    if args.out:
        from sftlab.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
