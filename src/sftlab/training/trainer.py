"""Training on ``transformers.Trainer`` with a pluggable objective.

The trainer only wires batches into ``Objective.terms``: every objective returns its loss terms unreduced (per
example: summed loss and response tokens), and the trainer reduces them over the global batch with
``training.loss_reduction``, normalising by the global batch's totals (examples, tokens), which it adds up over the
step's micro-batches and all-reduces over the processes before the step. How much an example weighs thus does not depend
on the batch layout (padded, length-grouped, packed), the micro-batch size or the number of processes.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from sftlab.data.batching import LengthGroupedSampler
from sftlab.data.tokenize import collate, collate_packed, encode_example, ensure_chat_template
from sftlab.io import atomic_path, write_text
from sftlab.objectives import Objective, build_objective
from sftlab.objectives.base import REDUCTIONS, model_inputs, reduce_terms, sequence_logps, term_totals
from sftlab.models.scoring import length_normalised_reward
from sftlab.progress import progress

log = logging.getLogger(__name__)


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised examples with their extra per-example columns."""

    def __init__(self, features: list[dict[str, Any]]):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def encode_examples(tokenizer, examples: list[dict], max_length: int, tables: dict[str, dict[str, dict]] | None = None,
                    columns: tuple[str, ...] = ()) -> list[dict]:
    """Encode examples; attach ``columns`` from ``tables`` (column → {id → value}); drop examples left without response tokens."""
    out, dropped = [], 0
    for ex in examples:
        enc = encode_example(tokenizer, ex["messages"], max_length)
        if enc is None:
            dropped += 1
            continue
        enc["id"] = ex["id"]
        for column in columns:
            values = (tables or {}).get(column)
            if values is None:
                raise KeyError(f"objective needs per-example column {column!r}, but no table provides it")
            if ex["id"] not in values:
                raise KeyError(f"per-example column {column!r} has no value for example {ex['id']!r}")
            enc[column] = values[ex["id"]]
        out.append(enc)
    if dropped:
        log.warning("dropped %d examples with no response token within max_length=%d", dropped, max_length)
    return out


def heldout_shard(features: list[dict], rank: int, processes: int) -> tuple[list[dict], list[bool]]:
    """Process ``rank``'s share of the held-out set (every ``processes``-th example) and which of them count.

    Every share has the same length, ceil(N / processes), padded with copies of the first example that do not count:
    under FSDP / ZeRO-3 each forward pass is collective, so every process must run the same number of batches.
    """
    share = features[rank::processes]
    size = -(-len(features) // processes)
    counts = [True] * len(share) + [False] * (size - len(share))
    return share + [features[0]] * (size - len(share)), counts


def heldout_sums(model, pad_token_id: int, features: list[dict], counts: list[bool], batch_size: int) -> dict:
    """Held-out sums over the examples flagged in ``counts``: response-token NLL, response tokens and, with a
    ``ref_logp`` per example, the per-example rewards (log πθ − log πref)/|y|, from one forward pass per batch.
    Batches are taken in order of length, so that little padding is computed."""
    with_ref = "ref_logp" in features[0]
    columns = ("ref_logp",) if with_ref else ()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = {"nll": 0.0, "tokens": 0, "rewards": []}
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    with torch.no_grad():
        for start in progress(range(0, len(order), batch_size), "held-out evaluation",
                              total=math.ceil(len(order) / batch_size)):
            rows = order[start:start + batch_size]
            batch = collate([features[i] for i in rows], pad_token_id, columns)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**model_inputs(batch)).logits
            logps, lengths = sequence_logps(logits, batch["labels"])
            keep = torch.tensor([counts[i] for i in rows], device=device)
            sums["nll"] -= float(logps.double()[keep].sum())
            sums["tokens"] += int(lengths[keep].sum())
            if with_ref:
                reward = length_normalised_reward(logits, batch["labels"], batch["ref_logp"])
                sums["rewards"] += reward[keep].tolist()
    model.train(was_training)
    return sums


