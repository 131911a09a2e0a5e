"""Merge the K sub-models of a Disperse-Then-Merge recipe into one model.

Two merge spaces:

``delta`` (the default)
    Each sub-model is a full Hugging Face directory (a LoRA run's adapter already merged into the base).
    mergekit merges them tensor by tensor, streaming from the safetensors files, so a merge never holds
    more than a few tensors of each input plus one output shard in memory: models larger than RAM merge.
    ``average`` is mergekit's ``linear`` (the mean of the weights, equal to the base plus the mean of the
    deltas); ``ties``, ``dare_ties``, ``dare_linear`` and ``task_arithmetic`` work on the deltas to the base.
    ``task_arithmetic`` is Ilharco et al.'s θ0 + λ·Σ_k δ_k: the deltas are *summed* (weight 1 each, mergekit does
    not normalise) and scaled by λ (``merge.lambda``), 0.3 by default: the value AdaMerging's task-arithmetic
    baseline uses (mergekit's own default is 1; the DTM authors' released code does not include its merge
    utilities, so their λ is not known). With K = 4 sub-models that is 1.2 times the average's update.
    ``fisher`` (not a mergekit method; ``sftlab.compose.fisher``) is the diagonal-Fisher-weighted average, each
    member's Fisher estimated on ``fisher_samples`` of its own training examples: by default Matena & Raffel's
    (answers drawn from the model, each Fisher divided by its L2 norm, floor 1e-6), ``fisher_type: empirical`` the
    data's answers' (unnormalised).

``adapter`` (an ablation, ``average`` only)
    What the DTM authors' code does: average the LoRA matrices A and B *separately* across the sub-models
    and merge the averaged adapter into the base, W = W0 + s·B̄·Ā with s = lora_alpha / r. Averaging in delta
    space gives W0 + s·mean_k(B_k·A_k) instead. How far apart they are depends on the members' initialisation:

    - ``init: same`` (the default, and the authors' setup: one seed before ``get_peft_model``): every member starts
      from the same A0 and B = 0, so A_k = A0 + ΔA_k and mean_k(B_k·A_k) = B̄·A0 + mean_k(B_k·ΔA_k), while
      B̄·Ā = B̄·A0 + B̄·mean_k(ΔA_k). The gap B̄·Ā − mean_k(B_k·A_k) = −(1/K)·Σ_k (B_k − B̄)·(ΔA_k − mean ΔA) is
      minus the members' covariance of B and the drift of A: zero at the start, and it grows only as the A
      matrices drift apart (with A frozen the two merges are equal).
    - ``init: different`` (one draw of A0 per member): B̄·Ā = (1/K²)·Σ_j Σ_k B_j·A_k also holds the K² − K cross
      terms B_j·A_k (j ≠ k) between unrelated initialisations and only 1/K of each member's own product, so the
      adapter-space merge shrinks each sub-model's update towards zero.

    This merge loads the base model whole (it is not out-of-core).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sftlab.io import atomic_path

log = logging.getLogger(__name__)

#: Bytes of output tensors mergekit buffers before writing a safetensors shard; small enough that the
#: buffer stays a fraction of a 7B model, large enough that a 7B model has few shards.
DEFAULT_OUT_SHARD_BYTES = 2 * 1000**3

#: Files copied from the donor model into the merged directory: the tokenizer and the generation settings.
_DONOR_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class MergekitDeclaration:
    """What mergekit declares of a merge method and sftlab reads: whether it requires the base model, and its
    parameters given per input model and once for the merge."""

    base_required: bool
    input_parameters: tuple[str, ...]
    shared_parameters: tuple[str, ...]


def _declarations_cache() -> Path:
    """The cached declarations of the installed mergekit version (importing mergekit imports torch: seconds of
    every `snakemake` command that checks a config with a merge)."""
    from importlib.metadata import version

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "sftlab" / f"mergekit-{version('mergekit')}-methods.json"


def _read_declarations() -> dict[str, MergekitDeclaration]:
    """Every mergekit merge method's declaration, from mergekit's registry."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import BasePolicy

    return {spec.name: MergekitDeclaration(spec.contract.base == BasePolicy.REQUIRED,
                                           tuple(p.name for p in spec.input_parameters),
                                           tuple(p.name for p in spec.shared_parameters))
            for spec in (method.spec for method in registry.registered_methods())}


