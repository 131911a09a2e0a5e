"""Predicted GPU-hours per cost phase of every paper config: the jobs Snakemake plans for it (its DAG, with each
rule's GPUs and the phase its benchmark file declares), priced by sftlab.report.gpu_cost under the assumptions in
src/sftlab/report/gpu_cost.yaml (H100 bf16 peak, training MFU by layout, forward MFU, vLLM decode rate, batch layouts'
real-token shares from bench/batching.py). Arithmetic, not GPU measurements, unless ``--calibration`` gives the
training MFU that bench/gpu_smoke.py --calibrate measured.

Usage: ``python bench/gpu_cost.py [configs ...] [--calibration FILE]``; prints a Markdown table (the README's cluster
section shows it).
"""

from __future__ import annotations

import argparse
import sys

import yaml
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _plan import PAPER_CONFIGS  # noqa: E402

from sftlab.preflight import planned  # noqa: E402
from sftlab.report.dag import PHASES  # noqa: E402
from sftlab.report.gpu_cost import load_assumptions, stage_hours  # noqa: E402


def config_hours(configfile: Path, assumptions: dict) -> tuple[int, dict[str, float]]:
    with tempfile.TemporaryDirectory() as workdir:
        config, jobs = planned(configfile, Path(workdir))
    return len(jobs), stage_hours(jobs, config, assumptions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("configs", nargs="*", type=Path)
    ap.add_argument("--gpu", nargs=3, metavar=("NAME", "TFLOPS", "GBS"),
                    help="another GPU (bf16 dense TFLOP/s, GB/s), e.g. A100-SXM-80GB 312 2039 to compare with a paper")
    ap.add_argument("--calibration", type=Path,
                    help="training MFU measured by bench/gpu_smoke.py --calibrate (replaces training_mfu)")
    args = ap.parse_args()
    a = load_assumptions()
    if args.calibration:
        a["training_mfu"] = yaml.safe_load(args.calibration.read_text())["training_mfu"]
    if args.gpu:
        a["gpu"].update(name=args.gpu[0], bf16_dense_tflops=float(args.gpu[1]), bandwidth_gbs=float(args.gpu[2]))
    rows = {c.stem: config_hours(c, a) for c in (args.configs or PAPER_CONFIGS)}
    stages = [s for s in PHASES if any(s in h for _, h in rows.values())]
    mfu = a["training_mfu"]
    measured = f"measured on {mfu['device']}" if mfu.get("measured") else "published figures, unmeasured by us"
    print(f"GPU: {a['gpu']['name']}, {a['gpu']['bf16_dense_tflops']} TFLOP/s bf16 dense; training at the MFU of its "
          f"layout (training_mfu: {measured}), forward passes and gradient features at {a['gpu']['mfu']:.0%}; "
          f"decode {a['decode_tokens_per_s']['vllm']} tokens/s/GPU (vLLM), "
          f"{a['decode_tokens_per_s']['transformers']} (transformers)\n")
    print("| config | jobs | " + " | ".join(stages) + " | total |")
    print("|---|---:|" + "---:|" * (len(stages) + 1))
    for name, (jobs, hours) in rows.items():
        cells = [f"{hours[s]:,.0f}" if s in hours else "–" for s in stages]
        print(f"| {name} | {jobs:,} | " + " | ".join(cells) + f" | {sum(hours.values()):,.0f} |")
    for paper, reported in a["papers"].items():
        for stage, text in reported.items():
            print(f"\n{paper}, {stage}: the paper reports {text}")


if __name__ == "__main__":
    main()
