"""What a demo job spends before its work: the interpreter with torch and transformers imported, then the model loaded.

Each phase runs in fresh processes (as every Snakemake job does), `--repeats` times, on one thread:
  python       bare interpreter start
  imports      + `import torch, transformers` and sftlab's scoring code (what evaluate.py / train.py import)
  load model   + AutoModelForCausalLM.from_pretrained(MODEL_DIR) and its tokenizer
The difference between rows is what each phase costs; compare it with a job's wall time in benchmarks/*.tsv.

    python bench/job_startup.py resources/models/smollm2 [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PHASES = {
    "python": "pass",
    "imports": "import torch, transformers; import sftlab.models.scoring",
    "load model": ("import torch, transformers; import sftlab.models.scoring\n"
                   "from sftlab.models.scoring import load_for_scoring; load_for_scoring({model!r}, 'cpu')"),
}


def time_phase(code: str, repeats: int) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = {name: time_phase(code.format(model=args.model_dir), args.repeats) for name, code in PHASES.items()}
    result = {name: {"median_s": statistics.median(v), "runs_s": v} for name, v in rows.items()}
    result["load_avg"] = os.getloadavg()
    for name, r in rows.items():
        print(f"{name:12s} median {statistics.median(r):6.2f} s  ({', '.join(f'{x:.2f}' for x in r)})")
    print(f"load average during the run: {result['load_avg']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
