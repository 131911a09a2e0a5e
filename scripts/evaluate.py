"""Evaluate one trained model on one benchmark → scores/{benchmark}.json (and the model's answers, where it writes any)."""

import argparse
import json
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sftlab.data.tokenize import ensure_chat_template
from sftlab.io import read_jsonl, write_json, write_jsonl
from sftlab.numerics import flush_denormals


def implicit_reward(model, tokenizer, cfg: dict, reference_dir: str, pairs_path: str, dtype, device) -> dict:
    """The judge-free win rate (β·r(y_w) > β·r(y_l)) in percent, like every other win rate in the tables."""
    from sftlab.evaluation.implicit_reward import implicit_reward_win_rate

    if not (reference_dir and pairs_path):
        raise SystemExit("implicit_reward needs --reference-model and --pairs")
    reference = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=dtype).to(device).eval()
    result = implicit_reward_win_rate(model, reference, tokenizer, read_jsonl(pairs_path), beta=cfg["beta"],
                                      max_length=cfg["max_length"], batch_size=cfg["batch_size"],
                                      n_boot=cfg["n_resamples"], seed=cfg["seed"])
    return {**result, **{k: 100 * result[k] for k in ("value", "ci_low", "ci_high")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--benchmark", required=True, help="benchmark name")
    ap.add_argument("--benchmark-config", required=True, help="the benchmark's config entry as JSON")
    ap.add_argument("--heldout", help="held-out examples (exact_match; exam items for lm_eval with exam_from)")
    ap.add_argument("--train", help="training pool (few-shot exam items for lm_eval with exam_from)")
    ap.add_argument("--reference-model", help="implicit_reward: the reference model πref (the untrained base model)")
    ap.add_argument("--pairs", help="implicit_reward: preference pairs JSONL")
    ap.add_argument("--scores", required=True)
    ap.add_argument("--answers", help="per-item answers (JSONL; empty for lm_eval)")
    args = ap.parse_args()
    flush_denormals()
    cfg = json.loads(args.benchmark_config)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to(device).eval()

    answers: list[dict] = []
    if cfg["type"] == "exact_match":
        from sftlab.evaluation.exact_match import exact_match

        examples = read_jsonl(args.heldout)[: cfg.get("limit")]
        score, answers = exact_match(model, tokenizer, examples, cfg["max_new_tokens"], cfg["batch_size"])
    elif cfg["type"] == "lm_eval":
        from sftlab.evaluation.multiple_choice import run_lm_eval, write_exam_dir

        with tempfile.TemporaryDirectory() as tmp:
            data_dir = cfg.get("data_dir")
            if cfg.get("exam_from") == "heldout":
                # the held-out part of an exam the model was trained on; few-shot examples from the training part
                items = lambda path: [e["exam"] for e in read_jsonl(path) if "exam" in e]  # noqa: E731
                data_dir = write_exam_dir(tmp, items(args.heldout), items(args.train)[: max(1, cfg["num_fewshot"])])
            score = run_lm_eval(model, tokenizer, cfg["task"], cfg["num_fewshot"], cfg["batch_size"], cfg["metric"],
                                data_dir=data_dir, limit=cfg.get("limit"), answer_prompt=cfg["answer_prompt"],
                                include_path=cfg.get("include_path"), metric_filter=cfg["filter"])
    elif cfg["type"] == "implicit_reward":
        score = implicit_reward(model, tokenizer, cfg, args.reference_model, args.pairs, dtype, device)
    else:
        raise SystemExit(f"benchmarks.{args.benchmark}.type: {cfg['type']!r} is not an evaluation this script runs")
    score = {"benchmark": args.benchmark, **score}
    print(json.dumps(score), file=sys.stderr)
    if args.answers:
        write_jsonl(args.answers, answers)
    write_json(args.scores, score)


if __name__ == "__main__":
    main()
