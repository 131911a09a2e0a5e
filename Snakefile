"""sftlab: SFTMix, MinorSFT, ROSE/LESS and Disperse-Then-Merge against plain SFT, as one workflow.

snakemake --cores 2                                   # the demo (config.yaml)
snakemake --cores 2 --configfile configs/tiny.yaml    # the test scale
snakemake --profile profiles/slurm --sdm conda --configfile configs/paper/<paper>.yaml
"""

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

ROOT = Path(workflow.basedir)
sys.path.insert(0, str(ROOT / "src"))

# The demo's config.yaml is the default, not a base: `--configfile configs/...` replaces it instead of being merged
# into it (Snakemake merges by default, which would smuggle the demo's models and experiments into every config).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/influence.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/methods_report.smk"
include: "workflow/rules/mechanisms.smk"
# last: the cost report depends on every other report
include: "workflow/rules/cost.smk"


onstart:
    # a real run evaluates a job's resources (and their checks) only when the job is ready: check every planned
    # job before the first starts, as a dry run does
    check_planned_jobs(workflow.dag.needrun_jobs())
    PLAN.check_judge_keys(workflow.dag.needrun_jobs())
    # the config that ran, for the cost report (written here, by the main process, once the checks passed and
    # before any job)
    write_run_config()


rule all:
    input:
        report_outputs(),
    default_target: True
