"""Morphology of each heartbeat relative to the patient's own dominant beat, the evidence that carries across patients.

A beat classifier trained on a few dozen patients learns their QRS shapes; a new patient's normal beat can look like
someone else's PVC. What does carry across patients is how a beat compares with **this patient's** usual beat: a
ventricular beat differs in shape from it, a supraventricular one keeps the QRS and differs in timing and P wave.

:class:`DominantBeat` keeps a few running beat templates (a streaming clustering, in beat order) and describes each
beat against the dominant one (the template matched most often lately). The spans are cut around the R peak:

- QRS span ``[R - QRS_SPAN_S[0], R + QRS_SPAN_S[1])``, P span ``[R - P_SPAN_S[0], R - P_SPAN_S[1])`` (s);
- each span is detrended by the line through the means of its first and last :data:`EDGE_SAMPLES` samples (baseline
  wander across a few hundred ms is close to linear).

Features (:data:`MORPHOLOGY_NAMES`, all dimensionless):

- ``qrs_corr``: Pearson correlation of the beat's QRS span with the dominant template's;
- ``qrs_amp_log2``: ``log2`` of the ratio of their peak-to-peak amplitudes;
- ``qrs_diff``: RMS of (beat − template) over the template's peak-to-peak, on the QRS span;
- ``p_corr``: Pearson correlation of the P spans (an ectopic atrial beat changes or hides the P wave);
- ``dominant_share``: the dominant template's share of the templates' (decayed) counts, how uniform the patient's
  beats are lately.

Template rule: a beat joins the template whose QRS span it correlates best with when that correlation is at least
:data:`JOIN_CORR` and the amplitude ratio within ``2 ** ±JOIN_AMP_LOG2``; the template then moves towards it by
``1 / min(n, AVERAGE_BEATS)``. Otherwise it starts a new template (replacing the least used one when
:data:`MAX_TEMPLATES` exist). Every count decays by ``DECAY`` per beat. The dominant template changes only when
another's count exceeds it by :data:`SWITCH_RATIO`. A beat's features compare it with the dominant template as it
was **before** the beat (the first beat, with no template yet, gets :data:`NEUTRAL`).

Training (:func:`morphology_features`, a whole record) and the edge (:class:`DominantBeat`, live) run the same
object beat by beat, so they agree exactly.
"""

from __future__ import annotations

import numpy as np

#: Names of the feature columns, in order.
MORPHOLOGY_NAMES: tuple[str, ...] = ("qrs_corr", "qrs_amp_log2", "qrs_diff", "p_corr", "dominant_share")
#: QRS span (s before, s after the R peak).
QRS_SPAN_S = (0.10, 0.15)
#: P span (s before the R peak: from, to).
P_SPAN_S = (0.30, 0.10)
#: Samples averaged at each end of a span for its baseline line.
EDGE_SAMPLES = 3
#: Templates kept at most.
MAX_TEMPLATES = 4
#: Least QRS correlation for a beat to join a template.
JOIN_CORR = 0.85
#: Largest |log2 amplitude ratio| for a beat to join a template.
JOIN_AMP_LOG2 = 0.6
#: Beats a template averages over at most (its update weight is 1 / min(n, AVERAGE_BEATS)).
AVERAGE_BEATS = 16
#: Per-beat decay of template counts.
DECAY = 1.0 / 256.0
#: A template becomes dominant when its count exceeds the dominant one's by this factor.
SWITCH_RATIO = 1.5
#: Features of a beat with no template to compare with (it is its own template).
NEUTRAL = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=np.float64)


def _detrend(x: np.ndarray) -> np.ndarray:
    """``x`` minus the line through the means of its first and last :data:`EDGE_SAMPLES` samples."""
    a, b = x[:EDGE_SAMPLES].mean(), x[-EDGE_SAMPLES:].mean()
    return x - (a + (b - a) * np.linspace(0.0, 1.0, x.size))


