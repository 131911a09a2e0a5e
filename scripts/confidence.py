"""SFTMix confidence: per-checkpoint perplexities of the training pool, confidence, variability and the median split.

Writes ``confidence.parquet`` (``id, perplexity_c{c}..., confidence, variability, split``) and a histogram (PNG and PDF).
A checkpoint directory named ``checkpoint-{c}`` gives the column ``perplexity_c{c}``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
from pathlib import Path

from sftlab.io import write_parquet
from sftlab.logs import setup_logging
from sftlab.models.scoring import encode_jsonl, load_for_scoring, pad_id, perplexities
from sftlab.report.tsne import plot_confidence_histogram
from sftlab.selection.confidence import confidence_table
from sftlab.numerics import flush_denormals

log = logging.getLogger("confidence")


def checkpoint_label(path: str) -> str:
    match = re.fullmatch(r"checkpoint-(\w+)", Path(path).name)
    if not match:
        raise ValueError(f"checkpoint directory {path} is not named checkpoint-{{c}}")
    return match.group(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", required=True, nargs="+", help="reference-run checkpoint directories")
    parser.add_argument("--data", required=True, help="normalised training pool (train.jsonl)")
    parser.add_argument("--out", required=True, help="output confidence.parquet")
    parser.add_argument("--histogram-png", required=True)
    parser.add_argument("--histogram-pdf", required=True)
    parser.add_argument("--max-length", type=int, required=True, help="the training max_length (same truncation)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = parser.parse_args(argv)
    flush_denormals()
    setup_logging()

    labels = [checkpoint_label(path) for path in args.checkpoints]
    if len(set(labels)) != len(labels):
        raise ValueError(f"checkpoint labels repeat: {labels}")
    ids, examples, per_checkpoint = None, None, {}
    for label, path in zip(labels, args.checkpoints):
        model, tokenizer = load_for_scoring(path, args.device)
        if examples is None:
            # the checkpoints of one run share a tokenizer: encode once
            ids, examples, dropped = encode_jsonl(tokenizer, args.data, args.max_length)
            if dropped:
                log.warning("%d example(s) have no response token within %d tokens, left out", len(dropped), args.max_length)
        per_checkpoint[label] = perplexities(model, examples, pad_id(tokenizer), args.batch_size)
        log.info("checkpoint %s: mean perplexity %.4f", label, per_checkpoint[label].mean())
        del model
        gc.collect()
    table = confidence_table(ids, per_checkpoint)
    write_parquet(args.out, table)
    plot_confidence_histogram(table, args.histogram_png, args.histogram_pdf)
    log.info("wrote confidence of %d examples to %s", len(table), args.out)


if __name__ == "__main__":
    main()
