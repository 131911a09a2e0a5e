"""The config that ran: a snapshot written once by the main Snakemake process at the run's start, read by the cost report.

Jobs (a Slurm job step, a report job rebuilding the DAG) re-read the Snakefile and the config files when they start:
a config file edited during a run would be what the cost report describes. The snapshot holds the config Snakemake
merged from the config files and the ``--config`` overrides (before sftlab fills defaults or derives a rehearsal, so a
DAG rebuilt from it is the run's), each config file's sha256, and the overrides on their own; values that may be
secrets are masked (``sftlab.secrets``). It is rewritten only when its content changes, so its time stamp says when
the config last changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from sftlab.secrets import looks_like_secret, redact_url, url_secrets

RUN_CONFIG = "results/run_config.json"
MASK = "***"
_HEX = re.compile(r"[0-9a-f]{7,128}")
#: config keys whose values are credentials by name (``api_key_env`` names a variable, it is not one)
_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")


def redact(value: Any, key: str = "") -> Any:
    """``value`` with every credential masked: values under secret-named keys, key-like strings, URL credentials."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        lowered = key.lower()
        if any(s in lowered for s in _SECRET_KEYS) and not lowered.endswith("_env"):
            return MASK
        if "://" in value and url_secrets(value):
            return redact_url(value)
        if looks_like_secret(value) and not _HEX.fullmatch(value):   # commits and digests are no secrets
            return MASK
    return value


def snapshot(snakefile: str | Path, configfiles: list[str | Path], overrides: dict, config: dict) -> dict:
    """What describes the run's config: the Snakefile, each config file with its sha256, the ``--config`` overrides
    and the merged config, credentials masked."""
    files = [{"path": str(f), "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()} for f in configfiles]
    return {"snakefile": str(snakefile), "configfiles": files, "overrides": redact(dict(overrides)),
            "config": redact(dict(config))}


def digest(snap: dict) -> str:
    return hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()


def write_snapshot(snap: dict, path: str | Path = RUN_CONFIG) -> bool:
    """Write ``snap`` to ``path`` unless it holds the same already (atomically); whether it was written."""
    from sftlab.io import write_text

    text = json.dumps(snap, sort_keys=True, indent=1) + "\n"
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def read_snapshot(path: str | Path = RUN_CONFIG) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the snapshot of the run's config is written by the Snakemake process at the "
                                "run's start; run the report through snakemake")
    return json.loads(path.read_text())


def describe(snap: dict) -> str:
    """One paragraph: which config files (and their digests), which overrides, and what the config holds."""
    config = snap["config"]
    files = ", ".join(f"{f['path']} (sha256 {f['sha256'][:12]})" for f in snap["configfiles"]) or "none (defaults)"
    overrides = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(snap["overrides"].items()))
    counts = ", ".join(f"{len(config[k])} {k}" for k in ("models", "datasets", "recipes", "benchmarks", "experiments")
                       if isinstance(config.get(k), dict))
    rehearsal = config.get("rehearsal")
    return (f"Config that ran (snapshot at the run's start): config files {files}; --config overrides: "
            f"{overrides or 'none'}; {counts}" + (f"; rehearsal: {json.dumps(rehearsal)}" if rehearsal not in
                                                    (None, False, "false") else "") + ".")


def rebuild_arguments(snap: dict, folder: str | Path) -> dict:
    """``{"snakefile", "configfiles", "config"}`` rebuilding the run's DAG from the snapshot (not from the config files,
    which may have changed since): its merged config written to ``folder`` as the one config file."""
    path = Path(folder) / "run_config.json"
    path.write_text(json.dumps(snap["config"], sort_keys=True))
    return {"snakefile": snap["snakefile"], "configfiles": [str(path)], "config": {}}