def combine_heldout(parts: list[dict]) -> dict[str, float]:
    """eval_loss (token-weighted NTP loss) and, where rewards were scored, the deviation m_θ, over all shares."""
    tokens = sum(p["tokens"] for p in parts)
    metrics = {"eval_loss": sum(p["nll"] for p in parts) / max(tokens, 1)}
    rewards = [r for p in parts for r in p["rewards"]]
    if rewards:
        metrics["deviation"] = sum(rewards) / len(rewards)
    return metrics


def heldout_metrics(model, tokenizer, features: list[dict], batch_size: int, rank: int = 0, processes: int = 1,
                    gather=lambda part: [part]) -> dict[str, float]:
    """NTP loss on the held-out set (token-weighted); with a ``ref_logp`` per example also the deviation m_θ, from
    the same forward pass. With several processes each scores its share and ``gather`` (a collective, e.g.
    accelerate's ``gather_object``) brings every process's sums together."""
    if not features:
        return {}
    share, counts = heldout_shard(features, rank, processes)
    return combine_heldout(gather(heldout_sums(model, tokenizer.pad_token_id, share, counts, batch_size)))


#: attention implementations that run packed rows without computing across examples: flash-attention's varlen
#: kernels take the per-example boundaries from the restarting position ids. eager and sdpa also give exact results on
#: packed rows (a block-diagonal mask), but attend over the whole row, O(N²) in the packed length: length grouping wins.
PACKED_ATTENTION = ("flash_attention_2", "flash_attention_3")
BATCHINGS = ("auto", "packed", "length_grouped", "padded")


def resolve_batching(batching: str, attn_implementation: str | None) -> str:
    """``auto`` → packed where the attention implementation runs packed rows at no extra cost, else length-grouped."""
    if batching not in BATCHINGS:
        raise ValueError(f"training.batching: {batching!r} is not one of {list(BATCHINGS)}")
    if batching != "auto":
        return batching
    return "packed" if attn_implementation in PACKED_ATTENTION else "length_grouped"


def resolve_reduction(reduction: str, objective: Objective) -> str:
    """``auto`` → the objective's own reduction (NTP, SFTMix: token_mean; MinorSFT, DPO-SFT: example_mean)."""
    if reduction == "auto":
        return objective.batch_reduction
    if reduction not in REDUCTIONS:
        raise ValueError(f"training.loss_reduction: {reduction!r} is not one of {['auto', *REDUCTIONS]}")
    return reduction


def batch_collator(batching: str, pad_token_id: int, columns: tuple[str, ...]):
    """The data collator of a batching mode: padding-free packed rows, or right-padded rows."""
    if batching == "packed":
        return functools.partial(collate_packed, columns=columns)
    return functools.partial(collate, pad_token_id=pad_token_id, columns=columns)


