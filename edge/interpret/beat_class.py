"""The decision rule of beat classification (one class per beat from its class probabilities and the manifest's
per-class thresholds, then the noise gate of :mod:`edge.interpret.beat_noise`: an unreadable beat is Q) and the names
of the per-beat features a classifier can take. The edge (every published beat) and training / the bench (features,
threshold tuning, evaluation) both use it."""

from __future__ import annotations

import numpy as np

from edge.interpret.beat_morphology import MORPHOLOGY_NAMES, morphology_features
from edge.interpret.beat_noise import UNREADABLE_CLASS, unreadable_beats
from edge.interpret.rr_features import FEATURE_NAMES, rr_features


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(n, C)`` probabilities and ``(C,)`` thresholds → ``(n,)`` class indices, ``argmax(p / threshold)``: a class
    the model under-calls can be favoured by a threshold below 1 (all 1: plain argmax)."""
    p = np.asarray(probabilities, dtype=float)
    t = np.maximum(np.asarray(thresholds, dtype=float), 1e-6)
    return np.argmax(p / t[None, :], axis=-1)


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
