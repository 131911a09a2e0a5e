"""The first step's gradient of ObjectiveTrainer on a fixed global batch, for each batch layout × micro-batch size ×
loss reduction × objective; run as plain python (one process) or under accelerate launch (DDP over gloo).

    python tests/_reduction_grads.py OUT.pt [PROCESSES]   → {(objective, reduction, layout, batch_size): {name: grad}}
"""

from __future__ import annotations

import sys
import tempfile

import torch
from transformers import TrainerCallback, TrainingArguments

from sftlab.models.random_init import build_random_model
from sftlab.objectives import build_objective
from sftlab.objectives.base import REDUCTIONS
from sftlab.training.trainer import EncodedDataset, ObjectiveTrainer, batch_collator

GLOBAL_BATCH = 8
LENGTHS = (23, 9, 31, 14, 40, 6, 17, 27)  # one global batch: every layout and split sees all eight in its first step
OBJECTIVES = {"ntp": {}, "minorsft": {"beta": 0.5}, "sftmix": {"mu": 0.5, "seed": 2}}
LAYOUTS = ("padded", "length_grouped", "packed")


def features(vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i, n in enumerate(LENGTHS):
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        prompt = 2 + i % 3
        out.append({"id": str(i), "input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "ref_logp": -30.0 - 2 * i,
                    "confident": float(i < len(LENGTHS) // 2)})
    return out


class GradCapture(TrainerCallback):
    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


def first_step_grads(objective: str, reduction: str, layout: str, batch_size: int, processes: int, tmp: str):
    model, tokenizer = build_random_model(seed=0)
    feats = features(len(tokenizer))
    args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=GLOBAL_BATCH // (batch_size * processes), max_steps=1,
                             learning_rate=1e-3, max_grad_norm=0.0, report_to=[], save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, seed=0,
                             ddp_find_unused_parameters=False, logging_strategy="no")
    capture = GradCapture(model)
    obj = build_objective(objective, OBJECTIVES[objective])
    trainer = ObjectiveTrainer(model=model, args=args, train_dataset=EncodedDataset(feats), processing_class=tokenizer,
                               data_collator=batch_collator("packed" if layout == "packed" else "padded",
                                                            tokenizer.pad_token_id, obj.columns),
                               objective=obj, group_by_length=layout == "length_grouped", reduction=reduction,
                               callbacks=[capture])
    trainer.train()
    return capture.grads, trainer.is_world_process_zero()


def main() -> None:
    out, processes = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
    results, zero = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        for objective in OBJECTIVES:
            for reduction in REDUCTIONS:
                for layout in LAYOUTS:
                    smallest = 2 if objective == "sftmix" else 1  # SFTMix: whole pairs
                    for batch_size in sorted({GLOBAL_BATCH // processes, smallest}):
                        grads, zero = first_step_grads(objective, reduction, layout, batch_size, processes, tmp)
                        results[(objective, reduction, layout, batch_size)] = grads
    if zero:
        torch.save(results, out)


if __name__ == "__main__":
    main()
