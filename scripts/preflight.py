"""The preflight: run on the login node before a cluster run; it names the config key of each problem and its fix.

    python scripts/preflight.py --configfile configs/paper/<paper>.yaml [--sdm conda]
    python scripts/preflight.py --configfile configs/paper/<paper>.yaml --offline   # no network, no cluster (CI)

It plans the run, checks hub access, fetches every download the jobs need into the caches they read offline (and
proves each job's offline read works), checks prompt formats, judge endpoints, conda environments and the cluster
description against sinfo (sftlab.preflight). Exit status 1 when any check found a problem.
"""

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", required=True, type=Path)
    ap.add_argument("--directory", default=".", type=Path, help="the run's working directory (default: here)")
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "slurm"),
                    help="the profile the run uses (default: profiles/slurm; none: no profile)")
    ap.add_argument("--sdm", choices=["conda"], help="the run's --software-deployment-method (conda: build the envs)")
    ap.add_argument("--offline", action="store_true",
                    help="only the checks that need neither network nor cluster: plan, caches, prompt formats")
    ap.add_argument("--only", help="comma-separated checks to run (plan, hub, downloads, caches, prompt_format, "
                                   "judges, conda, cluster)")
    ap.add_argument("--json", action="store_true", help="print the findings as one JSON line")
    args = ap.parse_args(argv)
    # relative caches (resources/nltk_data) are the run's working directory's, as in its jobs: run from there
    configfile, profile = args.configfile.resolve(), None if args.profile == "none" else Path(args.profile).resolve()
    workdir = args.directory.resolve()
    if args.offline:
        # read by huggingface_hub and datasets when imported: set first, as in a job on a compute node
        os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    sys.path.insert(0, str(ROOT / "src"))
    from sftlab.logs import setup_logging
    from sftlab.preflight import has_problems, run_preflight, summary

    setup_logging()

    here = os.getcwd()
    os.chdir(workdir)
    try:
        findings = run_preflight(configfile, workdir, profile, args.sdm, args.offline,
                                 args.only.split(",") if args.only else None)
    finally:
        os.chdir(here)
    print(json.dumps([asdict(f) for f in findings]) if args.json else summary(findings))
    return 1 if has_problems(findings) else 0


if __name__ == "__main__":
    sys.exit(main())
