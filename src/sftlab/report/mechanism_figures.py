"""One figure per mechanism table (src/sftlab/report/mechanisms.py), panels in a grid, drawn from the tables' rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sftlab.report.figures import STYLE, grid, save


def _empty(ax, text: str = "no runs (n/a)") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _err(frame: pd.DataFrame, value: str, low: str, high: str):
    return [(frame[value] - frame[low]).clip(lower=0).fillna(0), (frame[high] - frame[value]).clip(lower=0).fillna(0)]


def sftmix_figure(rows: pd.DataFrame, rocs: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]],
                  stem: str | Path) -> list[Path]:
    """Per model × dataset: the ROC curves of confidence (clean = positive) per checkpoint and averaged, and the
    degraded share of D^c and D^u (Wilson intervals) against the pool's."""
    pairs = sorted(rocs)
    with plt.rc_context(STYLE):
        fig, axes = grid(2 * len(pairs), ncols=2, size=(4.2, 3.4))
        if not pairs:
            _empty(axes[0])
        for i, key in enumerate(pairs):
            roc_ax, bar_ax = axes[2 * i], axes[2 * i + 1]
            part = rows[(rows.model == key[0]) & (rows.dataset == key[1])]
            for label, (fpr, tpr) in rocs[key].items():
                hit = part[part.measure.str.endswith(label)]
                auc = f" (AUROC {hit.value.iloc[0]:.2f})" if len(hit) else ""
                roc_ax.plot(fpr, tpr, lw=1.4, label=f"{label}{auc}")
            roc_ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
            roc_ax.set(title=f"{key[0]} / {key[1]}: confidence vs true quality", xlabel="degraded ranked confident",
                       ylabel="clean ranked confident")
            roc_ax.legend(frameon=False, loc="lower right", fontsize=7)
            shares = part[part.measure.str.startswith("degraded share in")]
            if len(shares):
                x = np.arange(len(shares))
                bar_ax.bar(x, shares.value, color=["#1f77b4", "#ff7f0e"][: len(shares)], width=0.55,
                           yerr=_err(shares, "value", "ci_low", "ci_high"), capsize=4)
                bar_ax.axhline(shares.chance.iloc[0], ls="--", color="0.3", lw=1, label="pool")
                bar_ax.set_xticks(x, [m.replace("degraded share in ", "") for m in shares.measure])
                bar_ax.set(title="degraded share of each half (95% Wilson)", ylabel="share degraded", ylim=(0, 1))
                bar_ax.legend(frameon=False)
            else:
                _empty(bar_ax)
        fig.tight_layout()
        return save(fig, stem)


def selection_figure(rows: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Per model × dataset: precision (clean share of the top k) against the fraction selected, a line per
    selector with Wilson intervals, the pool's share (dashed) and a random k's 95% range (band)."""
    pairs = sorted({(r.model, r.dataset) for r in rows.itertuples()})
    with plt.rc_context(STYLE):
        fig, axes = grid(len(pairs), ncols=2, size=(4.6, 3.4))
        if not pairs:
            _empty(axes[0])
        for ax, (model, dataset) in zip(axes, pairs):
            part = rows[(rows.model == model) & (rows.dataset == dataset)].sort_values("fraction")
            band = part.drop_duplicates("fraction")
            ax.fill_between(band.fraction, band.random_low, band.random_high, color="0.85", step="mid",
                            label="random k, 95% range")
            ax.axhline(part.pool_share.iloc[0], ls="--", color="0.3", lw=1, label="pool")
            for i, (selector, line) in enumerate(part.groupby("selector", sort=True)):
                ax.errorbar(line.fraction, line.precision, yerr=_err(line, "precision", "ci_low", "ci_high"),
                            marker="o", ms=4, lw=1.2, capsize=2, label=selector, color=f"C{i}")
            fractions = sorted(part.fraction.unique())
            ax.set_xscale("log")
            ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
            ax.minorticks_off()
            ax.set(title=f"{model} / {dataset}: precision of each selection", xlabel="fraction of the pool selected",
                   ylabel="share clean in the selection", ylim=(0, 1.05))
            ax.legend(frameon=False, fontsize=7, loc="lower right")
        fig.tight_layout()
        return save(fig, stem)


def tradeoff_figure(rows: pd.DataFrame, x: tuple[str, str, str], y: tuple[str, str, str], label: str,
                    xlabel: str, ylabel: str, title: str, stem: str | Path, zero_line: bool = False) -> list[Path]:
    """Per model × dataset × benchmark: a point per run at (x, y) with both intervals as error bars — a trade-off
    such as deviation against held-out loss. ``x``/``y``: (value, low, high) columns; ``label``: the point's name."""
    keys = sorted({(r.model, r.dataset, r.benchmark) for r in rows.itertuples()})
    with plt.rc_context(STYLE):
        fig, axes = grid(len(keys), ncols=2, size=(4.6, 3.6))
        if not keys:
            _empty(axes[0])
        for ax, (model, dataset, bench) in zip(axes, keys):
            part = rows[(rows.model == model) & (rows.dataset == dataset) & (rows.benchmark == bench)]
            for i, row in enumerate(part.itertuples()):
                r = row._asdict()
                ax.errorbar([r[x[0]]], [r[y[0]]], xerr=[[max(0, r[x[0]] - r[x[1]])], [max(0, r[x[2]] - r[x[0]])]],
                            yerr=[[max(0, r[y[0]] - r[y[1]])], [max(0, r[y[2]] - r[y[0]])]], fmt="o", ms=5,
                            capsize=3, color=f"C{i}", label=r[label])
            if zero_line:
                ax.axhline(0, color="0.5", lw=0.8, ls=":")
            ax.set(title=f"{model} / {dataset} / {bench}: {title}", xlabel=xlabel, ylabel=ylabel)
            ax.legend(frameon=False, fontsize=7, loc="best")
        fig.tight_layout()
        return save(fig, stem)
