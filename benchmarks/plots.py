"""PNG plots of a run (matplotlib, from the `bench` extra): time per stage, accuracy per backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.optional import require, warn_once


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plotting")
    matplotlib.use("Agg")  # files only, no display
    return require("matplotlib.pyplot", "plotting")


def try_plot(make: Callable[..., Path], *args: Any, **kwargs: Any) -> str:
    """Make a plot; the file name, or why there is none (said once on stderr too)."""
    try:
        return make(*args, **kwargs).name
    except ImportError as exc:
        warn_once(f"plots skipped: {exc}")
        return f"skipped: {exc}"


def stage_times(stages: Mapping[str, Mapping[str, Mapping[str, float | None]]], path: Path,
                title: str, unit: str = "ms per processed frame") -> Path:
    """Bars of the median ms per stage (whiskers to p95), one group per run label.

    `stages`: run label (a video, a backend) -> stage -> {"median": ms, "p95": ms}.
    """
    plt = _pyplot()
    labels = list(stages)
    names = list(dict.fromkeys(s for per in stages.values() for s in per))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.2))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        xs, med, err = [], [], []
        for i, label in enumerate(labels):
            figure = stages[label].get(name)
            if not figure or figure.get("median") is None:
                continue
            xs.append(i + (k - (len(names) - 1) / 2) * width)
            med.append(figure["median"])
            err.append(max(0.0, (figure.get("p95") or figure["median"]) - figure["median"]))
        ax.bar(xs, med, width, yerr=[[0] * len(err), err], capsize=2, label=name)
    ax.set_xticks(range(len(labels)), [_wrap(label) for label in labels], fontsize=8)
    ax.set_ylabel(f"{unit} (median, whisker to p95)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_bars(rows: Mapping[str, Mapping[str, float | None]], path: Path, title: str,
                  figures: Sequence[str]) -> Path:
    """Grouped bars of rates (0..1), one group per backend, one bar per figure."""
    plt = _pyplot()
    labels = list(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(labels) + 2), 4.2))
    width = 0.8 / max(1, len(figures))
    for k, name in enumerate(figures):
        xs = [i + (k - (len(figures) - 1) / 2) * width for i in range(len(labels))]
        values = [rows[label].get(name) or 0.0 for label in labels]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(range(len(labels)), [_wrap(label) for label in labels], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(label: str, width: int = 18) -> str:
    parts, line = [], ""
    for piece in label.replace("-", "- ").split():
        if len(line) + len(piece) > width and line:
            parts.append(line)
            line = ""
        line += piece if line.endswith("-") or not line else " " + piece
    return "\n".join([*parts, line])
