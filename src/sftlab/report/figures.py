"""Figures in one consistent style, saved as PNG and PDF."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {"figure.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 9, "legend.fontsize": 8}


def grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.0, 3.2)):
    """(fig, flat list of n axes) in rows of at most ``ncols``; the grid's unused axes are removed."""
    n = max(1, n)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def save(fig, stem: str | Path | None = None, *, png: str | Path | None = None, pdf: str | Path | None = None,
         dpi: float | None = None) -> list[Path]:
    """Write ``fig`` as PNG and PDF, each atomically, to ``stem``.png and ``stem``.pdf (or to the paths ``png`` and
    ``pdf``), at ``dpi`` (default: the figure's), and close it."""
    from sftlab.io import atomic_path

    # the stem is appended to, not given a suffix: a stem holding a dot (a model named Llama-3.1-8B) keeps it
    out = [Path(png) if png is not None else Path(f"{stem}.png"),
           Path(pdf) if pdf is not None else Path(f"{stem}.pdf")]
    for path, fmt in zip(out, ("png", "pdf")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", **({"dpi": dpi} if dpi is not None else {}))
    plt.close(fig)
    return out


def loss_curves(logs: dict[str, pd.DataFrame], stem: str | Path, title: str = "Training loss") -> list[Path]:
    """One line per run (label → train_log.csv frame): training loss, and held-out loss where logged."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=False)
        for label, frame in sorted(logs.items()):
            train = frame.dropna(subset=["loss"]) if "loss" in frame else frame.iloc[0:0]
            line, = axes[0].plot(train["step"], train["loss"], label=label, lw=1.2)
            if "eval_loss" in frame:
                ev = frame.dropna(subset=["eval_loss"])
                axes[1].plot(ev["step"], ev["eval_loss"], marker="o", ms=3, lw=1.2, color=line.get_color(), label=label)
        axes[0].set(title=title, xlabel="step", ylabel="loss (response tokens)")
        axes[1].set(title="Held-out loss", xlabel="step", ylabel="loss")
        axes[0].legend(loc="upper right", frameon=False)
        fig.tight_layout()
        return save(fig, stem)


def score_spread(scores: pd.DataFrame, runs: list[tuple[str, str, str]], benchmarks: list[str],
                 seeds: dict[str, tuple[str, int]], stem: str | Path) -> list[Path]:
    """One panel per benchmark: a dot per run (per seed) for each recipe, the mean as a bar — the spread over seeds."""
    index = {(r.model, r.dataset, r.recipe, r.benchmark): r.value for r in scores.itertuples()}
    labels: dict[str, list[tuple[str, str, str]]] = {}
    multi = len({(m, d) for m, d, _ in runs}) > 1
    for model, dataset, recipe in runs:
        base = seeds.get(recipe, (recipe, None))[0]
        labels.setdefault(f"{model}/{dataset}/{base}" if multi else base, []).append((model, dataset, recipe))
    names = list(labels)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, max(1, len(benchmarks)), figsize=(max(3.5, 0.45 * len(names) + 1.5) *
                                                                      max(1, len(benchmarks)), 3.4), squeeze=False)
        for ax, bench in zip(axes[0], benchmarks or [""]):
            for x, name in enumerate(names):
                values = [index.get((*key, bench)) for key in labels[name]]
                values = [v for v in values if v is not None]
                if values:
                    ax.bar(x, sum(values) / len(values), color="0.85", width=0.6)
                    ax.scatter([x] * len(values), values, s=14, color="C0", zorder=3)
                else:
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set(title=bench, ylabel="score (dots: seeds; bar: mean)")
        fig.tight_layout()
        return save(fig, stem)
