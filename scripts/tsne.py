"""t-SNE of mean-pooled response hidden states, coloured by SFTMix's confidence split, one panel per model.

The same seeded sample of the training pool is mapped for every model (reference, NTP, SFTMix, ...), so the panels
compare like with like. Writes the figure as PNG and PDF.
"""

from __future__ import annotations

import argparse
import gc
import logging

import pandas as pd

from sftlab.io import read_jsonl
from sftlab.logs import setup_logging
from sftlab.models.scoring import encode_jsonl, load_for_scoring, pad_id, score_examples
from sftlab.report.tsne import plot_tsne, sample_ids, tsne_embedding
from sftlab.numerics import flush_denormals

log = logging.getLogger("tsne")


def parse_model(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--model expects LABEL=DIR, got {spec!r}")
    return label, path


def true_qualities(path: str, ids: list[str]) -> list[str] | None:
    """The examples' quality from ``source`` = ``demo/{family}/{quality}`` (the demo corpus's ground truth), or None
    for a pool without it."""
    sources = {str(r["id"]): str(r.get("source", "")) for r in read_jsonl(path)}
    parts = [sources.get(i, "").split("/") for i in ids]
    if not parts or any(len(p) != 3 or p[0] != "demo" for p in parts):
        return None
    return [p[2] for p in parts]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, action="append", type=parse_model, help="LABEL=DIR, repeatable")
    parser.add_argument("--data", required=True, help="normalised training pool (train.jsonl)")
    parser.add_argument("--confidence", required=True, help="confidence.parquet (gives the split)")
    parser.add_argument("--png", required=True)
    parser.add_argument("--pdf", required=True)
    parser.add_argument("--sample", type=int, default=2000, help="examples drawn (seeded) from the pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = parser.parse_args(argv)
    flush_denormals()
    setup_logging()

    labels = [label for label, _ in args.model]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--model labels repeat: {labels}")
    table = pd.read_parquet(args.confidence, columns=["id", "split"]).astype({"id": str})
    chosen = set(sample_ids(table["id"].tolist(), args.sample, args.seed))
    hidden = {}
    for label, path in args.model:
        model, tokenizer = load_for_scoring(path, args.device)
        model_ids, examples, _ = encode_jsonl(tokenizer, args.data, args.max_length, keep=chosen)
        features = score_examples(model, examples, pad_id(tokenizer), args.batch_size, pooled_hidden=True)["hidden"]
        hidden[label] = pd.DataFrame(features, index=model_ids)
        del model
        gc.collect()
    # models with different tokenizers can lose different examples to truncation: map only the shared ones
    ids = [i for i in table["id"] if i in chosen and all(i in frame.index for frame in hidden.values())]
    if len(ids) != len(chosen):
        log.warning("%d sampled example(s) missing from %s or without response tokens", len(chosen) - len(ids), args.data)
    splits = table.set_index("id").loc[ids, "split"].to_numpy()
    panels = [(label, tsne_embedding(frame.loc[ids].to_numpy(), args.seed, args.perplexity)) for label, frame in hidden.items()]
    plot_tsne(panels, splits, args.png, args.pdf, qualities=true_qualities(args.data, ids))
    log.info("wrote t-SNE of %d examples for %d model(s) to %s", len(ids), len(panels), args.png)


if __name__ == "__main__":
    main()