@functools.lru_cache(maxsize=None)
def mergekit_declarations() -> dict[str, MergekitDeclaration]:
    """mergekit's declarations of its merge methods, cached per mergekit version (a cache that cannot be read or
    written is skipped: mergekit is asked again)."""
    path = _declarations_cache()
    try:
        return {name: MergekitDeclaration(d["base_required"], tuple(d["input_parameters"]),
                                          tuple(d["shared_parameters"]))
                for name, d in json.loads(path.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    declarations = _read_declarations()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({name: asdict(d) for name, d in declarations.items()}, indent=1))
    except OSError as e:
        log.debug("mergekit's declarations not cached at %s: %s", path, e)
    return declarations


def mergekit_spec(name: str) -> MergekitDeclaration:
    """mergekit's own declaration of a merge method (its parameters, per input or shared, and its base policy)."""
    declarations = mergekit_declarations()
    if name not in declarations:
        raise ValueError(f"mergekit has no merge method {name!r}; it has {sorted(declarations)}")
    return declarations[name]


@dataclass(frozen=True)
class MergeMethod:
    """A merge method under its config name: the mergekit method it maps to, sftlab's defaults for the parameters
    the config may set (``composition.merge``: the others keep mergekit's own), and whether it is defined as a sum
    of deltas.

    Whether each parameter is given once per sub-model (``model_params``) or once for the merge
    (``shared_params``), and whether the method needs the base model, are read from mergekit's registry, not
    declared again (a method of our own declares them itself). Every method also takes ``weights`` (one per sub-model): by default uniform 1/K, so that methods that do not normalise still
    average the deltas, or 1 each where the method is defined as a sum of deltas (``sums_deltas``: task arithmetic).
    """

    mergekit_method: str | None  # None: merged by our own code (see ``merge``), which declares the two below
    defaults: Mapping[str, float] = field(default_factory=dict)
    sums_deltas: bool = False
    #: a method of our own (no mergekit declaration to read): whether it needs the base, its shared parameters
    own_uses_base: bool = False
    own_shared_params: tuple[str, ...] = ()

    @property
    def uses_base(self) -> bool:
        if self.mergekit_method is None:
            return self.own_uses_base
        return mergekit_spec(self.mergekit_method).base_required

    @property
    def model_params(self) -> tuple[str, ...]:
        if self.mergekit_method is None:
            return ()
        return tuple(p for p in mergekit_spec(self.mergekit_method).input_parameters if p in self.defaults)

    @property
    def shared_params(self) -> tuple[str, ...]:
        if self.mergekit_method is None:
            return self.own_shared_params
        return tuple(p for p in mergekit_spec(self.mergekit_method).shared_parameters if p in self.defaults)

    @property
    def params(self) -> tuple[str, ...]:
        return ("weights", *self.model_params, *self.shared_params)


@dataclass(frozen=True)
class FisherType:
    """How a Fisher merge (``sftlab.compose.fisher``) takes and scales a member's Fisher: y drawn from the model or
    the data's answer, the division by the Fisher's L2 norm, and the floor."""

    sampled: bool
    normalised: bool
    floor: float
    description: str


FISHER_TYPES: dict[str, FisherType] = {
    "model": FisherType(True, True, 1e-6, "model Fisher (y sampled from the model), L2-normalised, floor 1e-6"),
    "empirical": FisherType(False, False, 1e-30, "empirical Fisher (the data's answers), unnormalised"),
}

# density 0.5 is mergekit's documented example value; lambda 1.0 is mergekit's default, except for task
# arithmetic, whose λ = 0.3 scales a sum of K deltas (the common default of its papers' baselines).
# The order is the reports' (the DTM paper's: average, Fisher, task vector, DARE, TIES).
MERGE_METHODS: dict[str, MergeMethod] = {
    "average": MergeMethod("linear"),
    # the base tells which tensors the members changed (the only ones whose Fisher is computed)
    # 256 examples a member: our choice, a Monte-Carlo estimate of the diagonal Fisher; fisher_type "model" is
    # Matena & Raffel's Fisher (see sftlab.compose.fisher), "empirical" the data answers' one
    "fisher": MergeMethod(None, {"fisher_samples": 256, "fisher_type": "model"}, own_uses_base=True,
                          own_shared_params=("fisher_samples", "fisher_type")),
    "task_arithmetic": MergeMethod("task_arithmetic", {"lambda": 0.3}, sums_deltas=True),
    "dare_linear": MergeMethod("dare_linear", {"density": 0.5, "lambda": 1.0}),
    "dare_ties": MergeMethod("dare_ties", {"density": 0.5, "lambda": 1.0}),
    "ties": MergeMethod("ties", {"density": 0.5, "lambda": 1.0}),
}

MERGE_SPACES = ("delta", "adapter")


def _method(name: str) -> MergeMethod:
    if name not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {name!r}; known: {sorted(MERGE_METHODS)}")
    return MERGE_METHODS[name]


def resolve_params(method: str, n_models: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's parameters with defaults filled in and checked; ``weights`` becomes a list of K floats."""
    spec = _method(method)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ValueError(f"merge method {method!r} takes parameters {list(spec.params)}, got unknown {unknown}")
    resolved = {**spec.defaults, **{k: v for k, v in params.items() if v is not None}}
    weights = resolved.get("weights")
    if weights is None:
        weights = [1.0 if spec.sums_deltas else 1.0 / n_models] * n_models
    weights = [float(w) for w in weights]
    if len(weights) != n_models:
        raise ValueError(f"merge method {method!r}: {len(weights)} weights for {n_models} models")
    if not all(math.isfinite(w) for w in weights) or abs(sum(weights)) < 1e-12:
        raise ValueError(f"merge method {method!r}: weights must be finite and not sum to 0, got {weights}")
    resolved["weights"] = weights
    if "fisher_type" in resolved and resolved["fisher_type"] not in FISHER_TYPES:
        raise ValueError(f"merge method {method!r}: fisher_type must be one of {list(FISHER_TYPES)}, "
                         f"got {resolved['fisher_type']!r}")
    if "density" in resolved and not 0 < float(resolved["density"]) <= 1:
        raise ValueError(f"merge method {method!r}: density must be in (0, 1], got {resolved['density']}")
    return resolved


def _config_dtype(model_dir: Path) -> str:
    """The dtype a model directory's config.json declares (float32 when it declares none)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json)")
    config = json.loads(path.read_text())
    return config.get("dtype") or config.get("torch_dtype") or "float32"


def mergekit_config(
    method: str,
    models: Sequence[str | Path],
    base_model: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    out_dtype: str | None = None,
) -> dict[str, Any]:
    """The mergekit configuration (as a dict, the YAML's structure) of merging ``models`` with ``method``."""
    spec = _method(method)
    if spec.mergekit_method is None:
        raise ValueError(f"merge method {method!r} is not a mergekit method (see sftlab.compose.merge.merge)")
    if len(models) < 2:
        raise ValueError(f"merging needs at least 2 models, got {len(models)}")
    repeated = sorted({str(m) for m in models if [str(x) for x in models].count(str(m)) > 1})
    if repeated:
        raise ValueError(f"merge inputs given more than once: {repeated}")
    resolved = resolve_params(method, len(models), params)
    entries = []
    for i, model in enumerate(models):
        model_params = {"weight": resolved["weights"][i]}
        model_params.update({name: float(resolved[name]) for name in spec.model_params})
        entries.append({"model": str(model), "parameters": model_params})
    config: dict[str, Any] = {
        "merge_method": spec.mergekit_method,
        "models": entries,
        # arithmetic in float32 whatever the inputs' dtype: bf16 deltas of LoRA updates lose most of their bits
        "dtype": "float32",
        "out_dtype": out_dtype or _config_dtype(Path(models[0])),
    }
    if spec.uses_base:
        if base_model is None:
            raise ValueError(f"merge method {method!r} needs the base model (the deltas are taken against it)")
        config["base_model"] = str(base_model)
    if spec.shared_params:
        config["parameters"] = {name: float(resolved[name]) for name in spec.shared_params}
    return config


def copy_tokenizer(src: str | Path, dst: str | Path) -> None:
    """Copy a model directory's tokenizer and generation config; raise if it has no tokenizer (a merged
    model must be usable alone)."""
    copied = []
    for name in _DONOR_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    if "tokenizer_config.json" not in copied:
        raise FileNotFoundError(f"{src}: no tokenizer_config.json to copy into the merged model")


def merge_models(
    models: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "average",
    base_model: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    out_shard_bytes: int = DEFAULT_OUT_SHARD_BYTES,
) -> dict[str, Any]:
    """Merge full model directories with mergekit (delta space); writes ``out_dir`` atomically.

    ``seed`` fixes DARE's random drops. ``device`` is where the arithmetic runs ("cpu", "cuda", "auto").
    Returns the mergekit configuration used (also saved as ``mergekit_config.yml`` in ``out_dir``).
    """
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    for model in [*models, *([base_model] if base_model is not None else [])]:
        _config_dtype(Path(model))
    config = mergekit_config(method, models, base_model, params)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    options = MergeOptions(
        random_seed=seed,
        device=device,
        # on an accelerator, keep intermediate results there instead of in host memory
        low_cpu_memory=device != "cpu",
        # tensors are read one at a time from the inputs (safetensors are mmapped; pickled .bin files need
        # the lazy unpickler) and the writer flushes every out_shard_bytes: peak memory stays near one shard
        lazy_unpickle=True,
        out_shard_size=out_shard_bytes,
        copy_tokenizer=False,
        write_model_card=True,
        quiet=True,
    )
    log.info("merging %d models with %s (mergekit %s) into %s", len(models), method, config["merge_method"], out_dir)
    with atomic_path(out_dir) as tmp:
        run_merge(MergeConfiguration.model_validate(config), str(tmp), options=options)
        copy_tokenizer(base_model if base_model is not None else models[0], tmp)
    return config


def _read_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; merge_space 'adapter' needs each sub-model's peft adapter dir")
    return json.loads(config_path.read_text()), load_file(weights_path)


# adapter settings that must agree for an element-wise mean of A and B to mean anything
_ADAPTER_KEYS = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "rank_pattern", "alpha_pattern")


def _adapter_setting(config: dict, key: str):
    """An adapter setting, comparable across runs: peft keeps target_modules as a set and writes it in
    arbitrary order, so a list of them compares as a set."""
    value = config.get(key)
    return sorted(value) if key == "target_modules" and isinstance(value, list) else value


def average_adapters(adapters: Sequence[str | Path], weights: Sequence[float] | None = None):
    """(adapter config, tensors): the weighted mean of each LoRA tensor (A and B separately) over ``adapters``."""
    if len(adapters) < 2:
        raise ValueError(f"merging needs at least 2 adapters, got {len(adapters)}")
    weights = resolve_params("average", len(adapters), {"weights": weights})["weights"]
    total = sum(weights)
    first_config, first = _read_adapter(Path(adapters[0]))
    mean = {name: tensor.double() * (weights[0] / total) for name, tensor in first.items()}
    for adapter, weight in zip(adapters[1:], weights[1:]):
        config, tensors = _read_adapter(Path(adapter))
        for key in _ADAPTER_KEYS:
            if _adapter_setting(config, key) != _adapter_setting(first_config, key):
                raise ValueError(
                    f"{adapter}/adapter_config.json: {key}={config.get(key)!r} differs from "
                    f"{adapters[0]}'s {first_config.get(key)!r}; adapters cannot be averaged"
                )
        if set(tensors) != set(mean):
            raise ValueError(f"{adapter}/adapter_model.safetensors: tensor names differ from {adapters[0]}'s")
        for name, tensor in tensors.items():
            mean[name] += tensor.double() * (weight / total)
    return first_config, {name: tensor.to(first[name].dtype) for name, tensor in mean.items()}


def merge_adapters(
    adapters: Sequence[str | Path],
    base_model: str | Path,
    out_dir: str | Path,
    weights: Sequence[float] | None = None,
) -> None:
    """Average LoRA A and B matrices separately and merge the result into ``base_model`` (adapter space)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    out_dtype = _config_dtype(Path(base_model))
    config, tensors = average_adapters(adapters, weights)
    with tempfile.TemporaryDirectory() as adapter_dir:
        Path(adapter_dir, "adapter_config.json").write_text(json.dumps(config, indent=2))
        save_file(tensors, str(Path(adapter_dir, "adapter_model.safetensors")))
        # merge in float32 so the small update is not rounded away before the cast to the base's dtype
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.to(getattr(torch, out_dtype))
    log.info("merged the mean of %d adapters into %s", len(adapters), base_model)
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        copy_tokenizer(base_model, tmp)


def merge(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "average",
    merge_space: str = "delta",
    base_model: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    member_examples: Sequence[Sequence[dict]] | None = None,
    max_length: int = 1024,
) -> None:
    """Merge sub-models: ``inputs`` are model directories (delta space) or peft adapter directories (adapter space).

    ``member_examples`` (Fisher merging only): each member's own training examples, normalised, in input order.
    """
    if method == "fisher":
        from sftlab.compose.fisher import fisher_merge

        if merge_space != "delta":
            raise ValueError("Fisher merging works on full models: merge_space must be 'delta'")
        if base_model is None or member_examples is None:
            raise ValueError("Fisher merging needs the base model and each member's training examples")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = resolve_params(method, len(inputs), params)
        fisher_merge(inputs, out_dir, base_model, member_examples, resolved["weights"],
                     int(resolved["fisher_samples"]), max_length, seed=seed, device=device,
                     fisher_type=resolved["fisher_type"])
    elif merge_space == "delta":
        merge_models(inputs, out_dir, method, base_model, params, seed=seed, device=device)
    elif merge_space == "adapter":
        if method != "average":
            raise ValueError(f"merge_space 'adapter' supports only method 'average', got {method!r}")
        if base_model is None:
            raise ValueError("merge_space 'adapter' needs the base model to merge the averaged adapter into")
        resolve_params(method, len(inputs), params)
        merge_adapters(inputs, base_model, out_dir, (params or {}).get("weights"))
    else:
        raise ValueError(f"unknown merge_space {merge_space!r}; known: {list(MERGE_SPACES)}")


def merge_grouped(inputs: Sequence[str | Path], groups: Sequence[int], out_dir: str | Path, method: str = "average",
                  merge_space: str = "delta", base_model: str | Path | None = None,
                  params: Mapping[str, Any] | None = None, seed: int = 0, device: str = "cpu") -> None:
    """A two-level merge: average each group of consecutive ``inputs`` (``groups``: their sizes), then merge the
    group averages with ``method`` (a composition whose members are grouped, e.g. seeds within a shard).

    Full models only (delta space); Fisher merging weighs members by their own data, so it takes no groups.
    """
    import tempfile

    if sum(groups) != len(inputs) or min(groups, default=0) < 1:
        raise ValueError(f"merge groups {list(groups)} do not split the {len(inputs)} inputs")
    if merge_space != "delta" or method == "fisher":
        raise ValueError(f"a grouped merge works on full models with a mergekit method, not merge_space "
                         f"{merge_space!r} / method {method!r}")
    starts = [sum(groups[:i]) for i in range(len(groups))]
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent, prefix=".groups-") as tmp:
        averaged = []
        for i, (start, size) in enumerate(zip(starts, groups)):
            if size == 1:  # a group of one is its member
                averaged.append(inputs[start])
                continue
            averaged.append(Path(tmp) / f"group-{i}")
            merge_models(inputs[start:start + size], averaged[-1], "average", base_model, None, seed=seed,
                         device=device)
        merge_models(averaged, out_dir, method, base_model, params, seed=seed, device=device)
