"""Planning imports no deep-learning stack: every sftlab module the rule files import (sftlab.benchmarks among them:
every benchmark type's module, its scoring code included) loads without torch, transformers or mergekit (each
costs seconds of every `snakemake` command; bench/plan_paper.py times it). pandas is allowed: the Slurm executor
plugin, which Snakemake loads on every command, imports it anyway."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mergekit", "peft", "datasets")


def test_the_modules_planning_imports_load_no_deep_learning_stack():
    modules = sorted({m for f in (ROOT / "workflow" / "rules").glob("*.smk")
                      for m in re.findall(r"^from (sftlab[\w.]*) import", f.read_text(), flags=re.M)})
    # the rules' functions are sftlab.plan's methods: it imports what planning needs, every benchmark type among it
    assert "sftlab.plan" in modules
    code = (f"import sys; import {', '.join(modules)}; assert 'sftlab.benchmarks' in sys.modules; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