def _corr_rows(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``(k, n)`` with ``(n,)`` (0 where either is constant)."""
    r = rows - rows.mean(axis=1, keepdims=True)
    v = x - x.mean()
    den = np.sqrt((r * r).sum(axis=1) * (v @ v))
    return np.divide(r @ v, den, out=np.zeros(len(rows)), where=den > 0)


class DominantBeat:
    """Streaming beat templates of one lead; :meth:`push` one beat span at a time, in beat order.

    Args:
        fs_hz: sampling rate of the spans (Hz).
    """

    def __init__(self, fs_hz: float) -> None:
        self.fs_hz = fs_hz
        self.before = int(round(P_SPAN_S[0] * fs_hz))
        self.after = int(round(QRS_SPAN_S[1] * fs_hz))
        self._qrs = slice(self.before - int(round(QRS_SPAN_S[0] * fs_hz)), self.before + self.after)
        self._p = slice(0, self.before - int(round(P_SPAN_S[1] * fs_hz)))
        self.reset()

    @property
    def span(self) -> tuple[int, int]:
        """Samples before and after the R peak a beat's span holds: push ``signal[r - before : r + after]``."""
        return self.before, self.after

    def reset(self) -> None:
        """Forget every template (a new patient or a restarted stream)."""
        n = self.before + self.after
        self.templates = np.zeros((0, n))  # (k, before + after) beat shapes, each span detrended
        self.counts = np.zeros(0)  # decayed number of beats each template matched
        self.members = np.zeros(0, dtype=np.int64)  # beats each template has averaged
        self.dominant = -1

    def __repr__(self) -> str:
        counts = ", ".join(f"{c:.1f}" for c in self.counts)
        return f"DominantBeat(fs_hz={self.fs_hz}, templates=[{counts}], dominant={self.dominant})"

    def _shape(self, span: np.ndarray) -> np.ndarray:
        out = np.empty(span.size, dtype=np.float64)
        out[self._p] = _detrend(span[self._p])
        out[self._qrs] = _detrend(span[self._qrs])
        return out

    def push(self, span_mv: np.ndarray) -> np.ndarray:
        """One beat's span (``(before + after,)`` mV around its R peak, see :attr:`span`) -> its
        ``(len(MORPHOLOGY_NAMES),)`` float64 features against the dominant template; then the templates learn it."""
        span = np.asarray(span_mv, dtype=np.float64)
        if span.size != self.before + self.after:
            raise ValueError(f"a beat span must hold {self.before + self.after} samples, got {span.size}")
        x = self._shape(span)
        q = x[self._qrs]
        ptp = max(float(np.ptp(q)), 1e-6)
        if not len(self.templates):
            self._add(x)
            return NEUTRAL.copy()
        tq = self.templates[:, self._qrs]
        t_ptp = np.maximum(np.ptp(tq, axis=1), 1e-6)
        corr = _corr_rows(tq, q)
        amp = np.log2(ptp / t_ptp)
        d = self.dominant
        feats = np.array([
            corr[d], amp[d], float(np.sqrt(np.mean((q - tq[d]) ** 2))) / t_ptp[d],
            _corr_rows(self.templates[d : d + 1, self._p], x[self._p])[0], self.counts[d] / self.counts.sum(),
        ])  # fmt: skip
        self._learn(x, corr, amp)
        return feats

    def _add(self, x: np.ndarray) -> None:
        """A new template from ``x``, replacing the least used non-dominant one when :data:`MAX_TEMPLATES` exist."""
        if len(self.templates) < MAX_TEMPLATES:
            self.templates = np.vstack([self.templates, x])
            self.counts = np.append(self.counts, 1.0)
            self.members = np.append(self.members, 1)
        else:
            order = np.argsort(self.counts, kind="stable")
            k = int(order[0] if order[0] != self.dominant else order[1])
            self.templates[k], self.counts[k], self.members[k] = x, 1.0, 1
        if self.dominant < 0:
            self.dominant = 0

    def _learn(self, x: np.ndarray, corr: np.ndarray, amp: np.ndarray) -> None:
        self.counts *= 1.0 - DECAY
        ok = (corr >= JOIN_CORR) & (np.abs(amp) <= JOIN_AMP_LOG2)
        if ok.any():
            best = int(np.argmax(np.where(ok, corr, -np.inf)))
            self.members[best] += 1
            self.templates[best] += (x - self.templates[best]) / min(int(self.members[best]), AVERAGE_BEATS)
            self.counts[best] += 1.0
        else:
            self._add(x)
        top = int(np.argmax(self.counts))
        if top != self.dominant and self.counts[top] > SWITCH_RATIO * self.counts[self.dominant]:
            self.dominant = top


def morphology_features(signal_mv: np.ndarray, r_samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """Morphology features of a whole record's beats, in order, with the same :class:`DominantBeat` the edge runs.

    Args:
        signal_mv: ``(n,)`` one lead (mV) at ``fs_hz``.
        r_samples: ``(k,)`` R-peak samples, increasing.
        fs_hz: sampling rate (Hz).

    Returns:
        ``(k, len(MORPHOLOGY_NAMES))`` float64; a beat whose span is not inside the signal gets :data:`NEUTRAL`
        and is not learnt.
    """
    tracker = DominantBeat(fs_hz)
    before, after = tracker.span
    out = np.tile(NEUTRAL, (len(r_samples), 1))
    for i, r in enumerate(np.asarray(r_samples, dtype=np.int64)):
        if r - before >= 0 and r + after <= len(signal_mv):
            out[i] = tracker.push(signal_mv[r - before : r + after])
    return out
