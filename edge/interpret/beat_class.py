"""The decision rule of beat classification (one class per beat from its class probabilities and the manifest's
per-class thresholds, then the dominant-beat veto on V, then the noise gate of :mod:`edge.interpret.beat_noise`: an
unreadable beat is Q) and the names of the per-beat features a classifier can take. The edge (every published beat)
and training / the bench (features, threshold tuning, evaluation) both use it.

**Dominant-beat veto** (:func:`veto_ventricular`): a ventricular beat is one whose QRS differs from the patient's
usual one. A beat the classifier calls V whose QRS span matches the dominant template of
:mod:`edge.interpret.beat_morphology` (``qrs_corr`` >= :data:`VETO_QRS_CORR`, ``qrs_diff`` <= :data:`VETO_QRS_DIFF`,
``|qrs_amp_log2|`` <= :data:`VETO_AMP_LOG2`) takes the best other class instead, unless V calls are common lately (at
least :data:`VETO_V_SHARE` of the classifier's :data:`VETO_RECENT` calls before it: then the dominant beat may itself
be ventricular, as in bigeminy) or the classifier's previous call was V (a run goes on: the veto broke a VT run on
MIT-BIH 223 and delayed its alarm by 2.3 s). The V threshold below 1 favours weak V probabilities; on MIT-BIH 232 that
called 74 premature S beats followed by a pause V although their QRS is the dominant one (median ``qrs_corr`` 0.98).
Chosen on DS1 only, reference R peaks (docs/method.md, "Dominant-beat veto"): 74 false V fewer, 3 true V lost.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge.interpret.beat_morphology import MORPHOLOGY_NAMES, NEUTRAL, morphology_features
from edge.interpret.beat_noise import UNREADABLE_CLASS, unreadable_beats
from edge.interpret.rr_features import FEATURE_NAMES, rr_features


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(n, C)`` probabilities and ``(C,)`` thresholds → ``(n,)`` class indices, ``argmax(p / threshold)``: a class
    the model under-calls can be favoured by a threshold below 1 (all 1: plain argmax)."""
    p = np.asarray(probabilities, dtype=float)
    t = np.maximum(np.asarray(thresholds, dtype=float), 1e-6)
    return np.argmax(p / t[None, :], axis=-1)


#: The veto's match with the dominant template: least QRS correlation, largest RMS difference (of the template's
#: peak-to-peak), largest |log2 amplitude ratio|.
VETO_QRS_CORR = 0.97
VETO_QRS_DIFF = 0.10
VETO_AMP_LOG2 = 0.5
#: The veto holds while fewer than this share of the classifier's last :data:`VETO_RECENT` calls were V.
VETO_V_SHARE = 0.3
VETO_RECENT = 32


def matches_dominant(morphology: np.ndarray) -> np.ndarray:
    """``(k, len(MORPHOLOGY_NAMES))`` morphology features → ``(k,)`` bool: the beat's QRS is the dominant beat's (a
    beat without a template to compare with, :data:`~edge.interpret.beat_morphology.NEUTRAL`, matches nothing)."""
    m = np.atleast_2d(np.asarray(morphology, dtype=float))
    corr, amp, diff = (m[:, MORPHOLOGY_NAMES.index(n)] for n in ("qrs_corr", "qrs_amp_log2", "qrs_diff"))
    neutral = np.all(m == NEUTRAL[None, :], axis=1)
    return (corr >= VETO_QRS_CORR) & (diff <= VETO_QRS_DIFF) & (np.abs(amp) <= VETO_AMP_LOG2) & ~neutral


class RecentVCalls:
    """The classifier's last :data:`VETO_RECENT` calls of a stream: ``push(called_v) -> (share, after_v)``, the share
    of V among the calls before this one (0 for the first) and whether the one just before was V. One per detector
    run (a new run starts a new one, as it starts a new dominant-beat tracker)."""

    def __init__(self) -> None:
        self._calls: deque[bool] = deque(maxlen=VETO_RECENT)

    def push(self, called_v: bool) -> tuple[float, bool]:
        share = sum(self._calls) / len(self._calls) if self._calls else 0.0
        after_v = bool(self._calls) and self._calls[-1]
        self._calls.append(bool(called_v))
        return share, after_v


