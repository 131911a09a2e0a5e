"""What a demo job spends before its work, and what the start-up changes of the demo's jobs save, as ratios of one run.

Each row runs in fresh processes (as every Snakemake job does), `--repeats` times, on one thread; it reports the median
wall time and the median CPU time of the process and its children (the CPU time is what two jobs side by side on two
cores compete for; it moves less than the wall time when the machine is shared).

Start-up, each row one step further than the one above it (the difference is what the step costs):
  python        bare interpreter start
  imports       + `import torch, transformers` and sftlab's scoring code (what evaluate.py / train.py import)
  tokenizer     + AutoTokenizer.from_pretrained (it imports transformers' lazily loaded model-loading modules)
  load model    + AutoModelForCausalLM.from_pretrained(MODEL_DIR)

Changes, each as before / after in the same run:
  lm-eval task index        TaskManager over lm-eval's own task YAMLs and ours / ours only (rule evaluate, lm_eval
                            exams over local files: every mc_demo job)
  lm-eval environment report  simple_evaluate's pip list, conda, nvidia-smi, ... / skipped (same jobs)
  nll job                   a log_likelihood job of the demo's exam (24 items, max_length 96, batch 16) loading and
                            scoring the base model itself / reading the base log-probs that rule base_log_likelihood
                            wrote once (every log_likelihood job; the base scoring moves to one job per benchmark)

    python bench/job_startup.py resources/models/smollm2 [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAM = ROOT / "workflow" / "benchmarks" / "mc_demo" / "test.jsonl"

IMPORTS = "import torch, transformers; import sftlab.models.scoring\n"
TOKENIZER = IMPORTS + "from transformers import AutoTokenizer; AutoTokenizer.from_pretrained({model!r})\n"
STARTUP = {
    "python": "pass",
    "imports": IMPORTS,
    "tokenizer": TOKENIZER,
    "load model": IMPORTS + "from sftlab.models.scoring import load_for_scoring; load_for_scoring({model!r}, 'cpu')",
}

TASK_INDEX = ("import tempfile; from lm_eval.tasks import TaskManager\n"
              "TaskManager(include_path=tempfile.mkdtemp(), include_defaults={defaults})")
ENV_REPORT = "from lm_eval.loggers.utils import add_env_info; add_env_info({{}})" + "\n"
# one log_likelihood job of the demo's exam, as it was (the base model loaded and scored in every job) and as it is
NLL_SETUP = (IMPORTS + "from sftlab.models.scoring import load_for_scoring\n"
             "from sftlab.benchmarks.nll import benchmark_items, encode_items, base_scores, score_nll\n"
             "from sftlab.models.scoring import pad_id, score_examples\n"
             "import pandas as pd\n"
             "items = benchmark_items({{'items': 'exam'}}, {exam!r})\n"
             "model, tok = load_for_scoring({model!r}, 'cpu')\n")
NLL_BEFORE = NLL_SETUP + ("reference, _ = load_for_scoring({model!r}, 'cpu')\n"
                          "kept, enc = encode_items(tok, items, 96)\n"
                          "score_examples(model, enc, pad_id(tok), 16); score_examples(reference, enc, pad_id(tok), 16)\n")
NLL_AFTER = NLL_SETUP + "score_nll(model, tok, items, pd.read_parquet({base!r}), 96, 16, 2000, 0)\n"
CHANGES = {
    "lm-eval task index": (TASK_INDEX.format(defaults=True), TASK_INDEX.format(defaults=False)),
    "lm-eval environment report": (ENV_REPORT, "pass"),
    "nll job": (NLL_BEFORE, NLL_AFTER),
}


def run_once(code: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process running ``code``, its children's CPU included."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(code: str, repeats: int) -> dict:
    runs = [run_once(code) for _ in range(repeats)]
    return {"wall_s": statistics.median(w for w, _ in runs), "cpu_s": statistics.median(c for _, c in runs),
            "runs": runs}


def write_base_table(model_dir: str, out: Path) -> None:
    """The exam's base log-probs as rule base_log_likelihood writes them (input of the `after` nll job)."""
    code = (IMPORTS + "from sftlab.models.scoring import load_for_scoring\n"
            "from sftlab.benchmarks.nll import base_scores, benchmark_items\n"
            f"model, tok = load_for_scoring({model_dir!r}, 'cpu')\n"
            f"base_scores(model, tok, benchmark_items({{'items': 'exam'}}, {str(EXAM)!r}), 96, 16)"
            f".to_parquet({str(out)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"load_avg_start": os.getloadavg(), "startup": {}, "changes": {}}
    print(f"{'start-up':30s} {'wall (s)':>9s} {'CPU (s)':>8s}")
    for name, code in STARTUP.items():
        row = result["startup"][name] = measure(code.format(model=args.model_dir), args.repeats)
        print(f"{name:30s} {row['wall_s']:9.2f} {row['cpu_s']:8.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "exam_nll.parquet"
        write_base_table(args.model_dir, base)
        print(f"\n{'change':30s} {'CPU before':>10s} {'CPU after':>9s} {'ratio':>6s} {'wall ratio':>10s}")
        for name, (before, after) in CHANGES.items():
            fill = {"model": args.model_dir, "exam": str(EXAM), "base": str(base)}
            b, a = measure(before.format(**fill), args.repeats), measure(after.format(**fill), args.repeats)
            row = result["changes"][name] = {"before": b, "after": a, "cpu_ratio": a["cpu_s"] / b["cpu_s"],
                                             "wall_ratio": a["wall_s"] / b["wall_s"]}
            print(f"{name:30s} {b['cpu_s']:10.2f} {a['cpu_s']:9.2f} {row['cpu_ratio']:6.2f} {row['wall_ratio']:10.2f}")
    result["load_avg_end"] = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at the start {result['load_avg_start']}, at the end {result['load_avg_end']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
