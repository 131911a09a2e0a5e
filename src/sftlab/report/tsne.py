"""SFTMix's figures: t-SNE maps of mean-pooled response hidden states coloured by confidence split,
and the histogram of confidence scores. Each figure is written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


#: colours of the paper's figure: confident in blue, unconfident in orange
SPLIT_COLOURS = {"confident": "#1f77b4", "unconfident": "#ff7f0e"}


def sample_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` ids (all of them if fewer), in pool order, so every model maps the same examples."""
    ids = list(ids)
    if n >= len(ids):
        return ids
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in keep]


def tsne_embedding(features: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """(N, 2) t-SNE of ``features`` (N, H); perplexity is capped at (N − 1)/3 so that small samples work."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 examples, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(features, dtype=np.float32)
    )


#: colours of the true quality of the demo corpus (clean and its three degradations)
QUALITY_COLOURS = {"clean": "#2ca02c", "wrong": "#d62728", "truncated": "#9467bd", "off_topic": "#8c564b"}


def plot_tsne(panels: Sequence[tuple[str, np.ndarray]], splits: Sequence[str], png: str | Path, pdf: str | Path,
              qualities: Sequence[str] | None = None) -> None:
    """One panel per model (title, (N, 2) embedding), the same N examples in each, coloured by ``splits``; with
    ``qualities`` (the examples' true quality) a second row of the same maps coloured by it."""
    from sftlab.report.figures import plt, save

    rows = [("split", np.asarray(splits), SPLIT_COLOURS)]
    if qualities is not None:
        rows.append(("true quality", np.asarray(qualities), QUALITY_COLOURS))
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.6 * len(panels), 3.6 * len(rows)), squeeze=False)
    for row, (what, labels, colours) in zip(axes, rows):
        for ax, (title, embedding) in zip(row, panels):
            for label, colour in colours.items():
                points = embedding[labels == label]
                if len(points):
                    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, c=colour, linewidths=0, label=label)
            ax.set_title(f"{title}: {what}" if qualities is not None else title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].legend(loc="best", fontsize=8, markerscale=3, frameon=False)
    fig.tight_layout()
    save(fig, png=png, pdf=pdf, dpi=200)


def plot_confidence_histogram(table: pd.DataFrame, png: str | Path, pdf: str | Path, bins: int = 50) -> None:
    """Histogram of ``confidence`` (= −mean perplexity) per split, with the median split marked."""
    from sftlab.report.figures import plt, save

    for column in ("confidence", "split"):
        if column not in table:
            raise KeyError(f"confidence table has no {column!r} column")
    edges = np.histogram_bin_edges(table["confidence"], bins=bins)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for split, colour in SPLIT_COLOURS.items():
        ax.hist(table.loc[table["split"] == split, "confidence"], bins=edges, color=colour, alpha=0.8, label=split)
    ax.axvline(float(table["confidence"].median()), color="black", linewidth=0.8, linestyle="--", label="median")
    ax.set_xlabel("confidence (− mean perplexity over checkpoints)")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save(fig, png=png, pdf=pdf, dpi=200)
