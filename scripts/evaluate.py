"""Score one trained model on one benchmark in-process → scores/{benchmark}.json (and the model's answers, where
its type writes any). What the type reads besides the model (held-out pool, gathered files, πref) comes as
--input NAME=PATH, named by the type (sftlab.benchmarks)."""

import argparse
import json
import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftlab.benchmarks import benchmark_type
from sftlab.data.tokenize import ensure_chat_template
from sftlab.io import write_json, write_jsonl
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals

log = logging.getLogger("evaluate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--benchmark", required=True, help="benchmark name")
    ap.add_argument("--benchmark-config", required=True, help="the benchmark's config entry as JSON")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=PATH", help="an input the type reads")
    ap.add_argument("--scores", required=True)
    ap.add_argument("--answers", help="per-item answers (JSONL; empty where the type keeps none)")
    args = ap.parse_args()
    flush_denormals()
    setup_logging()
    cfg = json.loads(args.benchmark_config)
    inputs = dict(item.split("=", 1) for item in args.input)
    kind = benchmark_type(cfg["type"])
    kind.require_local_data(cfg)  # before the model loads: offline data missing fails here, not after generation

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to(device).eval()

    score, answers = kind.evaluate(model, tokenizer, cfg, inputs)
    score = {"benchmark": args.benchmark, **score}
    log.info("%s", json.dumps(score))
    if args.answers:
        write_jsonl(args.answers, answers)
    write_json(args.scores, score)


if __name__ == "__main__":
    main()