def veto_beat(k: int, probabilities: np.ndarray, thresholds: np.ndarray, morphology: np.ndarray,
              recent: tuple[float, bool], v: int) -> int:
    """The dominant-beat veto (module docstring) on one beat: its class index ``k`` from :func:`decide`, its ``(C,)``
    probabilities, the thresholds, its ``(5,)`` morphology features, what :meth:`RecentVCalls.push` said of the calls
    before it and the index of V → its class index."""
    share, after_v = recent
    if k != v or share >= VETO_V_SHARE or after_v or not matches_dominant(morphology)[0]:
        return k
    p = np.array(probabilities, dtype=float).reshape(1, -1)
    p[0, v] = 0.0
    return int(decide(p, thresholds)[0])


def veto_ventricular(classes: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray,
                     morphology: np.ndarray, class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """:func:`veto_beat` on a whole series of beats in order, as the edge runs it beat by beat: ``(n,)`` class
    indices from :func:`decide`, their ``(n, C)`` probabilities, the thresholds and the ``(n, 5)`` morphology
    features → ``(n,)`` class indices."""
    out = np.array(classes, dtype=np.int64)
    if "V" not in class_names:
        return out
    v = list(class_names).index("V")
    recent = RecentVCalls()
    for i, k in enumerate(out):
        out[i] = veto_beat(int(k), probabilities[i], thresholds, morphology[i], recent.push(k == v), v)
    return out


def gate_classes(classes: np.ndarray, unreadable: np.ndarray, class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """``(n,)`` class indices (:func:`decide`) with every unreadable beat (``(n,)`` bool,
    :mod:`edge.interpret.beat_noise`) set to :data:`~edge.interpret.beat_noise.UNREADABLE_CLASS`; unchanged when
    the classifier has no such class."""
    out = np.array(classes, dtype=np.int64)
    if UNREADABLE_CLASS in class_names:
        out[np.asarray(unreadable, dtype=bool)] = list(class_names).index(UNREADABLE_CLASS)
    return out


#: Every per-beat feature the edge can give a beat classifier, by name: the RR context
#: (:mod:`edge.interpret.rr_features`), then the morphology against the patient's dominant beat
#: (:mod:`edge.interpret.beat_morphology`). An engine's manifest ``feature_names`` picks its columns from these.
BEAT_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + MORPHOLOGY_NAMES


def feature_columns(names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Indices into :data:`BEAT_FEATURE_NAMES` of an engine's ``feature_names``, in its order.

    Raises:
        ValueError: a name the edge does not compute.
    """
    unknown = [n for n in names if n not in BEAT_FEATURE_NAMES]
    if unknown:
        raise ValueError(f"the edge computes no beat feature named {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(BEAT_FEATURE_NAMES)}")
    return np.array([BEAT_FEATURE_NAMES.index(n) for n in names], dtype=np.int64)


def beat_features(r_times_s: np.ndarray, signal_mv: np.ndarray, r_samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """Every feature of :data:`BEAT_FEATURE_NAMES` for a whole series of beats, with the code the edge runs live.

    Args:
        r_times_s: ``(k,)`` R times (s), strictly increasing (the RR context).
        signal_mv: ``(n,)`` the classifier's lead (mV) at ``fs_hz`` (the morphology).
        r_samples: ``(k,)`` the same R peaks as samples of ``signal_mv``.
        fs_hz: rate of ``signal_mv`` (Hz).

    Returns:
        ``(k, len(BEAT_FEATURE_NAMES))`` float64.
    """
    morph = morphology_features(signal_mv, r_samples, fs_hz)
    return np.concatenate([rr_features(r_times_s), morph], axis=1)


def beat_unreadable(r_times_s: np.ndarray, leads_mv: np.ndarray, r_samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """The noise gate of a whole series of beats, with the code the edge runs live (its ``local_rr_s`` from
    :func:`~edge.interpret.rr_features.rr_features`, as :func:`beat_features` has it).

    Args:
        r_times_s: ``(k,)`` R times (s), strictly increasing.
        leads_mv: ``(n, L)`` the gate's leads (mV) at ``fs_hz``: the two the edge segments (MIT-BIH: both),
            the classifier's lead first.
        r_samples: ``(k,)`` the same R peaks as samples of ``leads_mv``.
        fs_hz: rate of ``leads_mv`` (Hz).

    Returns:
        ``(k,)`` bool, True for an unreadable beat (class Q through :func:`gate_classes`).
    """
    local_rr = rr_features(r_times_s)[:, FEATURE_NAMES.index("local_rr_s")]
    return unreadable_beats(leads_mv, r_samples, local_rr, fs_hz)
