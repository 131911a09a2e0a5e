"""The config, checked once, and the plan every rule's input, params and resources functions come from (sftlab.plan)."""

import os

from sftlab.plan import Plan
from sftlab.plan.load import load
from sftlab.offline import job_shell_prefix

# names the rule files use in their rules
from sftlab import run_config
from sftlab.compose.members import COMPOSED
from sftlab.report.dag import phase_benchmark
from sftlab.training.spec import reference_training

RAW_CONFIG, CFG = load(config, workflow.configfiles, ROOT)
PLAN = Plan(CFG, root=ROOT, workflow=workflow)
PLAN.raw_config = RAW_CONFIG


wildcard_constraints:
    model=PLAN._alternation(CFG["models"]),
    dataset=PLAN._alternation(CFG["datasets"]),
    recipe=PLAN._alternation(CFG["recipes"]),
    benchmark=PLAN._alternation(CFG["benchmarks"]),
    fraction=r"[0-9.e-]+",


# Jobs run `python` from PATH: the interpreter running Snakemake comes first (its venv holds sftlab's pins),
# unless --software-deployment-method conda puts the environment of envs/ there instead.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
CONDA_ENV = PLAN.CONDA_ENV
# scripts import sftlab from the source tree, installed or not (conda environments do not install it); jobs on
# cluster nodes (remote execution) run offline, reading what the login node fetched (sftlab.offline)
shell.prefix(job_shell_prefix(ROOT / "src", offline=workflow.remote_exec))
