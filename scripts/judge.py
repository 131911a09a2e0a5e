"""Judge a model's benchmark answers → judgments JSONL and scores JSON (cached: a rerun makes no judge call).

--judge is the judge's config as JSON (see sftlab.evaluation.judges), e.g.
'{"backend": "openai", "model": "gpt-4-1106-preview", "api_key_env": "OPENAI_API_KEY"}'.
--cache must survive failed jobs (it is how an interrupted job resumes): pass it as a parameter, not an output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from sftlab.evaluation import alpacaeval, mtbench, preference
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.judges import build_judge
from sftlab.io import read_jsonl, write_json, write_jsonl
from sftlab.numerics import flush_denormals


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark", required=True, choices=["mt_bench", "alpaca_eval", "preference"])
    ap.add_argument("--answers", required=True, help="the model's answers, as written by generate.py")
    ap.add_argument("--judge", required=True, help="judge config as JSON")
    ap.add_argument("--cache", required=True, help="judgment cache (append-only JSONL)")
    ap.add_argument("--judgments", required=True, help="output judgments JSONL")
    ap.add_argument("--scores", required=True, help="output scores JSON")
    ap.add_argument("--questions", help="mt_bench: question.jsonl")
    ap.add_argument("--judge-prompts", help="mt_bench: judge_prompts.jsonl")
    ap.add_argument("--references", help="mt_bench: reference_answer/gpt-4.jsonl")
    ap.add_argument("--eval-set", help="alpaca_eval: eval set with reference outputs (JSON)")
    ap.add_argument("--pairs", help="preference: preference pairs JSONL")
    ap.add_argument("--annotator", default="weighted_alpaca_eval_gpt4_turbo", help="alpaca_eval / preference annotator")
    ap.add_argument("--benchmark-name", help="name in the scores file (default: --benchmark), e.g. pref_shp")
    ap.add_argument("--judge-name", help="the judge's name in the config, recorded in the scores (default: its id)")
    ap.add_argument("--n-resamples", type=int, default=2000)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    flush_denormals()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    config = json.loads(args.judge)
    judge = build_judge(config)
    cache = JudgmentCache(args.cache)
    stats = {"n_resamples": args.n_resamples, "confidence": args.confidence, "seed": args.seed}
    if args.benchmark == "mt_bench":
        if not (args.questions and args.judge_prompts and args.references):
            ap.error("mt_bench needs --questions, --judge-prompts and --references")
        answer_rows = read_jsonl(args.answers)
        judgments, usage = mtbench.judge_answers(
            judge,
            cache,
            mtbench.load_questions(args.questions),
            mtbench.load_answers(args.answers),
            mtbench.load_judge_prompts(args.judge_prompts),
            mtbench.load_answers(args.references),
            model_id=answer_rows[0]["model_id"] if answer_rows else "",
            max_tokens=config.get("max_tokens", mtbench.JUDGE_MAX_TOKENS),
        )
        scores = mtbench.score(judgments, **stats)
    elif args.benchmark == "alpaca_eval":
        if not args.eval_set:
            ap.error("alpaca_eval needs --eval-set")
        eval_set = alpacaeval.load_eval_set(args.eval_set)
        outputs = alpacaeval.load_eval_set(args.answers)
        items = alpacaeval.pair_with_reference(outputs, eval_set)
        judgments, usage = alpacaeval.annotate_pairs(
            judge, cache, alpacaeval.get_annotator(args.annotator), items, seed=args.seed
        )
        scores = alpacaeval.score(
            judgments,
            model_name=outputs[0].get("generator", "model") if outputs else "model",
            reference_name=eval_set[0].get("generator", "reference") if eval_set else "reference",
            **stats,
        )
    else:
        if not args.pairs:
            ap.error("preference needs --pairs")
        judgments, usage = preference.judge_answers(
            judge, cache, alpacaeval.get_annotator(args.annotator), read_jsonl(args.pairs), read_jsonl(args.answers), seed=args.seed
        )
        scores = preference.score(judgments, **stats)
    if args.benchmark != "mt_bench":
        scores["annotator"] = args.annotator
    if args.benchmark_name:
        scores["benchmark"] = args.benchmark_name
    scores["judge"] = {"name": args.judge_name or judge.id, "id": judge.id, "backend": judge.backend,
                       "demo_quality": bool(config.get("demo_quality", False))}
    scores["judge_cost"] = usage.to_dict()
    write_jsonl(args.judgments, judgments)
    write_json(args.scores, scores)
    logging.info(
        "%s: %s = %s [%s, %s] over %d (%d unparsable); judge calls %d, from cache %d",
        scores["benchmark"], scores["metric"], scores["value"], scores["ci_low"], scores["ci_high"],
        scores["n"], scores["n_unparsable"], usage.calls, usage.cached,
    )


if __name__ == "__main__":
    main()
