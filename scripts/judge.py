"""Judge a model's benchmark answers → judgments JSONL and scores JSON (cached: a rerun makes no judge call).

--data is the benchmark's gathered directory (results/benchmarks/{benchmark}/); its type (sftlab.benchmarks)
knows which files it reads. --judge is the judge's config as JSON (see sftlab.evaluation.judges), e.g.
'{"backend": "openai", "model": "gpt-4-1106-preview", "api_key_env": "OPENAI_API_KEY"}'.
--cache must survive failed jobs (it is how an interrupted job resumes): pass it as a parameter, not an output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from sftlab.benchmarks import BENCHMARK_TYPES, benchmark_type
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.judges import RepeatedJudge, build_judge, judge_identity, repeat_spread
from sftlab.io import write_json, write_jsonl
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals

log = logging.getLogger("judge")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark-type", required=True,
                    choices=sorted(n for n, t in BENCHMARK_TYPES.items() if t.scored_by == "judge"))
    ap.add_argument("--data", required=True, help="the benchmark's gathered files")
    ap.add_argument("--answers", required=True, help="the model's answers, as written by generate.py")
    ap.add_argument("--judge", required=True, help="judge config as JSON")
    ap.add_argument("--cache", required=True, help="judgment cache (append-only JSONL)")
    ap.add_argument("--judgments", required=True, help="output judgments JSONL")
    ap.add_argument("--scores", required=True, help="output scores JSON")
    ap.add_argument("--annotator", default="weighted_alpaca_eval_gpt4_turbo", help="pairwise annotator, where the type has one")
    ap.add_argument("--benchmark-name", help="name in the scores file (default: the type's), e.g. pref_shp")
    ap.add_argument("--judge-name", help="the judge's name in the config, recorded in the scores (default: its id)")
    ap.add_argument("--paper-judge", help="the judge model of the paper's numbers, recorded beside ours")
    ap.add_argument("--n-resamples", type=int, default=2000)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    flush_denormals()
    setup_logging()
    # one line per judge request is noise; failed attempts and retries are still logged by the judge and the SDK
    logging.getLogger("httpx2").setLevel(logging.WARNING)

    config = json.loads(args.judge)
    judge = build_judge(config)
    cache = JudgmentCache(args.cache)
    settings = {"annotator": args.annotator, "seed": args.seed,
                "stats": {"n_resamples": args.n_resamples, "confidence": args.confidence, "seed": args.seed}}
    kind = benchmark_type(args.benchmark_type)
    judgments, usage, scores = kind.judge(judge, cache, args.data, args.answers, settings, config)
    if args.benchmark_name:
        scores["benchmark"] = args.benchmark_name
    scores["judge"] = judge_identity(judge, config, args.judge_name, usage,
                                     kind.judge_prompt_version(args.data, settings), args.paper_judge)
    # the score stays the first judging's (the protocol's single judgment); repeats give the judge's spread
    repeats, cost = int(config.get("repeats", 1)), usage
    if repeats > 1:
        values = [scores["value"]]
        for repeat in range(1, repeats):
            _, more, again = kind.judge(RepeatedJudge(judge, repeat, config.get("repeat_temperature")), cache,
                                        args.data, args.answers, settings, config)
            values.append(again["value"])
            cost = cost.merged(more)
        scores["judge"].update(repeats=repeats, repeat_temperature=config.get("repeat_temperature"))
        scores["judge_repeats"] = repeat_spread(values)
    scores["judge_cost"] = cost.to_dict()
    scores["per_item"] = kind.item_values(judgments)
    write_jsonl(args.judgments, judgments)
    if scores.get("n") == 0 and scores.get("n_unparsable", 0) > 0:
        # a null score drops the benchmark from every table without a word: a real judge that never rates is an error
        message = (f"{scores['benchmark']}: none of the {scores['n_unparsable']} judgments of judge {judge.id} holds a "
                   f"rating in the expected format, so there is no score; its raw answers are in {args.cache} (check "
                   "the judge model, its max_tokens and the server's answers)")
        if not config.get("demo_quality", False):
            sys.exit(message)
        log.warning("%s; a demo-quality judge: the score is written as null", message)
    write_json(args.scores, scores)
    log.info(
        "%s: %s = %s [%s, %s] over %d (%d unparsable); judge calls %d, from cache %d",
        scores["benchmark"], scores["metric"], scores["value"], scores["ci_low"], scores["ci_high"],
        scores["n"], scores["n_unparsable"], cost.calls, cost.cached,
    )


if __name__ == "__main__":
    main()