class ObjectiveTrainer(Trainer):
    """A Trainer whose loss is an ``Objective``; also honours the objective's batch sampler.

    ``group_by_length``: batches of examples of similar length (from a shuffled pool), for the objective's own sampler
    too (SFTMix's pairs), so that little padding is computed. ``reduction``: ``training.loss_reduction``.
    """

    def __init__(self, *args, objective: Objective, group_by_length: bool = False, reduction: str = "token_mean",
                 **kwargs):
        if reduction not in REDUCTIONS:
            raise ValueError(f"training.loss_reduction: {reduction!r} is not one of {list(REDUCTIONS)}")
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.group_by_length = group_by_length
        self.reduction = reduction
        # compute_loss returns the micro-batch's share of the global batch's loss: the Trainer must not divide it by
        # the accumulation steps (the processes' gradients are averaged, which compute_loss undoes)
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = True
        self._objective_metrics: dict[str, list[float]] = {}

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, and in place of the Trainer's token count the global batch's totals per loss term."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        return batches, self.global_totals(batches, device)

    def global_totals(self, batches: list[dict], device) -> dict[str, tuple[float, float]]:
        """(units, items) of each loss term over ``batches`` and every process's micro-batches of the same step (a
        collective: every process calls it once a step)."""
        local: dict[str, list[float]] = {}
        for batch in batches:
            for name, counts in self.objective.counts(batch).items():
                local[name] = [a + b for a, b in zip(local.get(name, (0, 0)), counts)]
        names = sorted(local)
        totals = torch.tensor([local[name] for name in names], dtype=torch.float64, device=device).reshape(-1, 2)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return {name: tuple(row.tolist()) for name, row in zip(names, totals)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms, metrics = self.objective.terms(model, inputs)
        if isinstance(num_items_in_batch, dict):  # a training step: the global batch's totals (get_batch_samples)
            # × processes: DDP / FSDP / ZeRO average the processes' gradients, the global loss is their sum
            loss = reduce_terms(terms, self.reduction, num_items_in_batch) * self.accelerator.num_processes
        else:
            loss = reduce_terms(terms, self.reduction, term_totals(terms))
        for key, value in metrics.items():
            self._objective_metrics.setdefault(key, []).append(float(value))
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            for key, values in self._objective_metrics.items():
                logs[key] = sum(values) / len(values)
            self._objective_metrics = {}
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(row["input_ids"]) for row in dataset] if self.group_by_length else None
        sampler = self.objective.train_sampler(dataset, self.args.per_device_train_batch_size, self.args.seed,
                                               lengths=lengths)
        if sampler is None and lengths is not None:
            sampler = LengthGroupedSampler(lengths, self.args.per_device_train_batch_size, self.args.seed)
        self._epoch_sampler = sampler
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def _run_epoch(self, *args, **kwargs):
        # our samplers order each epoch by (seed, epoch); accelerate forwards set_epoch to neither a sampler inside
        # BatchSamplerShard (several processes) nor one behind the batch skipping of a resumed epoch
        if getattr(self, "_epoch_sampler", None) is not None:
            self._epoch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)


def gather_parts(part: dict) -> list[dict]:
    """Every process's held-out sums, on every process (one process: its own)."""
    from accelerate.utils import gather_object

    return gather_object([part]) if world_size() > 1 else [part]


class HeldoutEvalCallback(TrainerCallback):
    """Evaluate on the held-out set before the first step and every ``eval_steps``; results go to the log history.

    With several processes each one scores its share of the held-out set and the sums are gathered (the numbers of
    one process, in a 1/processes of the time); only process 0 writes.
    """

    def __init__(self, trainer: ObjectiveTrainer, features: list[dict], batch_size: int, eval_steps: int):
        self.trainer, self.features, self.batch_size, self.eval_steps = trainer, features, batch_size, eval_steps

    def _evaluate(self, state) -> None:
        if any(e.get("step") == state.global_step and "eval_loss" in e for e in state.log_history):
            return
        args = self.trainer.args
        metrics = heldout_metrics(self.trainer.model, self.trainer.processing_class, self.features, self.batch_size,
                                  args.process_index, args.world_size, gather_parts)
        if metrics:
            # appended directly: Trainer.log from inside a step would reset the step's own logging flags
            state.log_history.append({**metrics, "epoch": state.epoch or 0.0, "step": state.global_step})
            if state.is_world_process_zero:
                log.info("%s", {k: round(v, 4) for k, v in metrics.items()} | {"step": state.global_step})

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._evaluate(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_steps == 0 or state.global_step == state.max_steps:
            self._evaluate(state)


class EpochModelSaver(TrainerCallback):
    """Save a loadable model (LoRA merged into a copy) at the end of chosen epochs: SFTMix's reference checkpoints.

    Process 0 writes; under FSDP / ZeRO-3 every process first takes part in gathering the sharded weights.
    """

    def __init__(self, trainer: ObjectiveTrainer, out_dir: Path, epochs: list[int], dtype: torch.dtype | None = None):
        self.trainer, self.out_dir, self.epochs, self.dtype = trainer, Path(out_dir), set(epochs), dtype

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch)
        target = self.out_dir / f"checkpoint-{epoch}"
        if epoch not in self.epochs:
            return
        weights = full_state_dict(self.trainer)
        if state.is_world_process_zero and not target.exists():
            save_model(self.trainer, target, weights, dtype=self.dtype)
        self.trainer.accelerator.wait_for_everyone()


