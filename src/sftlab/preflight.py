"""The preflight: a cluster run's problems found on the login node, in minutes, before any GPU job starts.

    python scripts/preflight.py --configfile configs/paper/<paper>.yaml [--sdm conda]

Checks, each problem named by its config key with a fix:

- ``plan``: the workflow plans (``snakemake -n`` with the profile: config validation, plan-time checks);
- ``hub``: every hub model and dataset revision resolves and is accessible (a gated one: $HF_TOKEN set and accepted);
- ``downloads``: everything the jobs would download is fetched into the caches (``sftlab.offline``);
- ``caches``: each job's own offline read of it works (run in a process with the offline switches on, as a job);
- ``prompt_format``: each model's tokenizer takes the prompt format its config names;
- ``judges``: each API judge's endpoint lists its models (``/v1/models``) and serves the configured one;
- ``conda``: the conda environments build (with ``--sdm conda``);
- ``cluster``: the cluster description planning checks jobs against matches live ``sinfo``.

``--offline`` runs only the checks that need neither network nor cluster (``plan``, ``caches``, ``prompt_format``).
The exit status is 1 when any check found a problem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("plan", "hub", "downloads", "caches", "prompt_format", "judges", "conda", "cluster")
OFFLINE_CHECKS = ("plan", "caches", "prompt_format")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # OK, PROBLEM or SKIPPED
    key: str
    message: str
    fix: str = ""


def ok(check: str, key: str, message: str) -> Finding:
    return Finding(check, "OK", key, message)


def problem(check: str, key: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "PROBLEM", key, message, fix)


def skipped(check: str, message: str) -> Finding:
    return Finding(check, "SKIPPED", "-", message)


def summary(findings: Iterable[Finding]) -> str:
    """One line per finding (a problem's fix on the line below it), then the count of problems."""
    findings = list(findings)
    lines = []
    for f in findings:
        lines.append(f"{f.status:<8} {f.check:<14} {f.key}: {f.message}")
        if f.fix:
            lines.append(f"{'':<24}fix: {f.fix}")
    n = sum(f.status == "PROBLEM" for f in findings)
    lines.append(f"preflight: {n} problem{'s' * (n != 1)}" if n else "preflight: no problems")
    return "\n".join(lines)


# --- plan -----------------------------------------------------------------------------------------------------------

_CONFIG_KEY = re.compile(r"config key ([^\s:,]+)")


def snakemake_command(configfile: Path, workdir: Path, profile: Path | None, sdm: str | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(Path(configfile).resolve())]
    if profile is not None:
        command += ["--profile", str(profile)]
    if sdm:
        command += ["--sdm", sdm]
    return command + list(extra)


def _failure(output: str) -> tuple[str, str]:
    """(config key, the error's lines) of a failed Snakemake run: the key the message names, else ``plan``."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "config key" in line] or lines[-3:]
    text = " ".join(errors[-3:])
    match = _CONFIG_KEY.search(output)
    return (match.group(1) if match else "plan"), text[-1500:]


def plan_findings(configfile: Path, workdir: Path, profile: Path | None, sdm: str | None) -> list[Finding]:
    """``snakemake -n`` as the run will be started (the profile's plan-time checks included), offline."""
    done = subprocess.run(snakemake_command(configfile, workdir, profile, sdm, "-n", "--quiet", "rules"),
                          capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV})
    if done.returncode == 0:
        return [ok("plan", "plan", f"{configfile} plans" + (f" with profile {profile}" if profile else ""))]
    key, text = _failure(done.stdout + done.stderr)
    return [problem("plan", key, text, "fix the config key named (the rest of the preflight needs a plan)")]


# --- downloads and caches -------------------------------------------------------------------------------------------

def planned(configfile: Path, workdir: Path):
    """(prepared config, planned jobs) of the workflow's default target, through Snakemake's own DAG."""
    from sftlab.config import prepare, read_yaml
    from sftlab.report.dag import workflow_jobs

    config = prepare(read_yaml(configfile))
    # relative task folders as the workflow reads them (sftlab.plan.load): the working directory's, else the repository's
    for bench in config["benchmarks"].values():
        path = bench.get("include_path")
        if path and not Path(path).is_absolute() and not (workdir / path).exists():
            bench["include_path"] = str(ROOT / path)
    jobs = workflow_jobs(ROOT / "Snakefile", [str(Path(configfile).resolve())], workdir=workdir)
    return config, jobs


def hub_findings(downloads, token: str | None, api=None) -> list[Finding]:
    """Each hub model and dataset: its revision resolves and its files are accessible with the token (gated repos).
    The token comes from $HF_TOKEN only (no login file): it is sent to the hub, never printed."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from sftlab.offline import HubDataset, HubModel

    api = api or HfApi()
    out = []
    for d in downloads:
        if isinstance(d, HubModel):
            repo, repo_type, revision, key = d.repo_id, "model", d.revision, d.key
            info, id_key = api.model_info, f"{key}.repo_id"
        elif isinstance(d, HubDataset):
            if Path(d.path).is_dir():  # load_dataset reads a folder in the hub's layout without the hub
                out.append(ok("hub", d.key, f"{d.path} is a local folder"))
                continue
            repo, repo_type, revision, key = d.path, "dataset", d.revision, d.key
            info, id_key = api.dataset_info, f"{key}.path"
        else:
            continue
        url = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
        try:
            meta = info(repo, revision=revision, token=token or False)
            api.auth_check(repo, repo_type=repo_type, token=token or False)
        except GatedRepoError:
            fix = (f"accept the licence at {url} with the account whose token is in HF_TOKEN" if token else
                   f"export HF_TOKEN=<a token of an account that accepted the licence at {url}>")
            refusal = "the token in HF_TOKEN is not granted access" if token else "HF_TOKEN is not set"
            out.append(problem("hub", id_key, f"{repo} is gated and {refusal}", fix))
            continue
        except RevisionNotFoundError:
            out.append(problem("hub", f"{key}.revision", f"{repo} has no revision {revision!r}",
                               f"name a branch, tag or commit of {url}"))
            continue
        except RepositoryNotFoundError:
            out.append(problem("hub", id_key, f"no {repo_type} {repo} on the hub (or it is private to others)",
                               "check the name; a private repository needs HF_TOKEN"))
            continue
        except Exception as exc:  # offline, a proxy, a server error: the message says which
            out.append(problem("hub", id_key, f"{repo}: {type(exc).__name__}: {str(exc)[:300]}",
                               "the login node must reach huggingface.co (proxy variables?)"))
            continue
        gated = ", gated: access granted" if getattr(meta, "gated", False) else ""
        out.append(ok("hub", key, f"{repo}@{revision or 'main'} resolves to {meta.sha[:12]}{gated}"))
    return out


def fetch_findings(downloads, refused: set[str]) -> list[Finding]:
    """Fetch each download into its cache (login node); a download whose hub check failed is not tried."""
    out = []
    for d in downloads:
        if d.key in refused:
            out.append(skipped("downloads", f"{d.key}: {d.describe()} not fetched (see its hub problem)"))
            continue
        try:
            d.fetch()
        except Exception as exc:
            out.append(problem("downloads", d.key, f"{d.describe()}: {type(exc).__name__}: {str(exc)[:500]}",
                               "rerun the preflight once the cause is fixed (downloads resume)"))
        else:
            out.append(ok("downloads", d.key, f"{d.describe()} fetched"))
    return out


def cache_findings(downloads) -> list[Finding]:
    """Each download read as its job reads it, offline (this process must have the offline switches on)."""
    from sftlab.offline import NotCached, require_offline

    require_offline()
    out = []
    fix = "run the preflight without --offline on the login node: it fetches it"
    for d in downloads:
        try:
            d.check()
        except NotCached:
            out.append(problem("caches", d.key, f"{d.describe()} is not in the cache its job reads offline", fix))
        except Exception as exc:
            out.append(problem("caches", d.key, f"{d.describe()} cannot be read offline: {type(exc).__name__}: "
                                                f"{str(exc)[:500]}", fix))
        else:
            out.append(ok("caches", d.key, f"{d.describe()} readable offline"))
    return out


def offline_cache_findings(configfile: Path, workdir: Path) -> list[Finding]:
    """cache_findings in a child process with the offline switches on, as a job runs (they are read at import)."""
    command = [sys.executable, str(ROOT / "scripts" / "preflight.py"), "--configfile", str(Path(configfile).resolve()),
               "--directory", str(workdir), "--offline", "--only", "caches", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV})
    try:
        return [Finding(**f) for f in json.loads(done.stdout.strip().splitlines()[-1])]
    except (IndexError, ValueError):
        return [problem("caches", "caches", f"the offline cache check failed: {done.stderr.strip()[-800:]}")]


# --- prompt formats -------------------------------------------------------------------------------------------------

def prompt_format_findings(config: dict, jobs) -> list[Finding]:
    """Each materialised model's tokenizer (from the hub cache, or a local directory) takes its prompt format."""
    from transformers import AutoTokenizer

    from sftlab.models.materialise import hub_snapshot
    from sftlab.models.prompt_formats import PromptFormatError, prompt_format

    out = []
    for name in sorted({job.wildcards["model"] for job in jobs if job.rule == "materialise_model"}):
        model, key = config["models"][name], f"models.{name}.prompt_format"
        if model["source"] == "hub":
            try:
                folder = hub_snapshot(model["repo_id"], model.get("revision", "main"), local_files_only=True)
            except LookupError:
                out.append(skipped("prompt_format", f"{key}: the tokenizer of {model['repo_id']} is not in the cache "
                                                    "yet (see caches)"))
                continue
        elif model["source"] == "local":
            folder = model["path"]
        else:
            continue  # random and pypi_gguf models are built with their own template
        try:
            fmt = prompt_format(model.get("prompt_format"), AutoTokenizer.from_pretrained(folder), key)
        except PromptFormatError as exc:
            out.append(problem("prompt_format", key, str(exc), "name a format the tokenizer takes"))
        else:
            out.append(ok("prompt_format", key, f"{name}: {fmt.name}"))
    return out


# --- judges ---------------------------------------------------------------------------------------------------------

def judge_findings(config: dict, jobs) -> list[Finding]:
    """Each API judge a planned judge job calls: its endpoint answers /v1/models and lists the configured model."""
    used = sorted({config["benchmarks"][job.wildcards["benchmark"]]["judge"] for job in jobs if job.rule == "judge"})
    return [judge_endpoint_finding(name, config["judges"][name]) for name in used
            if config["judges"][name]["type"] == "openai"]


def judge_endpoint_finding(name: str, judge: dict) -> Finding:
    """The key stays in its environment variable: it is sent to the endpoint, never printed (nor the server's
    answer to a refused key, which may echo it)."""
    import openai

    var, base_url, model = judge.get("api_key_env"), judge["base_url"], judge["model"]
    if var and not os.environ.get(var):
        return problem("judges", f"judges.{name}.api_key_env", f"the environment variable {var} is not set",
                       f"export {var}=<the key of {base_url}>, or api_key_env: null for a server without a key")
    client = openai.OpenAI(base_url=base_url, api_key=os.environ[var] if var else "none", max_retries=1,
                           timeout=min(30.0, float(judge.get("timeout_s", 30))))
    try:
        served = sorted(m.id for m in client.models.list())
    except openai.AuthenticationError:
        return problem("judges", f"judges.{name}.api_key_env", f"{base_url} refused the key in {var} (401)",
                       f"export {var} with a key that {base_url} accepts")
    except openai.APIConnectionError as exc:
        return problem("judges", f"judges.{name}.base_url", f"no answer from {base_url} ({type(exc).__name__})",
                       "start the server, or correct base_url (with its version prefix, e.g. /v1)")
    except openai.APIStatusError as exc:
        return problem("judges", f"judges.{name}.base_url", f"{base_url}/models answered HTTP {exc.status_code}",
                       "base_url must be an OpenAI-compatible endpoint (with its version prefix, e.g. /v1)")
    if model not in served:
        listed = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "") or "nothing"
        return problem("judges", f"judges.{name}.model", f"{base_url} does not serve {model!r}; it serves {listed}",
                       f"set judges.{name}.model to a model the server serves, or serve {model!r} there")
    return ok("judges", f"judges.{name}", f"{base_url} serves {model}")


