"""PNG plots for the offline side: a record with its beats, latency histograms, loss curves, segmentation, confusion,
latency against load.

Every function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no display, no global
state, safe from any thread) and writes a PNG of exactly ``size_px`` pixels (width, height) to ``path``, creating
its folder; it returns the path. matplotlib is imported inside the functions so importing the package stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.ecg import WAVE_CLASSES
from offline.scoring import match_beats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
#: Shading of the wave classes (index = WAVE_CLASSES index; "none" is not drawn).
WAVE_COLORS = {"P": "#4c8dff", "QRS": "#f85149", "T": "#3fb950"}
BEAT_TOLERANCE_S = 0.15  # detection ↔ reference match window (EC57)


def _figure(size_px: tuple[int, int]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_record_beats(
    signal_mv: np.ndarray,
    fs_hz: float,
    leads: Sequence[str],
    beats: Sequence[int] | np.ndarray,
    path: str | Path,
    truth: Sequence[int] | np.ndarray | None = None,
    start_s: float = 0.0,
    window_s: float = 10.0,
    title: str = "",
    size_px: tuple[int, int] = (1600, 900),
) -> Path:
    """A record with its detected beats: ``window_s`` of every lead (up to 12) and the heart rate of the whole record.

    Args:
        signal_mv: samples in mV, ``(n_samples, n_leads)`` (1-D: one lead).
        fs_hz: sampling rate (Hz).
        leads: lead names, one per column.
        beats: detected R peaks, sample indices in the record's sampling.
        path: PNG to write.
        truth: reference beat sample indices (drawn too, and scored within 150 ms), or None.
        start_s, window_s: the stretch drawn sample by sample (s).
        title: figure title (the beat counts are appended).
        size_px: (width, height) of the PNG in pixels.
    """
    signal = np.asarray(signal_mv, dtype=np.float64)
    signal = signal[:, None] if signal.ndim == 1 else signal
    beats = np.asarray(beats, dtype=np.int64)
    shown = min(signal.shape[1], 12)
    lo = int(max(0.0, start_s) * fs_hz)
    hi = min(signal.shape[0], lo + int(window_s * fs_hz))
    t = np.arange(lo, hi) / fs_hz
    fig = _figure(size_px)
    axes = fig.subplots(shown + 1, 1, height_ratios=[1.0] * shown + [1.6], squeeze=False)[:, 0]
    in_window = beats[(beats >= lo) & (beats < hi)]
    ref = None if truth is None else np.asarray(truth, dtype=np.int64)
    for k, ax in enumerate(axes[:shown]):
        ax.plot(t, signal[lo:hi, k], color="#1f6f3f", linewidth=0.8)
        marks = ax.get_xaxis_transform()  # x: time, y: fraction of the axes height
        ax.plot(in_window / fs_hz, np.full(len(in_window), 0.93), "v", color="#d97706", markersize=5,
                transform=marks, label="detected" if k == 0 else None)
        if ref is not None:
            r = ref[(ref >= lo) & (ref < hi)]
            ax.plot(r / fs_hz, np.full(len(r), 0.07), "^", color="#2563eb", markersize=5, transform=marks,
                    label="reference" if k == 0 else None)
        ax.set_ylabel(f"{leads[k]}\nmV", rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlim(lo / fs_hz, max(hi, lo + 1) / fs_hz)
        if k < shown - 1:
            ax.set_xticklabels([])
    axes[shown - 1].set_xlabel("time, s", fontsize=8)
    axes[0].legend(loc="upper right", fontsize=7, ncols=2)
    hr_ax = axes[-1]
    for samples, color, name in ((ref, "#2563eb", "reference"), (beats, "#d97706", "detected")):
        if samples is not None and len(samples) > 1:
            s = np.sort(samples)
            hr_ax.plot(s[1:] / fs_hz, 60.0 * fs_hz / np.diff(s), ".", color=color, markersize=2.5, label=name)
    hr_ax.axvspan(lo / fs_hz, hi / fs_hz, color="#999999", alpha=0.15)
    hr_ax.set_ylabel("HR, bpm", fontsize=8)
    hr_ax.set_xlabel("time, s (whole record; shaded: the stretch above)", fontsize=8)
    hr_ax.tick_params(labelsize=7)
    hr_ax.legend(loc="upper right", fontsize=7)
    summary = f"{len(beats)} beats detected"
    if ref is not None:
        tp, fn, fp = match_beats(ref, beats, BEAT_TOLERANCE_S * fs_hz)
        summary += f", {len(ref)} reference: TP {tp}, FN {fn}, FP {fp}"
    fig.suptitle(f"{title} — {summary}" if title else summary, fontsize=10)
    return _save(fig, path)


def plot_latency_histogram(values_ms: Sequence[float] | np.ndarray, path: str | Path, title: str,
                           size_px: tuple[int, int] = (1000, 600)) -> Path:
    """Histogram of latencies (ms) with p50 / p95 / p99 marked; outliers beyond 3 × p99 are counted, not drawn."""
    values = np.asarray(values_ms, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig = _figure(size_px)
    ax = fig.subplots()
    if values.size:
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        cap = max(3.0 * p99, 1e-9)
        ax.hist(np.clip(values, None, cap), bins=60, color="#4c8dff")
        for q, v, style in (("p50", p50, "-"), ("p95", p95, "--"), ("p99", p99, ":")):
            ax.axvline(v, color="#111111", linestyle=style, linewidth=1.2, label=f"{q} {v:.3g} ms")
        beyond = int((values > cap).sum())
        ax.legend(title=f"n = {values.size}" + (f", {beyond} > {cap:.3g} ms in last bin" if beyond else ""))
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("count")
    ax.set_title(title)
    return _save(fig, path)


def plot_scaling(series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[bool]]], path: str | Path,
                 bound: float, title: str, xlabel: str = "devices", ylabel: str = "p99 latency, ms",
                 size_px: tuple[int, int] = (1000, 600)) -> Path:
    """One line per series (``name -> (x, y, passed)``) of a value against load, with the pass bound drawn; points
    that failed their step are hollow. y is drawn on a log axis (a backlog grows by orders of magnitude)."""
    fig = _figure(size_px)
    ax = fig.subplots()
    for name, (x, y, passed) in series.items():
        x_arr, y_arr, ok = np.asarray(x, float), np.asarray(y, float), np.asarray(passed, bool)
        (line,) = ax.plot(x_arr, y_arr, marker="o", linestyle="-", label=name)
        ax.scatter(x_arr[~ok], y_arr[~ok], s=80, facecolors="white", edgecolors=line.get_color(), zorder=3)
    ax.axhline(bound, color="#f85149", linestyle="--", linewidth=1.2, label=f"bound {bound:g}")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title="hollow: step failed")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_error_boxes(panels: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str,
                     limit: float = 150.0, size_px: tuple[int, int] = (1200, 600)) -> Path:
    """One panel per group (``panel -> {name: errors}``), a box per name (median, quartiles, 5-95 % whiskers) of
    the errors within ±``limit`` (the match window; the count beyond is in the label), zero marked."""
    fig = _figure(size_px)
    axes = fig.subplots(1, max(1, len(panels)), sharey=True, squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items(), strict=False):
        data, labels = [], []
        for name, values in series.items():
            v = np.asarray(values, dtype=np.float64)
            v = v[np.isfinite(v)]
            inside = v[np.abs(v) <= limit]
            data.append(inside if inside.size else np.array([np.nan]))
            labels.append(f"{name}\nn={inside.size}" + (f" (+{v.size - inside.size})" if v.size > inside.size else ""))
        ax.boxplot(data, whis=(5, 95), showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.axhline(0.0, color="#111111", linewidth=0.8)
        ax.set_title(panel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("error (published − reference), ms")
    fig.suptitle(title)
    return _save(fig, path)


def plot_loss_curves(history: Mapping[str, Sequence[float]], path: str | Path, title: str = "training",
                     size_px: tuple[int, int] = (1000, 600)) -> Path:
    """Curves per epoch: series whose name contains ``loss`` on the left panel, any others (metrics) on the right.

    Args:
        history: series name → one value per epoch (epoch 1 first); NaN values are gaps.
    """
    losses = {k: v for k, v in history.items() if "loss" in k.lower()}
    metrics = {k: v for k, v in history.items() if "loss" not in k.lower()}
    groups = [(g, name) for g, name in ((losses, "loss"), (metrics, "metric")) if g]
    fig = _figure(size_px)
    axes = fig.subplots(1, max(1, len(groups)), squeeze=False)[0]
    for ax, (group, name) in zip(axes, groups, strict=False):
        for key, values in group.items():
            y = np.asarray(values, dtype=np.float64)
            ax.plot(np.arange(1, len(y) + 1), y, marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_segmentation(signal: np.ndarray, fs: float, true_mask: np.ndarray, pred_mask: np.ndarray, path: str | Path,
                      title: str = "", size_px: tuple[int, int] = (1600, 600)) -> Path:
    """One lead with its reference (top) and predicted (bottom) waves shaded.

    Args:
        signal: one lead in mV, ``(n,)``.
        fs: sampling rate of ``signal`` and the masks (Hz).
        true_mask, pred_mask: per-sample class indices into :data:`edge.ecg.WAVE_CLASSES` (``(n,)``); negative
            reference values mark unannotated samples (drawn grey).
    """
    x = np.asarray(signal, dtype=np.float64).ravel()
    t = np.arange(x.size) / fs
    fig = _figure(size_px)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, mask, name in ((axes[0], true_mask, "reference"), (axes[1], pred_mask, "predicted")):
        mask = np.asarray(mask).ravel()
        ax.plot(t, x, color="#111111", linewidth=0.8)
        for cls, wave in enumerate(WAVE_CLASSES):
            if wave in WAVE_COLORS:
                _shade(ax, mask == cls, fs, WAVE_COLORS[wave], wave)
        _shade(ax, mask < 0, fs, "#999999", "not annotated")
        ax.set_ylabel(f"{name}\nmV")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8, ncols=4)
    axes[1].set_xlabel("time, s")
    axes[0].set_xlim(0, max(t[-1] if t.size else 0.0, 1.0 / fs))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _shade(ax: object, on: np.ndarray, fs: float, color: str, label: str) -> None:
    """Shade the runs of ``on`` (per-sample booleans) as vertical spans; each run covers [start, end + 1) / fs."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(start / fs, stop / fs, color=color, alpha=0.25, linewidth=0, label=label)


