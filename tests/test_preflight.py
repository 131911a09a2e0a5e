"""The preflight (scripts/preflight.py): judge endpoints against a local OpenAI-compatible server, the static mode on
every paper config with the network refused, and the cluster description beside live sinfo output."""

import importlib.util
import math
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from _hub_stub import HubStub, Repo
from _openai_stub import OpenAIStub
from _plan import PAPER_CONFIGS, ROOT, offline_env

from sftlab.preflight import compare_cluster, gres_gpus, sinfo_partitions

KEY_VAR = "SFTLAB_PREFLIGHT_TEST_KEY"


def _preflight():
    spec = importlib.util.spec_from_file_location("preflight_script", ROOT / "scripts" / "preflight.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def judged_config(tmp_path, base_url: str, model: str) -> str:
    """The tiny model judged on MT-Bench fixtures by one API judge at ``base_url``."""
    config = {
        "models": {"tiny": {"source": "random"}},
        "datasets": {"demo": {"source": "demo", "per_family": 4, "heldout": 1}},
        "recipes": {"sft": {}},
        "judges": {"referee": {"type": "openai", "model": model, "base_url": base_url, "api_key_env": KEY_VAR}},
        "benchmarks": {"mt": {"type": "mtbench", "judge": "referee", "data_dir": str(ROOT / "tests" / "fixtures" /
                                                                                        "mt_bench"), "limit": 2}},
        "experiments": {"e": {"models": ["tiny"], "datasets": ["demo"], "recipes": ["sft"], "benchmarks": ["mt"]}},
    }
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run_judge_check(tmp_path, capsys, configfile) -> tuple[int, str]:
    status = _preflight().main(["--configfile", configfile, "--directory", str(tmp_path), "--profile", "none",
                                "--only", "judges"])
    return status, capsys.readouterr().out


def test_a_judge_model_the_endpoint_does_not_serve_is_refused_naming_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "sk-secret-123")
    with OpenAIStub(api_key="sk-secret-123", models=("llama-3-70b", "qwen2-72b")) as stub:
        status, out = run_judge_check(tmp_path, capsys, judged_config(tmp_path, stub.base_url, "gpt-4-0613"))
    assert status == 1
    assert re.search(r"^PROBLEM +judges +judges\.referee\.model: .* does not serve 'gpt-4-0613'; it serves "
                     r"llama-3-70b, qwen2-72b$", out, flags=re.M), out
    assert stub.completions == 0  # the preflight asks for the model list only


def test_a_served_judge_model_passes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "sk-secret-123")
    with OpenAIStub(api_key="sk-secret-123", models=("gpt-4-0613",)) as stub:
        status, out = run_judge_check(tmp_path, capsys, judged_config(tmp_path, stub.base_url, "gpt-4-0613"))
    assert status == 0, out
    assert re.search(r"^OK +judges +judges\.referee: .* serves gpt-4-0613$", out, flags=re.M)


def test_a_refused_or_missing_key_names_api_key_env_and_is_never_printed(tmp_path, capsys, monkeypatch):
    with OpenAIStub(api_key="sk-right", models=("gpt-4-0613",)) as stub:
        configfile = judged_config(tmp_path, stub.base_url, "gpt-4-0613")
        monkeypatch.delenv(KEY_VAR, raising=False)
        status, out = run_judge_check(tmp_path, capsys, configfile)
        assert status == 1 and f"judges.referee.api_key_env: the environment variable {KEY_VAR} is not set" in out
        monkeypatch.setenv(KEY_VAR, "sk-wrong-456")
        status, out = run_judge_check(tmp_path, capsys, configfile)
    assert status == 1 and f"judges.referee.api_key_env: {stub.base_url} refused the key in {KEY_VAR} (401)" in out
    assert "sk-wrong-456" not in out and "sk-right" not in out  # the stub echoes the key it got in its 401 body


def test_an_endpoint_that_does_not_answer_names_base_url(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_VAR, "k")
    with OpenAIStub() as stub:
        url = stub.base_url  # a port nothing listens on once the server is gone
    status, out = run_judge_check(tmp_path, capsys, judged_config(tmp_path, url, "m"))
    assert status == 1 and f"judges.referee.base_url: no answer from {url}" in out


def _experiment_hub_models(config: dict) -> set[str]:
    used = {m for e in config["experiments"].values() for m in e["models"]}
    return {f"models.{m}" for m in used if config["models"][m]["source"] == "hub"}


