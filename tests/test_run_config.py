"""The snapshot of the config that ran (sftlab.run_config): written once by the main process at a run's start,
content-stable, credentials masked; the cost report rebuilds its DAG from it and describes it."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sftlab import run_config

ROOT = Path(__file__).resolve().parents[1]


def test_credentials_are_masked_and_ordinary_values_kept():
    config = {"judges": {"j": {"base_url": "https://user:pw@host/v1?api-key=abc", "api_key_env": "OPENAI_API_KEY",
                               "model": "gpt-4o"}},
              "benchmarks": {"mt": {"fastchat_commit": "587d5cfa1609a43d192cedb8441cac3c17db105d"}},
              "x": {"hf_token": "anything", "list": ["sk-abcdefghijklmnop1234", "plain"]}}
    out = run_config.redact(config)
    assert out["judges"]["j"] == {"base_url": "https://***@host/v1?api-key=***", "api_key_env": "OPENAI_API_KEY",
                                  "model": "gpt-4o"}
    assert out["benchmarks"] == config["benchmarks"]      # a commit is not a secret
    assert out["x"] == {"hf_token": "***", "list": ["***", "plain"]}


def test_snapshot_is_rewritten_only_when_it_changes(tmp_path):
    configfile = tmp_path / "c.yaml"
    configfile.write_text("models: {}\n")
    snap = run_config.snapshot("Snakefile", [configfile], {"seed": 3}, {"models": {}, "seed": 3})
    assert snap["configfiles"] == [{"path": str(configfile),
                                    "sha256": hashlib.sha256(b"models: {}\n").hexdigest()}]
    path = tmp_path / "run_config.json"
    assert run_config.write_snapshot(snap, path) is True
    os.utime(path, (1, 1))
    assert run_config.write_snapshot(snap, path) is False and path.stat().st_mtime == 1
    assert run_config.write_snapshot({**snap, "overrides": {"seed": 4}}, path) is True
    assert json.loads(path.read_text())["overrides"] == {"seed": 4}


def test_describe_and_rebuild(tmp_path):
    snap = {"snakefile": "S", "configfiles": [{"path": "configs/tiny.yaml", "sha256": "ab" * 32}],
            "overrides": {"rehearsal": "true"}, "config": {"models": {"a": {}}, "recipes": {"r": {}, "s": {}},
                                                             "rehearsal": "true"}}
    text = run_config.describe(snap)
    assert text == ('Config that ran (snapshot at the run\'s start): config files configs/tiny.yaml (sha256 '
                    'abababababab); --config overrides: rehearsal="true"; 1 models, 2 recipes; rehearsal: "true".')
    args = run_config.rebuild_arguments(snap, tmp_path)
    assert args["config"] == {} and json.loads(Path(args["configfiles"][0]).read_text()) == snap["config"]


def snakemake(workdir, configfile, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(configfile), "--cores", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=900)


def test_a_run_snapshots_its_config_at_the_start_and_a_dry_run_does_not(tmp_path):
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text((ROOT / "configs" / "tiny.yaml").read_text())
    target = "results/calibration/mt_tiny/published"   # a cheap local job
    snapshot = tmp_path / "work" / run_config.RUN_CONFIG
    proc = snakemake(tmp_path / "work", configfile, "-n", target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not snapshot.exists()
    proc = snakemake(tmp_path / "work", configfile, target, "--config", "report={baseline: sft_full}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    snap = json.loads(snapshot.read_text())
    assert snap["configfiles"] == [{"path": str(configfile),
                                    "sha256": hashlib.sha256(configfile.read_bytes()).hexdigest()}]
    assert snap["overrides"] == {"report": {"baseline": "sft_full"}}
    assert snap["config"]["report"] == {"baseline": "sft_full"}
    assert snap["config"]["benchmarks"]["mt_tiny"]["calibration"]["items"] == 2
    # edited after the start: a dry run (as a job step or a look at the plan) leaves the run's snapshot alone
    edited = yaml.safe_load(configfile.read_text())
    edited["benchmarks"]["mt_tiny"]["calibration"]["items"] = 3
    configfile.write_text(yaml.safe_dump(edited))
    proc = snakemake(tmp_path / "work", configfile, "-n", target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(snapshot.read_text()) == snap
    assert "tiny.yaml" in run_config.describe(snap) and 'report={"baseline": "sft_full"}' in run_config.describe(snap)
