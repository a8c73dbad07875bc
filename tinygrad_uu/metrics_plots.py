"""Figures of a classification competition: ROC curves and a leaderboard.

Each function draws with matplotlib's Agg canvas (no pyplot, no display), writes the
PNG atomically and returns its path. The numbers come from ``tinygrad_uu.metrics``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics
from .viz.common import _figure, _save


def plot_roc(curves: dict, path, title: str = "ROC") -> Path:
    """ROC curves, one per entry of ``curves``: ``{name: (scores, labels)}`` or
    ``{name: (scores, labels, interval)}`` with ``interval`` a ``bootstrap_auc`` result.
    The legend gives each AUC (and its interval); the diagonal is a coin toss."""
    if not curves:
        raise ValueError("plot_roc: no curves to draw")
    fig = _figure(5, 5)
    ax = fig.subplots()
    for name, entry in curves.items():
        scores, labels = entry[0], entry[1]
        fpr, tpr, _ = metrics.roc_curve(scores, labels)
        label = f"{name}: AUC {metrics.roc_auc(scores, labels):.3f}"
        if len(entry) > 2 and entry[2] is not None:
            ci = entry[2]
            label += f" [{ci['low']:.3f}, {ci['high']:.3f}]"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="true positive rate", title=title, aspect="equal")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_leaderboard(rows: list, path, title: str = "leaderboard") -> Path:
    """Each model side by side: AUC with its interval (error bar), and beside it its
    parameter count and training seconds. ``rows``: dicts with ``name``, ``auc``,
    ``low``, ``high``, ``parameters``, ``train_seconds`` (``auc`` may be None where the
    test labels are unknown)."""
    if not rows:
        raise ValueError("plot_leaderboard: no rows to draw")
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig = _figure(4 + 2.2 * len(rows), 3.8)
    axes = fig.subplots(1, 3)
    aucs = np.array([np.nan if r.get("auc") is None else r["auc"] for r in rows], float)
    lows = np.array([np.nan if r.get("low") is None else r["low"] for r in rows], float)
    highs = np.array([np.nan if r.get("high") is None else r["high"] for r in rows], float)
    axes[0].bar(x, aucs, color="tab:blue", alpha=0.8)
    axes[0].errorbar(x, aucs, yerr=[aucs - lows, highs - aucs], fmt="none", color="black",
                     capsize=6)
    for xi, a in zip(x, aucs):
        if np.isfinite(a):
            axes[0].text(xi, 0.505, f"{a:.3f}", ha="center", va="bottom", color="white")
    finite = np.r_[lows[np.isfinite(lows)], aucs[np.isfinite(aucs)]]
    axes[0].set_ylim(min(0.5, finite.min() - 0.02) if finite.size else 0.5, 1.0)
    axes[0].set(title="test ROC AUC (95% CI by image)", ylabel="AUC")
    for ax, key, what in ((axes[1], "parameters", "parameters"),
                          (axes[2], "train_seconds", "training seconds")):
        values = [r[key] for r in rows]
        ax.bar(x, values, color="tab:grey")
        for xi, v in zip(x, values):
            ax.text(xi, v, f"{v:,.0f}", ha="center", va="bottom")
        ax.set(title=what)
    for ax in axes:
        ax.set_xticks(x, names)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def leaderboard_markdown(rows: list, title: str = "Leaderboard") -> str:
    """The same rows as a Markdown table, best AUC first."""
    ranked = sorted(rows, key=lambda r: -1 if r.get("auc") is None else -r["auc"])
    lines = [f"# {title}", "",
             "| rank | model | test AUC | 95% CI (by image) | accuracy at 0.5 | parameters "
             "| training s |", "|---|---|---|---|---|---|---|"]
    for rank, r in enumerate(ranked, 1):
        auc = "n/a" if r.get("auc") is None else f"{r['auc']:.4f}"
        ci = "n/a" if r.get("low") is None else f"[{r['low']:.4f}, {r['high']:.4f}]"
        acc = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
        lines.append(f"| {rank} | {r['name']} | {auc} | {ci} | {acc} | {r['parameters']:,} "
                     f"| {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"
