"""Reference log-probs: log πref(y|x) (sum over response tokens) and |y| per example, for MinorSFT, DPO-SFT and ROSE.

Writes Parquet ``id, ref_logp, n_tokens`` for the examples of every given JSONL file (training pool and held-out set).
"""

from __future__ import annotations

import argparse
import json
import logging

import pandas as pd
import torch

from sftlab.io import write_parquet
from sftlab.logs import setup_logging
from sftlab.models.scoring import encode_jsonl, pad_id, score_examples
from sftlab.numerics import flush_denormals
from sftlab.training.forward_path import forward_path, load_policy_at_init, resolve_device_precision

log = logging.getLogger("ref_logprobs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="HF directory of the reference (untrained) model")
    parser.add_argument("--data", required=True, nargs="+", help="normalised JSONL files")
    parser.add_argument("--out", required=True, help="output Parquet file")
    parser.add_argument("--max-length", type=int, required=True, help="the training max_length (same truncation)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--training", default='{"finetuning": "full", "precision": "fp32"}',
                        help="training settings (JSON) of the runs that compare their log-probs with these: finetuning, "
                             "lora, precision, distributed; πref is scored through the same forward path")
    parser.add_argument("--processes", type=int, default=1, help="training processes of those runs")
    args = parser.parse_args(argv)
    flush_denormals()
    setup_logging()

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the runs' own forward path (LoRA-wrapped base in the training precision, FSDP's casts, autocast): r = 0 at step 0
    training = json.loads(args.training)
    forward = forward_path(training, args.processes, resolve_device_precision(training.get("precision", "fp32"), device))
    log.info("scoring through the runs' forward path: %s", forward)
    model, tokenizer = load_policy_at_init(args.model, training, forward, device)
    ids, examples = [], []
    for path in args.data:
        file_ids, file_examples, dropped = encode_jsonl(tokenizer, path, args.max_length)
        if dropped:
            log.warning("%s: %d example(s) have no response token within %d tokens, left out", path, len(dropped), args.max_length)
        ids += file_ids
        examples += file_examples
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids across {args.data}")
    scores = score_examples(model, examples, pad_id(tokenizer), args.batch_size, autocast=forward.autocast)
    write_parquet(args.out, pd.DataFrame({"id": ids, "ref_logp": scores["logp"], "n_tokens": scores["n_tokens"]}))
    log.info("wrote %d reference log-probs to %s", len(ids), args.out)


if __name__ == "__main__":
    main()
