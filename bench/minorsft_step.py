"""Time of one MinorSFT (and DPO-SFT) optimisation step against one NTP step, same model and batch, one run.

Goal (issue 4): MinorSFT ≤ 1.05× the NTP step time — log πref is precomputed (``ref_logp`` column), so the only
extra work is a per-example sum and a log-sigmoid. Method and options as in ``sftmix_step.py`` (shared helpers).

    .venv/bin/python bench/minorsft_step.py [--batch-size 8 --seq-len 256 --repeats 10 --threads 1]
"""

from __future__ import annotations

import torch

from sftlab.objectives import build_objective, sequence_logps
from sftlab.objectives.base import model_inputs

from sftmix_step import compare, make_step, parse_args, report, setup


def main() -> None:
    args = parse_args(__doc__)
    memory, model, vocab, optimizer, batch = setup(args)
    with torch.no_grad():
        # the reference is the untrained model, as in the ref_logprobs rule
        batch["ref_logp"] = sequence_logps(model(**model_inputs(batch)).logits, batch["labels"])[0]
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary {vocab}")
    candidates = {name: make_step(build_objective(name), model, optimizer, batch) for name in ("ntp", "minorsft", "dpo_sft")}
    report(compare(candidates, memory, args.device, args.repeats), "ntp", {"time": 1.05}, args)


if __name__ == "__main__":
    main()
