"""Hugging Face caches as an online load leaves them, built without network: what a job on an offline compute node
reads after the login node fetched it.

- a model: ``hub/models--{org}--{name}/refs/main`` holding a commit hash and ``snapshots/{commit}/`` its files
  (``snapshot_download``'s layout; the blobs it links to are plain files here, which the hub library reads alike);
- a dataset: ``datasets/{org}___{name}/{config}/0.0.0/{commit}/`` holding ``{name}-{split}.arrow`` and
  ``dataset_info.json`` (``load_dataset``'s cache of a hub dataset), written by datasets' own json builder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_model(hf_home: Path, repo_id: str, write_files, commit: str = COMMIT) -> Path:
    """The snapshot folder of ``repo_id`` in ``hf_home``'s hub cache; ``write_files(folder)`` fills it."""
    repo = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    write_files(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def cache_dataset(hf_home: Path, repo_id: str, rows: dict[str, list[dict]], config: str = "default",
                  commit: str = COMMIT) -> Path:
    """``repo_id``'s splits (``{split: rows}``) in ``hf_home``'s datasets cache, under config ``config``."""
    from datasets.packaged_modules.json.json import Json

    org, name = repo_id.split("/")
    dest = Path(hf_home) / "datasets" / f"{org}___{name}" / config / "0.0.0" / commit
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for split, split_rows in rows.items():
            files[split] = str(Path(tmp) / f"{split}.jsonl")
            Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in split_rows))
        # the json builder names the arrow files after dataset_name and records a config id of its data files;
        # the hub's loader records the config's own name
        builder = Json(cache_dir=str(Path(tmp) / "build"), dataset_name=name, config_name=config, data_files=files,
                       hash=commit)
        builder.download_and_prepare()
        shutil.copytree(builder.cache_dir, dest)
    info = json.loads((dest / "dataset_info.json").read_text())
    (dest / "dataset_info.json").write_text(json.dumps({**info, "config_name": config}))
    return dest