def plot_confusion(summary: np.ndarray | Sequence, class_names: Sequence[str], path: str | Path,
                   title: str = "confusion", size_px: tuple[int, int] = (900, 800)) -> Path:
    """A confusion summary as a heatmap with counts.

    Args:
        summary: either a multiclass matrix ``(C, C)`` (rows: reference class, columns: predicted class), drawn
            with each row normalised to the share of its reference class; or a multilabel summary ``(C, 2, 2)`` —
            per class ``[[TN, FP], [FN, TP]]`` (scikit-learn's ``multilabel_confusion_matrix`` layout) — drawn as
            one row per class with sensitivity and precision.
        class_names: one name per class.
    """
    counts = np.asarray(summary, dtype=np.float64)
    fig = _figure(size_px)
    ax = fig.subplots()
    if counts.ndim == 2 and counts.shape[0] == counts.shape[1] == len(class_names):
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i, j in np.ndindex(counts.shape):
            ax.text(j, i, f"{counts[i, j]:.0f}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        fig.colorbar(image, ax=ax, label="share of the reference class")
    elif counts.shape == (len(class_names), 2, 2):
        tn, fp, fn, tp = counts[:, 0, 0], counts[:, 0, 1], counts[:, 1, 0], counts[:, 1, 1]
        cells = np.stack([tp, fn, fp, tn], axis=1)
        sens, prec = tp / np.maximum(tp + fn, 1.0), tp / np.maximum(tp + fp, 1.0)
        share = cells / np.maximum(cells.sum(axis=1, keepdims=True), 1.0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for i, j in np.ndindex(cells.shape):
            ax.text(j, i, f"{cells[i, j]:.0f}", ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(4), ["TP", "FN", "FP", "TN"])
        ax.set_yticks(range(len(class_names)),
                      [f"{n}  (Se {s:.2f}, P+ {p:.2f})" for n, s, p in zip(class_names, sens, prec, strict=True)])
    else:
        raise ValueError(f"confusion summary of shape {counts.shape} is neither (C, C) nor (C, 2, 2) "
                         f"for C = {len(class_names)} classes")
    ax.set_title(title)
    return _save(fig, path)