# --- conda ----------------------------------------------------------------------------------------------------------

def conda_findings(configfile: Path, workdir: Path, profile: Path | None) -> list[Finding]:
    """``snakemake --conda-create-envs-only --sdm conda``: the environments of the run's rules build."""
    if shutil.which("conda") is None and shutil.which("mamba") is None:
        return [problem("conda", "--sdm conda", "the run uses conda environments, but conda is not on PATH",
                        "load or install conda (miniforge) on the login node")]
    done = subprocess.run(snakemake_command(configfile, workdir, profile, "conda", "--conda-create-envs-only",
                                            "--cores", "1"), capture_output=True, text=True)
    if done.returncode == 0:
        return [ok("conda", "envs", "the conda environments of the run's rules are built")]
    return [problem("conda", "envs", _failure(done.stdout + done.stderr)[1],
                    "read the conda error; envs/*.yaml are the environments")]


# --- cluster --------------------------------------------------------------------------------------------------------

SINFO_FORMAT = "%P|%l|%m|%G|%c"
FIELDS = ("time_limit", "mem_mb", "gpus", "cpus")


def gres_gpus(gres: str) -> int:
    """GPUs per node in sinfo's GRES column ("gpu:2", "gpu:a100:8(S:0-1)", "(null)")."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def sinfo_partitions(text: str, minutes: Callable[[str], float]) -> dict:
    """Live partitions from ``sinfo -h -o SINFO_FORMAT``, in the cluster description's shape: per partition the most
    any of its nodes has (time limit in minutes); ``default_partition`` the one sinfo marks with a ``*``."""
    partitions: dict[str, dict] = {}
    default = None
    for line in text.splitlines():
        if not line.strip():
            continue
        name, limit, mem, gres, cpus = line.strip().split("|")
        if name.endswith("*"):
            name = default = name[:-1]
        node = {"time_limit": minutes(limit), "mem_mb": int(mem.rstrip("+")), "gpus": gres_gpus(gres),
                "cpus": int(cpus.rstrip("+"))}
        seen = partitions.setdefault(name, node)
        partitions[name] = {k: max(seen[k], node[k]) for k in FIELDS}
    return {"default_partition": default, "partitions": partitions}


def compare_cluster(described: dict, live: dict, where: str) -> list[Finding]:
    """The description planning checks jobs against (``where``) beside the live cluster: a described partition that
    does not exist, or that promises more than its nodes have, would let planning pass jobs Slurm refuses."""
    out = []
    units = {"time_limit": " min", "mem_mb": " MB", "gpus": "", "cpus": ""}
    for name, spec in sorted(described["partitions"].items()):
        key = f"{where}: partitions.{name}"
        if name not in live["partitions"]:
            out.append(problem("cluster", key, f"sinfo shows no partition {name!r} (it shows "
                                               f"{', '.join(sorted(live['partitions']))})",
                               "describe the partitions the jobs go to, as sinfo names them"))
            continue
        have = live["partitions"][name]
        over = [f"{k} {spec[k]:g}{units[k]} > {have[k]:g}{units[k]}" for k in FIELDS if spec[k] > have[k]]
        if over:
            out.append(problem("cluster", key, f"described beyond the live nodes: {'; '.join(over)}",
                               f"copy the values from: sinfo -p {name} -o \"%l %m %G %c\""))
        else:
            out.append(ok("cluster", key, "within what sinfo reports"))
    if described.get("default_partition") and described["default_partition"] != live["default_partition"]:
        out.append(problem("cluster", f"{where}: default_partition",
                           f"{described['default_partition']!r}, but sinfo's default is {live['default_partition']!r}",
                           "name the partition sinfo marks with *"))
    return out


def cluster_findings() -> list[Finding]:
    """The profile's cluster description (sftlab.cluster, $SFTLAB_CLUSTER) against live sinfo."""
    if shutil.which("sinfo") is None:
        return [skipped("cluster", "sinfo is not on PATH: no Slurm here, the cluster was not compared")]
    from sftlab.cluster import load_cluster, slurm_minutes

    path = os.environ.get("SFTLAB_CLUSTER", str(ROOT / "profiles" / "slurm" / "cluster.yaml"))
    if path == "none":
        return [skipped("cluster", "SFTLAB_CLUSTER=none: planning checks no cluster description")]
    path = path if Path(path).is_absolute() else str(ROOT / path)
    try:
        cluster = load_cluster(path)
    except Exception as exc:
        return [problem("cluster", path, str(exc), "fix the cluster description")]
    done = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True)
    if done.returncode != 0:
        return [problem("cluster", "sinfo", done.stderr.strip()[-500:], "is slurmctld reachable?")]
    described = {"default_partition": cluster.default,
                 "partitions": {n: {k: getattr(p, k) for k in FIELDS} for n, p in cluster.partitions.items()}}
    return compare_cluster(described, sinfo_partitions(done.stdout, slurm_minutes), path)


