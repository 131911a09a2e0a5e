"""One figure per mechanism table (src/sftlab/report/mechanisms.py), panels in a grid, drawn from the tables' rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from sftlab.report.figures import STYLE, grid, save


HALVES = {"D^c": "D^c (confident half)", "D^u": "D^u (unconfident half)"}


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
            roc_ax.set(title=f"{key[0]} / {key[1]}: confidence vs true quality", xlabel="share of degraded examples above the cut (FPR)",
                       ylabel="share of clean examples above the cut (TPR)")
            roc_ax.legend(frameon=False, loc="lower right", fontsize=7)
            shares = part[part.measure.str.startswith("degraded share in")]
            if len(shares):
                x = np.arange(len(shares))
                bar_ax.bar(x, shares.value, color=["#1f77b4", "#ff7f0e"][: len(shares)], width=0.55,
                           yerr=_err(shares, "value", "ci_low", "ci_high"), capsize=4)
                bar_ax.axhline(shares.chance.iloc[0], ls="--", color="0.3", lw=1, label="pool")
                bar_ax.set_xticks(x, [HALVES.get(m.replace("degraded share in ", ""), m) for m in shares.measure])
                bar_ax.set(title="degraded share of each half (95% Wilson)", ylabel="share degraded", ylim=(0, 1))
                bar_ax.legend(frameon=False)
            else:
                _empty(bar_ax)
        fig.tight_layout()
        return save(fig, stem)


def selection_figure(rows: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Per model × dataset: precision (clean share of the selected k) per fraction (evenly spaced), a point per
    selector side by side with its Wilson interval, a random k's 95% range as a grey bar, the pool's share dashed."""
    pairs = sorted({(r.model, r.dataset) for r in rows.itertuples()})
    with plt.rc_context(STYLE):
        fig, axes = grid(len(pairs), ncols=2, size=(5.2, 3.6))
        if not pairs:
            _empty(axes[0])
        for ax, (model, dataset) in zip(axes, pairs):
            part = rows[(rows.model == model) & (rows.dataset == dataset)]
            fractions = sorted(part.fraction.unique())
            selectors = sorted(part.selector.unique())
            slot = {f: i for i, f in enumerate(fractions)}
            width = 0.8 / max(1, len(selectors))
            for f in fractions:
                band = part[part.fraction == f].iloc[0]
                ax.bar(slot[f], band.random_high - band.random_low, bottom=band.random_low, width=0.9, color="0.88",
                       label="random k, 95% range" if f == fractions[0] else None, zorder=1)
            ax.axhline(part.pool_share.iloc[0], ls="--", color="0.3", lw=1, label="pool", zorder=2)
            for i, selector in enumerate(selectors):
                line = part[part.selector == selector]
                x = [slot[f] - 0.4 + width * (i + 0.5) for f in line.fraction]
                ax.errorbar(x, line.precision, yerr=_err(line, "precision", "ci_low", "ci_high"), fmt="o", ms=5,
                            capsize=2, label=selector, color=f"C{i}", zorder=3)
            ax.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
            ax.set_xlim(-0.6, len(fractions) - 0.4)
            ax.set(title=f"{model} / {dataset}: precision of each selection", xlabel="fraction of the pool selected",
                   ylabel="share clean among the selected", ylim=(0, 1.05))
            ax.legend(frameon=False, fontsize=7, loc="lower left", ncols=2)
        fig.tight_layout()
        return save(fig, stem)


def paired_tradeoff_figure(rows: pd.DataFrame, x: tuple[str, str, str], y: tuple[str, str, str], label: str,
                           xlabel: str, ylabel: str, title: str, stem: str | Path, origin: str = "baseline") -> list[Path]:
    """Per model × dataset × benchmark: each run's paired differences to its baseline, one measure on each axis, with
    both paired intervals as error bars; the baseline is the origin (marked), so a trade-off reads off a quadrant.

    The levels themselves vary far more between items than between runs (a held-out NLL interval over 30 items is
    ±0.9 nats wide), which would hide every difference: only paired differences are drawn. ``x``/``y``: (value, low,
    high) columns; a row without ``y`` is left out, a row without ``x`` sits on x = 0 with no x bar (said in its
    label)."""
    keys = sorted({(r.model, r.dataset, r.benchmark) for r in rows.itertuples() if pd.notna(getattr(r, y[0]))})
    with plt.rc_context(STYLE):
        fig, axes = grid(len(keys), ncols=2, size=(4.8, 3.8))
        if not keys:
            _empty(axes[0])
        for ax, (model, dataset, bench) in zip(axes, keys):
            part = rows[(rows.model == model) & (rows.dataset == dataset) & (rows.benchmark == bench)
                        & rows[y[0]].notna()]
            ax.axhline(0, color="0.5", lw=0.8, ls=":")
            ax.axvline(0, color="0.5", lw=0.8, ls=":")
            ax.plot([0], [0], marker="P", ms=8, color="0.2", ls="none", label=origin, zorder=3)
            for i, row in enumerate(part.itertuples()):
                r = row._asdict()
                has_x = pd.notna(r[x[0]])
                xv = r[x[0]] if has_x else 0.0
                xerr = [[max(0, xv - r[x[1]])], [max(0, r[x[2]] - xv)]] if has_x else None
                ax.errorbar([xv], [r[y[0]]], xerr=xerr, yerr=[[max(0, r[y[0]] - r[y[1]])], [max(0, r[y[2]] - r[y[0]])]],
                            fmt="o", ms=5, capsize=3, color=f"C{i}",
                            label=r[label] if has_x else f"{r[label]} (x not measured)")
            ax.xaxis.set_major_locator(MaxNLocator(5))  # differences of 0.005 print long tick labels
            ax.yaxis.set_major_locator(MaxNLocator(6))
            ax.set(title=f"{model} / {dataset} / {bench}: {title}", xlabel=xlabel, ylabel=ylabel)
            ax.legend(frameon=False, fontsize=7, loc="best")
        fig.tight_layout()
        return save(fig, stem)


def forest_figure(rows: pd.DataFrame, stem: str | Path, xlabel: str) -> list[Path]:
    """Per model × dataset × benchmark: each recipe's paired difference to the baseline (``d_nll`` with ``d_low`` /
    ``d_high``) as a point with its interval, one line per recipe, zero dotted — readable with a dozen recipes."""
    keys = sorted({(r.model, r.dataset, r.benchmark) for r in rows.itertuples()})
    with plt.rc_context(STYLE):
        height = 0.9 + 0.32 * max([1] + [int(((rows.model == m) & (rows.dataset == d) & (rows.benchmark == b)).sum())
                                          for m, d, b in keys])
        fig, axes = grid(len(keys), ncols=2, size=(4.6, height))
        if not keys:
            _empty(axes[0])
        for ax, (model, dataset, bench) in zip(axes, keys):
            part = rows[(rows.model == model) & (rows.dataset == dataset) & (rows.benchmark == bench)]
            y = np.arange(len(part))[::-1]
            measured = part.d_nll.notna().to_numpy()
            ax.errorbar(part.d_nll[measured], y[measured], xerr=_err(part[measured], "d_nll", "d_low", "d_high"),
                        fmt="o", ms=4, capsize=2, color="C0")
            ax.axvline(0, color="0.4", lw=0.8, ls=":")
            labels = [f"{r.recipe} (baseline)" if not m else r.recipe for r, m in zip(part.itertuples(), measured)]
            ax.set_yticks(y, labels)
            ax.set(title=f"{model} / {dataset} / {bench}", xlabel=xlabel)
        fig.tight_layout()
        return save(fig, stem)