@pytest.mark.slow
@pytest.mark.parametrize("configfile", PAPER_CONFIGS, ids=[p.stem for p in PAPER_CONFIGS])
def test_static_preflight_of_paper_configs_runs_offline(configfile, tmp_path):
    """Every paper config plans (as the README runs it, with --sdm conda for its vLLM answers) and its jobs' downloads
    are each named; with empty caches each is a problem of the
    caches check (and the only problems), found with the network refused."""
    env = {**offline_env(), "HF_HOME": str(tmp_path / "hf"), "NLTK_DATA": str(tmp_path / "nltk")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "preflight.py"), "--configfile", str(configfile),
                           "--directory", str(tmp_path), "--offline", "--sdm", "conda"], capture_output=True, text=True, env=env,
                          timeout=900)
    out = done.stdout
    assert "network access" not in out + done.stderr, done.stderr[-2000:]
    assert re.search(r"^OK +plan ", out, flags=re.M), out + done.stderr[-2000:]
    problems = re.findall(r"^PROBLEM +(\S+) +(\S+): ", out, flags=re.M)
    assert problems and {check for check, _ in problems} == {"caches"}, out
    assert done.returncode == 1 and out.rstrip().endswith(f"preflight: {len(problems)} problems")
    config = yaml.safe_load(configfile.read_text())
    assert _experiment_hub_models(config) <= {key for _, key in problems}, out


SINFO = ("gpu*|2-00:00:00|1000000|gpu:a100:4(S:0-1)|64\n"
         "gpu*|2-00:00:00|2000000|gpu:8|112\n"
         "cpu|infinite|256000|(null)|128\n")
MINUTES = {"2-00:00:00": 2880.0, "infinite": math.inf}.__getitem__


def test_sinfo_partitions_take_the_largest_node_of_each():
    assert gres_gpus("gpu:a100:4(S:0-1)") == 4 and gres_gpus("(null)") == 0 and gres_gpus("gpu:2,gpu:t4:1") == 3
    assert sinfo_partitions(SINFO, MINUTES) == {
        "default_partition": "gpu",
        "partitions": {"gpu": {"time_limit": 2880.0, "mem_mb": 2000000, "gpus": 8, "cpus": 112},
                       "cpu": {"time_limit": math.inf, "mem_mb": 256000, "gpus": 0, "cpus": 128}}}


def test_a_description_promising_more_than_the_live_nodes_is_a_problem():
    live = sinfo_partitions(SINFO, MINUTES)
    described = {"default_partition": "cpu", "partitions": {
        "gpu": {"time_limit": 4320.0, "mem_mb": 2000000, "gpus": 8, "cpus": 112},
        "cpu": {"time_limit": 60.0, "mem_mb": 128000, "gpus": 0, "cpus": 64},
        "big": {"time_limit": 60.0, "mem_mb": 1, "gpus": 0, "cpus": 1}}}
    found = {(f.status, f.key): f.message for f in compare_cluster(described, live, "cluster.yaml")}
    assert found == {
        ("PROBLEM", "cluster.yaml: partitions.big"): "sinfo shows no partition 'big' (it shows cpu, gpu)",
        ("OK", "cluster.yaml: partitions.cpu"): "within what sinfo reports",
        ("PROBLEM", "cluster.yaml: partitions.gpu"): "described beyond the live nodes: time_limit 4320 min > 2880 min",
        ("PROBLEM", "cluster.yaml: default_partition"): "'cpu', but sinfo's default is 'gpu'",
    }


def test_without_slurm_the_cluster_check_is_skipped(monkeypatch):
    import sftlab.preflight as preflight

    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    [finding] = preflight.cluster_findings()
    assert (finding.status, finding.check) == ("SKIPPED", "cluster") and "no Slurm here" in finding.message


def test_hub_revisions_and_gated_access_named_by_their_config_keys():
    from huggingface_hub import HfApi

    from sftlab.offline import HubDataset, HubModel, NltkData
    from sftlab.preflight import hub_findings

    repos = {("model", "meta-llama/Llama-2-7b-hf"): Repo({"main": "a" * 40}, gated=True, granted={"hf_granted"}),
             ("model", "mistralai/Mistral-7B-v0.1"): Repo({"main": "b" * 40}),
             ("dataset", "tatsu-lab/alpaca"): Repo({"main": "c" * 40, "v1.0": "d" * 40})}
    downloads = [HubModel("models.llama", "meta-llama/Llama-2-7b-hf"), HubModel("models.mistral",
                                                                                "mistralai/Mistral-7B-v0.1", "v9"),
                 HubDataset("datasets.alpaca", "tatsu-lab/alpaca", revision="v1.0"),
                 HubDataset("datasets.typo", "tatsu-lab/alpacca"), NltkData("benchmarks.ifeval"),
                 HubDataset("datasets.fixture", str(ROOT / "tests" / "fixtures" / "hub" / "Anthropic" / "hh-rlhf"))]
    with HubStub(repos) as hub:
        api = HfApi(endpoint=hub.endpoint)
        found = {f.key: (f.status, f.message) for f in hub_findings(downloads, None, api)}
        granted = {f.key: (f.status, f.message) for f in hub_findings(downloads[:1], "hf_granted", api)}
        refused = hub_findings(downloads[:1], "hf_other", api)
    assert found == {
        "models.llama.repo_id": ("PROBLEM", "meta-llama/Llama-2-7b-hf is gated and HF_TOKEN is not set"),
        "models.mistral.revision": ("PROBLEM", "mistralai/Mistral-7B-v0.1 has no revision 'v9'"),
        "datasets.alpaca": ("OK", f"tatsu-lab/alpaca@v1.0 resolves to {'d' * 12}"),
        "datasets.typo.path": ("PROBLEM", "no dataset tatsu-lab/alpacca on the hub (or it is private to others)"),
        "datasets.fixture": ("OK", f"{ROOT}/tests/fixtures/hub/Anthropic/hh-rlhf is a local folder"),
    }
    assert granted == {"models.llama": ("OK", f"meta-llama/Llama-2-7b-hf@main resolves to {'a' * 12}, gated: "
                                              "access granted")}
    assert refused[0].message.endswith("the token in HF_TOKEN is not granted access")
    assert all("hf_other" not in f.message + f.fix for f in refused)


