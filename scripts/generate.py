"""Generate a model's answers to a judged benchmark, in the benchmark's own format.

mt_bench: --input question.jsonl → model_answer JSONL (both turns, turn 2 sees the model's turn-1 answer,
temperature by category). alpaca_eval: --input eval set JSON → model_outputs JSON. preference: --input
preference pairs JSONL → {"id", "subtask", "answer"} JSONL.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sftlab.evaluation import alpacaeval, mtbench, preference
from sftlab.evaluation.generation import build_generator
from sftlab.io import read_jsonl, write_json, write_jsonl
from sftlab.numerics import flush_denormals

DEFAULT_MAX_NEW_TOKENS = {"mt_bench": mtbench.MAX_NEW_TOKENS, "alpaca_eval": 2048, "preference": 512}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark", required=True, choices=sorted(DEFAULT_MAX_NEW_TOKENS))
    ap.add_argument("--model", required=True, help="model directory (Hugging Face format)")
    ap.add_argument("--model-id", required=True, help="name written into the answers (model_id / generator)")
    ap.add_argument("--input", required=True, help="questions, eval set or preference pairs (see above)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="transformers", help="generation backend: transformers or vllm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, help="default: 1024 mt_bench, 2048 alpaca_eval, 512 preference")
    ap.add_argument("--temperature", type=float, default=0.0, help="alpaca_eval and preference (mt_bench: by category)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, ...")
    args = ap.parse_args(argv)
    flush_denormals()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    options = {"seed": args.seed, "batch_size": args.batch_size}
    if args.backend == "transformers":
        options.update(device=args.device, dtype=args.dtype)
    generator = build_generator(args.backend, args.model, **options)
    max_new_tokens = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[args.benchmark]
    if args.benchmark == "mt_bench":
        questions = mtbench.load_questions(args.input)
        answers = mtbench.generate_answers(generator, questions, args.model_id, max_new_tokens=max_new_tokens)
        write_jsonl(args.out, answers)
    elif args.benchmark == "alpaca_eval":
        eval_set = alpacaeval.load_eval_set(args.input)
        outputs = alpacaeval.generate_model_outputs(
            generator, eval_set, args.model_id, max_new_tokens=max_new_tokens, temperature=args.temperature
        )
        write_json(args.out, outputs)
    else:
        pairs = read_jsonl(args.input)
        answers = preference.generate_answers(generator, pairs, max_new_tokens=max_new_tokens, temperature=args.temperature)
        write_jsonl(args.out, answers)
    logging.info("wrote %s answers of %s to %s", args.benchmark, args.model_id, args.out)


if __name__ == "__main__":
    main()