def is_sharded(trainer: Trainer) -> bool:
    """FSDP or DeepSpeed: no process holds the whole model."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def full_state_dict(trainer: Trainer) -> dict | None:
    """The whole model's weights, gathered on process 0 when training is sharded (a collective: every process must
    call it); None when each process holds the whole model anyway."""
    return trainer.accelerator.get_state_dict(trainer.model_wrapped) if is_sharded(trainer) else None


#: the run's effective settings, beside the final model's weights
RUN_SETTINGS = "sftlab_run.json"


def save_model(trainer: Trainer, out_dir: Path, weights: dict | None = None, final: bool = False,
               dtype: torch.dtype | None = None, settings: dict | None = None) -> None:
    """A loadable model directory, written atomically: the gathered ``weights`` of a sharded run, or the model with
    LoRA merged in — into a copy during training; at the end (``final``) in place, the adapter kept in ``adapter/``.
    Floating-point weights are saved in ``dtype`` (the training precision; default: as they are), cast tensor by
    tensor on the CPU, so that a run that goes on keeps its float32 master weights and no second copy on the GPU.
    ``settings`` (the run's effective settings: loss reduction, global batch, layout, ...) go to ``RUN_SETTINGS``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    with atomic_path(out_dir) as tmp:
        if weights is None and hasattr(model, "merge_and_unload"):
            if final:
                model.save_pretrained(tmp / "adapter")
            model = (model if final else copy.deepcopy(model)).merge_and_unload()
        if weights is None and dtype is not None:
            weights = model.state_dict()
        if weights is not None and dtype is not None:
            weights = {k: v.detach().to("cpu", dtype) if v.is_floating_point() else v for k, v in weights.items()}
        saved_dtype = model.config.dtype
        model.config.dtype = dtype or saved_dtype  # what from_pretrained(dtype="auto") loads it as
        try:
            model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        finally:
            model.config.dtype = saved_dtype
        trainer.processing_class.save_pretrained(tmp)
        if settings is not None:
            write_text(tmp / RUN_SETTINGS, json.dumps(settings, indent=2, sort_keys=True))


def resolve_precision(precision: str) -> str:
    """``auto`` → bf16 on a GPU that supports it, else fp32; bf16 / fp16 need a GPU."""
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise ValueError(f"training.precision: {precision} needs a GPU; use auto or fp32 on CPU")
    return precision


def precision_flags(precision: str) -> dict[str, bool]:
    precision = resolve_precision(precision)
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def weights_dtype(cfg: dict) -> torch.dtype:
    """The dtype of the weights that do not train and of the saved model: the training precision.

    LoRA's frozen base is loaded in it (the adapter stays float32), so autocast does not recast every frozen weight
    at every forward and the base takes half the memory; full fine-tuning keeps float32 master weights for the
    optimizer and saves the model in the training precision.
    """
    return DTYPES[resolve_precision(cfg["precision"])]


#: training.report_to → the package its transformers integration needs
TRACKERS = {"wandb": "wandb", "tensorboard": "tensorboard"}


def report_targets(report_to: str) -> list[str]:
    """The Trainer's ``report_to`` list; a tracker whose package is missing is named before training starts."""
    if report_to == "none":
        return []
    if report_to not in TRACKERS:
        raise ValueError(f"training.report_to: {report_to!r} is not one of {['none', *TRACKERS]}")
    if importlib.util.find_spec(TRACKERS[report_to]) is None:
        raise ModuleNotFoundError(f"training.report_to: {report_to} is selected but the {TRACKERS[report_to]} package "
                                  f"is not installed in this environment (pip install {TRACKERS[report_to]})")
    return [report_to]


def world_size() -> int:
    """Processes of this run: set by `accelerate launch` / torchrun, 1 when started as plain python."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(cfg: dict, output_dir: Path) -> TrainingArguments:
    """The Trainer's settings; ``batch_size`` is per process, so the global batch is batch_size ×
    gradient_accumulation × processes (the launcher's process count is part of the rule's params).
    Trackers (``report_to``) name the run after its directory (the checkpoints' parent)."""
    run_dir = Path(output_dir).resolve().parent
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation"],
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["epochs"],
        max_steps=cfg["max_steps"],
        lr_scheduler_type=cfg["scheduler"],
        warmup_steps=cfg["warmup_steps"] if cfg["warmup_steps"] else cfg["warmup_ratio"],
        weight_decay=cfg["weight_decay"],
        adam_beta1=cfg["adam_beta1"],
        adam_beta2=cfg["adam_beta2"],
        adam_epsilon=cfg["adam_epsilon"],
        max_grad_norm=cfg["max_grad_norm"],
        seed=cfg["seed"],
        data_seed=cfg["seed"],
        logging_steps=cfg["logging_steps"],
        save_strategy="steps",
        save_steps=cfg["save_steps"],
        save_total_limit=2,
        report_to=report_targets(cfg.get("report_to", "none")),
        run_name="/".join(run_dir.parts[-4:]),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        gradient_checkpointing=cfg["gradient_checkpointing"],
        ddp_find_unused_parameters=False,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        **precision_flags(cfg["precision"]),
    )


def load_model(model_dir: str | Path, cfg: dict, dtype: torch.dtype | None = None):
    """The base model and tokenizer; LoRA-wrapped when ``finetuning: lora``.

    LoRA: the frozen base in ``dtype`` (default: the training precision), the adapter in float32 (peft's
    ``autocast_adapter_dtype``); full fine-tuning: float32 master weights for the optimizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    is_lora = cfg["finetuning"] == "lora"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=(dtype or weights_dtype(cfg)) if is_lora else torch.float32,
                                                 attn_implementation=cfg.get("attn_implementation", "sdpa"))
    if is_lora:
        from peft import LoraConfig, get_peft_model

        lora = cfg["lora"]
        # the adapter's random A matrices are drawn here: runs with one seed share them (the members of a DTM recipe,
        # as in the authors' code) unless ``init_seed`` gives a run its own draw (composition init: different)
        torch.manual_seed(cfg.get("init_seed", cfg.get("seed", 0)))
        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                                 target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"),
                               autocast_adapter_dtype=True)
    return model, tokenizer


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def resume_point(args: TrainingArguments, checkpoint_dir: Path, params: dict) -> str | None:
    """``prepare_checkpoint_dir`` on process 0 (which may clear the directory), then the others, which only look."""
    with args.main_process_first(desc="checkpoint directory"):
        if args.process_index == 0:
            return prepare_checkpoint_dir(checkpoint_dir, params)
        return get_last_checkpoint(str(checkpoint_dir))


def prepare_checkpoint_dir(checkpoint_dir: Path, params: dict) -> str | None:
    """The checkpoint to resume from, if one was left by a run with exactly these parameters.

    Checkpoints of a run with other parameters are removed: resuming them would mix two recipes.
    """
    stamp = checkpoint_dir / "params.json"
    digest = params_hash(params)
    if checkpoint_dir.exists():
        try:
            old = json.loads(stamp.read_text()).get("hash")
        except (OSError, ValueError):
            old = None
        if old != digest:
            log.info("removing checkpoints of a run with other parameters in %s", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_text(stamp, json.dumps({"hash": digest, "params": params}, indent=2, sort_keys=True))
    last = last_complete_checkpoint(checkpoint_dir)
    if last:
        log.info("resuming from %s", last)
    return last


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing: ``trainer_state.json`` is the last file it saves.

    Newer, incomplete ones (a job killed or preempted while saving) are removed, so the Trainer never loads them.
    """
    steps = {}
    for path in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = path.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if path.is_dir() and suffix.isdigit():
            steps[int(suffix)] = path
    for step in sorted(steps, reverse=True):
        if (steps[step] / TRAINER_STATE_NAME).exists():
            return str(steps[step])
        log.info("removing incomplete checkpoint %s (the job stopped while writing it)", steps[step])
        shutil.rmtree(steps[step])
    return None


LOG_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "eval_loss"]