# --- all together ---------------------------------------------------------------------------------------------------

def run_preflight(configfile: Path, workdir: Path, profile: Path | None, sdm: str | None, offline: bool,
                  only: Iterable[str] | None = None) -> list[Finding]:
    """The checks, in order; ``offline``: only OFFLINE_CHECKS, in a process whose offline switches are on."""
    from sftlab.offline import job_downloads

    wanted = [c for c in (OFFLINE_CHECKS if offline else CHECKS) if only is None or c in only]
    findings: list[Finding] = []
    if "plan" in wanted:
        findings += plan_findings(configfile, workdir, profile, sdm)
        if findings[-1].status == "PROBLEM":
            return findings
    if set(wanted) - {"plan", "cluster", "conda"}:
        config, jobs = planned(configfile, workdir)
        downloads = job_downloads(config, jobs)
        refused: set[str] = set()
        if "hub" in wanted:
            hub = hub_findings(downloads, os.environ.get("HF_TOKEN"))
            refused = {f.key.rsplit(".", 1)[0] for f in hub if f.status == "PROBLEM"}
            findings += hub
        if "downloads" in wanted:
            findings += fetch_findings(downloads, refused)
        if "caches" in wanted:
            findings += cache_findings(downloads) if offline else offline_cache_findings(configfile, workdir)
        if "prompt_format" in wanted:
            findings += prompt_format_findings(config, jobs)
        if "judges" in wanted:
            findings += judge_findings(config, jobs)
    if "conda" in wanted:
        findings += (conda_findings(configfile, workdir, profile) if sdm == "conda"
                     else [skipped("conda", "the run uses no conda environments (no --sdm conda)")])
    if "cluster" in wanted:
        findings += cluster_findings()
    return findings


def has_problems(findings: Iterable[Finding]) -> bool:
    return any(f.status == "PROBLEM" for f in findings)
