"""A judge calibration's published judgments (downloaded and checked against their pinned sha256, or copied from the
calibration's data_dir) and their seeded sample → <out>/sample.jsonl and <out>/SOURCE.json (sftlab.evaluation.
calibration_sources). Runs on the login node (a localrule): compute nodes may have no internet."""

import argparse
import json
import tempfile

from sftlab.evaluation.calibration_sources import gather, sample
from sftlab.io import write_json, write_jsonl
from sftlab.logs import setup_logging


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark-type", required=True)
    ap.add_argument("--benchmark-name", required=True, help="the benchmark's config name (for its config key)")
    ap.add_argument("--calibration", required=True, help="JSON: benchmarks.<name>.calibration")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    setup_logging()
    calib, key = json.loads(args.calibration), f"benchmarks.{args.benchmark_name}.calibration"
    with tempfile.TemporaryDirectory() as tmp:   # the published files are large; only the sample is kept
        source = gather(args.benchmark_type, calib, key, tmp)
        rows = sample(args.benchmark_type, calib, key, tmp)
    models = sorted({r["model"] for r in rows})
    write_jsonl(f"{args.out}/sample.jsonl", rows)
    write_json(f"{args.out}/SOURCE.json", {**source, "models": models, "items": calib.get("items", 10),
                                            "seed": calib.get("seed", 0), "rows": len(rows)})


if __name__ == "__main__":
    main()