def write_train_log(log_history: list[dict], path: Path) -> None:
    """One row per step that logged something; training and evaluation entries of a step are merged."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "step" not in entry or "train_runtime" in entry:
            continue
        rows.setdefault(entry["step"], {"step": entry["step"]}).update(
            {k: v for k, v in entry.items() if isinstance(v, (int, float))})
    columns = LOG_COLUMNS + sorted({k for r in rows.values() for k in r} - set(LOG_COLUMNS))
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for step in sorted(rows):
            writer.writerow({c: rows[step].get(c, "") for c in columns})


def train(model_dir: str | Path, train_examples: list[dict], heldout_examples: list[dict], cfg: dict, objective_cfg: dict,
          out_dir: str | Path | None, log_path: str | Path, checkpoint_dir: str | Path, tables: dict | None = None,
          heldout_ref_logps: dict | None = None, epoch_models: tuple[Path, list[int]] | None = None,
          callbacks: list[TrainerCallback] = ()) -> None:
    """Train one run and save the final model (LoRA merged into the base; the adapter kept in ``adapter/``).

    ``heldout_ref_logps`` (id → log πref) adds the deviation metric m_θ to every held-out evaluation;
    ``epoch_models`` = (directory, epochs) also saves a loadable model at the end of those epochs;
    ``callbacks`` are added to the Trainer (e.g. the LESS/ROSE warmup checkpoints with Adam moments).
    """
    checkpoint_dir = Path(checkpoint_dir)
    processes = world_size()
    batching = resolve_batching(cfg.get("batching", "auto"), cfg.get("attn_implementation", "sdpa"))
    args = training_arguments(cfg, checkpoint_dir)  # first: sets up the processes' shared state
    if "tensorboard" in args.report_to:  # beside train_log.csv: the checkpoint directory is removed at the end
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(Path(log_path).resolve().parent / "tensorboard"))
    torch.manual_seed(cfg["seed"])
    objective = build_objective(objective_cfg["name"], {k: v for k, v in objective_cfg.items() if k != "name"})
    model, tokenizer = load_model(model_dir, cfg)
    features = encode_examples(tokenizer, train_examples, cfg["max_length"], tables, objective.columns)
    if not features:
        raise ValueError("no training example left after encoding")
    heldout_columns = ("ref_logp",) if heldout_ref_logps is not None else ()
    heldout = encode_examples(tokenizer, heldout_examples, cfg["max_length"],
                              {"ref_logp": heldout_ref_logps} if heldout_ref_logps is not None else None,
                              heldout_columns)
    # the process count is part of the stamp: a checkpoint's data position and RNG states are per process
    resume = resume_point(args, checkpoint_dir, {"training": cfg, "objective": objective_cfg, "processes": processes,
                                                 "ids": [e["id"] for e in train_examples]})
    trainer = ObjectiveTrainer(
        model=model, args=args, train_dataset=EncodedDataset(features), processing_class=tokenizer,
        data_collator=batch_collator(batching, tokenizer.pad_token_id, objective.columns),
        objective=objective, group_by_length=batching == "length_grouped",
        reduction=resolve_reduction(cfg.get("loss_reduction", "auto"), objective),
    )
    trainer.add_callback(HeldoutEvalCallback(trainer, heldout, cfg["batch_size"], cfg["eval_steps"]))
    if epoch_models is not None:
        trainer.add_callback(EpochModelSaver(trainer, *epoch_models, dtype=weights_dtype(cfg)))
    for callback in callbacks:
        trainer.add_callback(callback)
    global_batch = cfg["batch_size"] * cfg["gradient_accumulation"] * processes
    settings = {"training": cfg, "objective": objective_cfg, "processes": processes, "global_batch": global_batch,
                "batching": batching, "loss_reduction": trainer.reduction}
    log.info("training on %d examples (%s batches), %d held-out, %d process(es) on device %s; global batch %d, "
             "%d steps per epoch; loss reduction %s", len(features), batching.replace("_", "-"), len(heldout), processes,
             args.device.type, global_batch, math.ceil(len(features) / global_batch), trainer.reduction)
    trainer.train(resume_from_checkpoint=resume)
    weights = full_state_dict(trainer) if out_dir is not None else None
    trainer.accelerator.wait_for_everyone()  # every process is done with the checkpoint directory
    if trainer.is_world_process_zero():
        if out_dir is not None:
            save_model(trainer, Path(out_dir), weights, final=True, dtype=weights_dtype(cfg), settings=settings)
        write_train_log(trainer.state.log_history, Path(log_path))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
