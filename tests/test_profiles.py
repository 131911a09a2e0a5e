"""`snakemake --profile slurm` typed at the repository root, as cluster users type it, without a Slurm cluster:
Snakemake finds a profile named `slurm` in the current directory (before ~/.config/snakemake and the site's
directory), and that is this repository's profiles/slurm, with the workflow profile profiles/default still loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_profile_named_slurm_resolves_to_profiles_slurm_from_the_root(monkeypatch, tmp_path, capsys):
    from snakemake.cli import get_profile_dir, parse_args

    monkeypatch.chdir(ROOT)
    # no user or site profile of that name can be what is found
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "site"))
    found = get_profile_dir("slurm")
    assert found is not None, "snakemake --profile slurm: no profile named slurm at the repository root"
    assert found[1].resolve() == (ROOT / "profiles" / "slurm" / "config.yaml").resolve()
    monkeypatch.setenv("SFTLAB_SLURM_NO_ACCOUNT", "1")
    # the profile sets SFTLAB_CLUSTER in this process: unset here, and unset again after the test
    monkeypatch.setenv("SFTLAB_CLUSTER", "")
    monkeypatch.delenv("SFTLAB_CLUSTER")
    _, args = parse_args(["--profile", "slurm", "-n"])
    assert args.executor == "slurm" and args.jobs == 100 and args.latency_wait == 120 and args.slurm_no_account is True
    assert os.environ["SFTLAB_CLUSTER"] == "profiles/slurm/cluster.yaml"
    assert "Using profiles slurm and workflow specific profile profiles/default" in capsys.readouterr().err


def test_dry_run_with_the_short_profile_name_from_the_root(tmp_path):
    """The command itself, planning configs/tiny.yaml into a scratch directory (no job runs, no Slurm needed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--configfile", "configs/tiny.yaml",
         "--directory", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
             "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in out
    assert "This was a dry-run" in out and "rule train:" in out
