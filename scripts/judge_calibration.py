"""Re-judge a calibration's sample of published judgments with the configured judge and report the agreement with
the original judge: rank correlation over models, per-item agreement and the mapping of scores
(sftlab.evaluation.calibration) → --rows (JSONL, one per model × item) and --summary (JSON)."""

import argparse
import json
import sys
from pathlib import Path

from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.calibration import calibration_summary
from sftlab.evaluation.calibration_sources import source_of
from sftlab.evaluation.judges import build_judge, judge_identity
from sftlab.io import read_jsonl, write_json, write_jsonl
from sftlab.logs import setup_logging


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark-type", required=True)
    ap.add_argument("--benchmark-name", required=True)
    ap.add_argument("--sample", required=True, help="the calibration's folder (sample.jsonl, SOURCE.json)")
    ap.add_argument("--data", required=True, help="the benchmark's gathered files (MT-Bench: its judge prompts)")
    ap.add_argument("--judge", required=True, help="judge config as JSON")
    ap.add_argument("--judge-name", required=True)
    ap.add_argument("--cache", required=True, help="judgment cache (append-only JSONL)")
    ap.add_argument("--annotator", default="weighted_alpaca_eval_gpt4_turbo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    config = json.loads(args.judge)
    judge = build_judge(config)
    source = source_of(args.benchmark_type, f"benchmarks.{args.benchmark_name}.calibration")
    published = json.loads((Path(args.sample) / "SOURCE.json").read_text())
    rows, usage, prompt_version = source.rejudge(judge, JudgmentCache(args.cache),
                                                 read_jsonl(Path(args.sample) / "sample.jsonl"), args.data,
                                                 {"annotator": args.annotator, "seed": args.seed}, config)
    summary = calibration_summary(rows, source.kind)
    if summary["per_item"]["items"] == 0 and rows and not config.get("demo_quality", False):
        # no agreement to report: a real judge that never rates is an error, not a row of n/a in the report
        sys.exit(f"{args.benchmark_name}: judge {judge.id} gave no parsable score on any of the {len(rows)} published "
                 f"items re-judged (its raw answers are in {args.cache}); check the judge model and its max_tokens")
    write_jsonl(args.rows, rows)
    write_json(args.summary, {"benchmark": args.benchmark_name, "original_judge": published["original_judge"],
                              "published": published,
                              "judge": judge_identity(judge, config, args.judge_name, usage, prompt_version),
                              "judge_cost": usage.to_dict(), **summary})


if __name__ == "__main__":
    main()
