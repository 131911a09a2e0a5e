"""Score one trained model on its exams in-process, the model loaded once → a Scores file per exam (and the model's
answers, where its type writes any). ``--exams`` maps each exam's name to its config entry, the inputs the type
reads besides the model (held-out pool, gathered files, base log-probs: NAME → PATH, named by the type,
sftlab.benchmarks) and its output paths. With ``--cache``, an exam whose result is kept there under an unchanged
key (sftlab.evaluation.exams) is not scored again."""

import argparse
import json
import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftlab.benchmarks import benchmark_type
from sftlab.data.tokenize import ensure_chat_template
from sftlab.evaluation.exams import cached_result, code_digest, exam_key, keep_result, model_signature
from sftlab.io import write_json, write_jsonl
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals

log = logging.getLogger("evaluate")


def load(model_dir, device):
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval(), tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--exams", required=True,
                    help='JSON: {name: {"config": {...}, "inputs": {NAME: PATH}, "scores": PATH, "answers": PATH}}')
    ap.add_argument("--cache", help="directory keeping each exam's latest result under its key")
    args = ap.parse_args()
    flush_denormals()
    setup_logging()
    exams = json.loads(args.exams)
    for exam in exams.values():  # before the model loads: offline data missing fails here, not after scoring
        benchmark_type(exam["config"]["type"]).require_local_data(exam["config"])

    device = "cuda" if torch.cuda.is_available() else "cpu"
    signature = model_signature(args.model_dir) if args.cache else None
    loaded = None
    for name, exam in exams.items():
        cfg = exam["config"]
        kind = benchmark_type(cfg["type"])
        key = exam_key(cfg, exam["inputs"], signature, code_digest(__file__, type(kind).__module__),
                       device) if args.cache else None
        kept = cached_result(args.cache, name, key) if args.cache else None
        if kept is not None:
            log.info("%s: settings, inputs, model and code unchanged, its kept result reused", name)
            score, answers = kept
        else:
            loaded = loaded or load(args.model_dir, device)
            score, answers = kind.evaluate(*loaded, cfg, exam["inputs"])
            score = {"benchmark": name, **score}
            if args.cache:
                keep_result(args.cache, name, key, score, answers)
        log.info("%s", json.dumps(score))
        if exam.get("answers"):
            write_jsonl(exam["answers"], answers)
        write_json(exam["scores"], score)


if __name__ == "__main__":
    main()
