"""Generate a model's answers to a benchmark, in the benchmark type's own format (sftlab.benchmarks).

--data is the benchmark's gathered directory (results/benchmarks/{benchmark}/): the type knows which file it
answers (MT-Bench question.jsonl → model_answer JSONL, AlpacaEval eval_set.json → model_outputs JSON, ...).
"""

from __future__ import annotations

import argparse
import logging

from sftlab.benchmarks import BENCHMARK_TYPES, benchmark_type
from sftlab.evaluation.generation import build_generator
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals

log = logging.getLogger("generate")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark-type", required=True, choices=sorted(BENCHMARK_TYPES))
    ap.add_argument("--model", required=True, help="model directory (Hugging Face format)")
    ap.add_argument("--model-id", required=True, help="name written into the answers (model_id / generator)")
    ap.add_argument("--data", required=True, help="the benchmark's gathered files (see above)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="transformers", help="generation backend: transformers or vllm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, help="default: the benchmark type's own")
    ap.add_argument("--temperature", type=float, default=0.0, help="where the type does not set its own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, ...")
    args = ap.parse_args(argv)
    flush_denormals()
    setup_logging()

    kind = benchmark_type(args.benchmark_type)
    options = {"seed": args.seed, "batch_size": args.batch_size}
    if args.backend == "transformers":
        options.update(device=args.device, dtype=args.dtype)
    generator = build_generator(args.backend, args.model, **options)
    answers = kind.generate(generator, args.data, args.model_id, args.max_new_tokens or kind.max_new_tokens,
                            args.temperature)
    kind.write_answers(args.out, answers)
    log.info("wrote %d %s answers of %s to %s", len(answers), kind.name, args.model_id, args.out)


if __name__ == "__main__":
    main()
