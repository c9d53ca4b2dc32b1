"""Beat-wise wave delineation from a per-sample segmentation (numpy in, numpy/dicts out).

The segmentation engine labels each sample of a window with one of :data:`edge.ecg.WAVE_CLASSES`
(none, P, QRS, T). For a beat at a known R-peak index this module picks the QRS run around it, the P run before it
and the T run after it, and derives the intervals; :func:`combine_leads` merges the leads of one beat. Sample indices
are window-relative at ``fs_hz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.ecg import INTERNAL_FS_HZ, WAVE_CLASSES

_P, _QRS, _T = (WAVE_CLASSES.index(name) for name in ("P", "QRS", "T"))

#: Shortest plausible run per wave (s); shorter runs are segmentation noise and ignored.
MIN_RUN_S = {"P": 0.02, "QRS": 0.03, "T": 0.04}
#: How far from the R peak the QRS run may lie (s), and how far the P / T runs may lie from the QRS (s).
QRS_SEARCH_S = 0.08
P_SEARCH_S = 0.35
T_SEARCH_S = 0.60
#: Leads agree on a T offset within this distance of their median offset (s): about the spread of T ends between
#: cardiologists on the QT database; a U wave taken for the T lands 100 ms or more away.
T_AGREE_S = 0.02


@dataclass(frozen=True)
class BeatWaves:
    """Wave boundaries of one beat as window sample indices (inclusive on, inclusive off); None when absent."""

    p: tuple[int, int] | None
    qrs: tuple[int, int] | None
    t: tuple[int, int] | None

    @property
    def quality(self) -> str:
        """``good`` (QRS and T found; from several leads, a T they agree on: :func:`combine_leads`), ``partial``
        (QRS but no T), ``poor`` (no QRS at the R peak)."""
        if self.qrs is None:
            return "poor"
        return "good" if self.t is not None else "partial"


def runs(labels: np.ndarray, cls: int, min_len: int = 1) -> np.ndarray:
    """Runs of ``labels == cls`` as an (n, 2) array of inclusive [start, end] indices, at least ``min_len`` long."""
    mask = np.concatenate(([0], (np.asarray(labels) == cls).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(mask))
    out = edges.reshape(-1, 2)
    out[:, 1] -= 1
    return out[(out[:, 1] - out[:, 0] + 1) >= min_len]


def delineate_beat(labels: np.ndarray, r_index: int, fs_hz: float, next_r_index: int | None = None) -> BeatWaves:
    """Wave boundaries of the beat whose R peak is at ``r_index`` in a per-sample label sequence.

    Args:
        labels: (T,) integer class per sample (indices into WAVE_CLASSES).
        r_index: R-peak sample in the window.
        fs_hz: sampling rate of ``labels`` (Hz).
        next_r_index: R peak of the following beat, if known: the T wave must end before its QRS.
    """
    def min_len(name: str) -> int:
        return max(1, int(round(MIN_RUN_S[name] * fs_hz)))

    qrs_runs = runs(labels, _QRS, min_len("QRS"))
    tol = int(round(QRS_SEARCH_S * fs_hz))
    qrs = None
    if len(qrs_runs):
        dist = np.maximum(qrs_runs[:, 0] - r_index, 0) + np.maximum(r_index - qrs_runs[:, 1], 0)
        best = int(np.argmin(dist))
        if dist[best] <= tol:
            qrs = (int(qrs_runs[best, 0]), int(qrs_runs[best, 1]))
    if qrs is None:
        return BeatWaves(None, None, None)
    p_runs = runs(labels, _P, min_len("P"))
    p_cand = p_runs[(p_runs[:, 1] < qrs[0]) & (p_runs[:, 1] >= qrs[0] - int(P_SEARCH_S * fs_hz))]
    p = (int(p_cand[-1, 0]), int(p_cand[-1, 1])) if len(p_cand) else None
    t_runs = runs(labels, _T, min_len("T"))
    limit = qrs[1] + int(T_SEARCH_S * fs_hz)
    t_cand = t_runs[(t_runs[:, 0] > qrs[1]) & (t_runs[:, 0] <= limit)]
    if next_r_index is not None:
        t_cand = t_cand[t_cand[:, 1] < next_r_index - tol]
    t = (int(t_cand[0, 0]), int(t_cand[0, 1])) if len(t_cand) else None
    return BeatWaves(p, qrs, t)


def combine_leads(per_lead: list[BeatWaves], fs_hz: float = INTERNAL_FS_HZ) -> BeatWaves:
    """One set of boundaries from several leads (sample indices at ``fs_hz``, Hz).

    A wave counts as present when at least half of the leads found it; its onset / offset are then the medians over
    the leads that have it. The T wave must also be agreed on: its offset is the end of the QT, and a segmenter that
    takes a U wave, or the second half of a biphasic T, for the T puts it 100 ms or more too late on one lead while
    the other leads see the T end. So the T is kept only when more than half of the leads that found it end it within
    :data:`T_AGREE_S` of their median offset, and its boundaries are the medians over those leads; two leads must
    agree within twice that. A single lead is taken as it is.
    """

    def median(pairs: list[tuple[int, int] | None]) -> tuple[int, int] | None:
        found = [p for p in pairs if p is not None]
        if not found or len(found) * 2 < len(pairs):
            return None
        arr = np.asarray(found)
        return int(np.median(arr[:, 0])), int(np.median(arr[:, 1]))

    found_t = [w.t for w in per_lead if w.t is not None]
    t = None
    if found_t and len(found_t) * 2 >= len(per_lead):
        off = np.asarray(found_t)[:, 1]
        agree = np.abs(off - np.median(off)) <= T_AGREE_S * fs_hz
        if agree.sum() * 2 > len(found_t):
            t = median([pair for pair, ok in zip(found_t, agree, strict=True) if ok])
    return BeatWaves(median([w.p for w in per_lead]), median([w.qrs for w in per_lead]), t)


def intervals_ms(waves: BeatWaves, fs_hz: float, rr_s: float | None) -> dict[str, float | None]:
    """PR, QRS, QT (ms) and QTc by Bazett (QT/√RR) and Fridericia (QT/∛RR) (ms, RR in s); None where undefined.

    PR is measured P onset → QRS onset; QT is QRS onset → T offset (end of the last T sample, hence ``+ 1``).
    """
    ms = 1000.0 / fs_hz
    pr = (waves.qrs[0] - waves.p[0]) * ms if waves.p and waves.qrs else None
    qrs = (waves.qrs[1] - waves.qrs[0] + 1) * ms if waves.qrs else None
    qt = (waves.t[1] - waves.qrs[0] + 1) * ms if waves.t and waves.qrs else None
    ok_rr = rr_s is not None and 0.25 <= rr_s <= 3.0
    return {
        "PR": _r(pr),
        "QRS": _r(qrs),
        "QT": _r(qt),
        "QTc_bazett": _r(qt / np.sqrt(rr_s)) if qt is not None and ok_rr else None,
        "QTc_fridericia": _r(qt / np.cbrt(rr_s)) if qt is not None and ok_rr else None,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)