def test_static_preflight_passes_on_filled_caches_and_names_what_is_missing(tmp_path):
    """A config whose model and dataset are hub repositories, scored on IFEval: with the caches filled (as the online
    preflight leaves them) every job's offline read works; with the dataset and punkt_tab gone, exactly those two
    are named."""
    from _hub_cache import cache_dataset, cache_model

    from sftlab.models.random_init import save_random_model

    cache_model(tmp_path / "hf", "org/tiny-llama", lambda d: save_random_model(d, vocab_size=320))
    rows = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(8)]
    dataset = cache_dataset(tmp_path / "hf", "org/tiny-alpaca", {"train": rows})
    config = {
        "models": {"tiny": {"source": "hub", "repo_id": "org/tiny-llama"}},
        "datasets": {"alp": {"source": "hub", "path": "org/tiny-alpaca", "format": "alpaca", "heldout": 2}},
        "recipes": {"sft": {}},
        "benchmarks": {"ifeval": {"type": "ifeval", "data_dir": str(ROOT / "tests" / "fixtures" / "ifeval")}},
        "experiments": {"e": {"models": ["tiny"], "datasets": ["alp"], "recipes": ["sft"], "benchmarks": ["ifeval"]}},
    }
    configfile = tmp_path / "hub.yaml"
    configfile.write_text(yaml.safe_dump(config))

    def static(**env):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "preflight.py"), "--configfile", str(configfile),
                               "--directory", str(tmp_path / "run"), "--profile", "none", "--offline"],
                              capture_output=True, text=True, env={**offline_env(), "HF_HOME": str(tmp_path / "hf"),
                                                                   **env}, timeout=600)
        found = re.findall(r"^(OK|PROBLEM) +caches +(\S+):", done.stdout, flags=re.M)
        return done.returncode, {key: status for status, key in found}, done

    (tmp_path / "run").mkdir()
    status, caches, done = static(NLTK_DATA=str(ROOT / "tests" / "fixtures" / "nltk_data"))
    assert status == 0 and "OK       plan" in done.stdout, done.stdout + done.stderr[-2000:]
    assert caches == {"models.tiny": "OK", "datasets.alp": "OK", "benchmarks.ifeval": "OK"}
    shutil.rmtree(dataset.parents[2])
    status, caches, done = static()
    assert status == 1 and "network access" not in done.stdout + done.stderr
    assert caches == {"models.tiny": "OK", "datasets.alp": "PROBLEM", "benchmarks.ifeval": "PROBLEM"}, done.stdout


def test_a_config_that_does_not_plan_is_named_by_its_key(tmp_path, capsys):
    configfile = judged_config(tmp_path, "http://127.0.0.1:9/v1", "m")
    config = yaml.safe_load(open(configfile))
    config["judges"]["referee"]["api_key_env"] = "sk-a-key-not-a-name"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    status = _preflight().main(["--configfile", str(tmp_path / "bad.yaml"), "--directory", str(tmp_path),
                                "--profile", "none", "--offline"])
    out = capsys.readouterr().out
    assert status == 1 and re.search(r"^PROBLEM +plan +judges\.referee\.api_key_env: ", out, flags=re.M), out
    # nothing else runs on a config that does not plan
    assert len(re.findall(r"^(OK|PROBLEM|SKIPPED) ", out, flags=re.M)) == 1


def test_conda_requested_without_conda_is_a_problem(monkeypatch, tmp_path):
    import sftlab.preflight as preflight

    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    [finding] = preflight.conda_findings(tmp_path / "c.yaml", tmp_path, None)
    assert (finding.status, finding.key) == ("PROBLEM", "--sdm conda") and "conda is not on PATH" in finding.message
