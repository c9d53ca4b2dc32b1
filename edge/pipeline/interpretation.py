"""Per-device interpretation: beats and signal → rhythm episodes, the rhythm call, alarms, stable intervals.

:class:`DeviceInterpretation` is the glue between a device's stream (:mod:`edge.pipeline.device`) and the
interpretation objects of :mod:`edge.interpret` (:class:`~edge.interpret.episodes.EpisodeTracker`,
:class:`~edge.interpret.alarms.AlarmMonitor`). It is fed at these moments, all on the device clock:

* every chunk of signal (band-passed 0.5–40 Hz here, on the preferred lead): signal quality, VF, asystole;
* every beat as soon as the detector decides it (:meth:`beat_detected`, ~0.3 s after R): the silence clock behind
  pause and asystole never waits for an engine;
* every chunk's pacing spikes, found on the raw input (:meth:`spikes`): a beat with one just before R is paced;
* every beat once its class is known (:meth:`beat_classified`, in beat order, ~0.5–0.9 s after R): the class
  detectors that take S and N alike (VT, bigeminy, trigeminy, paced) and the V count;
* every beat once all its engine results are in (:meth:`beat_done`, after its segmentation window): the P wave and
  the rest feed AF, the sinus rates and the interval medians, and SVTA and the S count take the class ("S during AF
  is N" needs the AF state up to this beat);

so the life-threatening alarms (asystole, VF) come from the detector's and the signal's own state, and those that
need beat classes (VT) from the beat classifier, never from the segmentation window. Pure logic: no I/O.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from edge.dsp.filters import StreamingSOS, display_bandpass
from edge.ecg import INTERNAL_FS_HZ
from edge.interpret.alarms import AlarmEvent, AlarmLimits, AlarmMonitor
from edge.interpret.episodes import EpisodeTracker
from edge.interpret.events import BEAT_QUALITIES, BeatEvent, EpisodeEvent, RhythmCall
from edge.pipeline.outputs import Output
from edge.protocol import PROTOCOL_VERSION

#: Stable intervals: the median over the last ``INTERVAL_BEATS`` beats of quality ``good`` that have the interval,
#: reported once at least ``MIN_INTERVAL_BEATS`` of them have it (else None).
INTERVAL_BEATS = 16
MIN_INTERVAL_BEATS = 8
INTERVAL_NAMES = ("PR", "QRS", "QT", "QTc_bazett", "QTc_fridericia")
#: The signal goes to the episode layer in blocks of this many internal samples (0.2 s at 250 Hz), and the alarms are
#: re-evaluated at least that often (at once after an episode event): per-chunk calls cost more than the logic.
SIGNAL_BLOCK = 50
#: Episodes during which a beat the classifier calls S is published (and counted, and given to SVTA) as N: while the
#: atria fibrillate, an early beat is irregular conduction, not a supraventricular ectopic beat (MIT-BIH's annotators
#: label those beats N, as AAMI EC57 scores them). Decided when the beat is done, from the episode state after the
#: beats before it. The AF detector itself keeps the classifier's class. (Flutter is not told apart: it is called
#: AFIB, docs/method.md.)
ATRIAL_EPISODES = ("AFIB",)
#: A beat is paced when a pacing spike (:mod:`edge.detection.pacing`) lies in ``[R - PACED_BEFORE_S, R +
#: PACED_AFTER_S]`` (s): the stimulus comes up to ~200 ms before the wide paced QRS (LUDB, CinC) or on its onset,
#: where the detector can put R itself (MIT-BIH 104). It is published (and counted) as Q, AAMI's class of paced and
#: fusion-of-paced beats, never as a V: paced beats make no PVCs and no VT, bigeminy or trigeminy runs.
PACED_BEFORE_S = 0.25
PACED_AFTER_S = 0.02


class DeviceInterpretation:
    """Episodes, alarms and median intervals of one device (state lives for the device's time on this node).

    Args:
        device: device id (goes into every payload).
        limits: this device's alarm limits.
    """

    def __init__(self, device: str, limits: AlarmLimits | None = None):
        self.device = device
        self.episodes = EpisodeTracker()
        self.alarms = AlarmMonitor(limits)
        self.call = RhythmCall("N", 0.0, 0.0)
        self._filter = StreamingSOS(display_bandpass(INTERNAL_FS_HZ), 1)
        self._t_next: float | None = None  # device time of the next internal sample of the current run (s)
        self._block: list[np.ndarray] = []  # samples waiting for a full SIGNAL_BLOCK
        self._block_len = 0
        self._dirty = False  # an input since the last alarm evaluation could change an alarm
        self._good: deque[dict[str, float | None]] = deque(maxlen=INTERVAL_BEATS)
        self._spikes: deque[float] = deque()  # device times (s) of recent pacing spikes, oldest first
        self._paced: set[float] = set()  # R times (s) of classed beats made Q by a spike, until done

    def __repr__(self) -> str:
        return f"DeviceInterpretation({self.device!r}, {self.episodes!r}, {self.alarms!r})"

    # ------------------------------------------------------------------ inputs
    def start_run(self, t0_s: float) -> list[Output]:
        """A new stretch of contiguous signal begins at device time ``t0_s`` (s); what the last run left in its block
        is passed on first."""
        out = self._push_block()
        self._filter.reset()
        self._t_next = t0_s
        self.episodes.restart_silence(t0_s)
        return out

    def signal(self, internal_mv: np.ndarray) -> list[Output]:
        """The run's next samples of the preferred lead at the internal rate, ``(n,)`` mV (passed on in blocks of
        :data:`SIGNAL_BLOCK`)."""
        if self._t_next is None or not len(internal_mv):
            return []
        self._block.append(np.asarray(internal_mv, dtype=np.float64))
        self._block_len += len(internal_mv)
        return self._push_block() if self._block_len >= SIGNAL_BLOCK else []

    def _push_block(self) -> list[Output]:
        if not self._block_len or self._t_next is None:
            self._block, self._block_len = [], 0
            return []
        chunk = np.concatenate(self._block) if len(self._block) > 1 else self._block[0]
        self._block, self._block_len = [], 0
        band = self._filter.push(chunk[:, None])[:, 0]
        t0, self._t_next = self._t_next, self._t_next + len(chunk) / INTERNAL_FS_HZ
        self._dirty = True
        return self._events(self.episodes.push_signal(band, t0))

    def spikes(self, times_s: list[float]) -> None:
        """Pacing spikes found on the raw input, at device times ``times_s`` (s, ascending)."""
        self._spikes.extend(times_s)

    def _spiked(self, time_s: float) -> bool:
        """Whether a spike lies in the paced window of the beat with R at ``time_s`` (s; beats come in order)."""
        while self._spikes and self._spikes[0] < time_s - PACED_BEFORE_S:
            self._spikes.popleft()
        return bool(self._spikes) and self._spikes[0] <= time_s + PACED_AFTER_S

    def beat_detected(self, time_s: float) -> list[Output]:
        """The detector found a beat with R at device time ``time_s`` (s)."""
        self._dirty = True
        return self._events(self.episodes.note_beat(time_s))

    def beat_classified(self, event: dict[str, Any]) -> list[Output]:
        """A beat's class is known (``time`` s, ``rr_s`` s, ``class``, ``class_probs``; before its waves): feed the
        class detectors that take S and N alike (VT, bigeminy, trigeminy, paced) and the V count. A paced beat (a
        spike before R, :data:`PACED_BEFORE_S`) is Q for them, and in its beat message (:meth:`beat_done`)."""
        self._dirty = True
        cls = event.get("class")
        paced = self._spiked(event["time"])
        if paced and cls is not None:
            cls = "Q"
            self._paced.add(event["time"])
        return self._events(self.episodes.push_class(BeatEvent(
            time_s=event["time"], rr_s=event["rr_s"] or None, cls=cls, class_probs=event.get("class_probs"),
            paced=paced)))

    def beat_done(self, payload: dict[str, Any], classed: bool = False) -> list[Output]:
        """A beat message is complete (waves, class): feed it to the episode detectors and the interval medians
        (``classed``: :meth:`beat_classified` already had it, only the wave detectors take it now)."""
        waves = payload.get("waves")
        quality = payload.get("quality")
        paced = payload["time"] in self._paced if classed else self._spiked(payload["time"])
        if classed and paced:
            self._paced.discard(payload["time"])
            payload["class"] = "Q"  # class_probs stay the classifier's own
        event = BeatEvent(
            time_s=payload["time"],
            rr_s=payload["rr_s"] if payload.get("rr_s") else None,
            cls=payload.get("class"),
            class_probs=payload.get("class_probs"),
            paced=paced,
            p_wave=None if waves is None or quality not in BEAT_QUALITIES else waves.get("P") is not None,
            quality=quality if quality in BEAT_QUALITIES else None,
            pr_ms=(payload.get("intervals_ms") or {}).get("PR") if quality in BEAT_QUALITIES else None,
        )
        if quality == "good":
            self._good.append(payload.get("intervals_ms") or {})
        # decided here, from the AF state after the beats before this one, not when the class came: the same
        # episodes and classes however late the engine results are (tests/test_interpretation_order.py)
        conducted = event.cls == "S" and any(self.episodes.is_active(name) for name in ATRIAL_EPISODES)
        if conducted:
            payload["class"] = "N"  # class_probs stay the classifier's own
        self._dirty = True
        return self._events(self.episodes.push_beat(event, classed=classed, conducted=conducted))

    def acknowledge(self, alarm_type: str) -> list[Output]:
        """An operator acknowledged ``alarm_type`` (raises ValueError for an unknown type)."""
        now = self.episodes.now_s or 0.0
        return [self._alarm_output(e) for e in self.alarms.acknowledge(alarm_type, now)]

    def flush(self) -> list[Output]:
        """The stream ended: close every active episode (alarms whose condition ended clear, unless latched)."""
        out = self._push_block()
        self._t_next = None
        self._dirty = True
        self._paced.clear()
        return out + self._events(self.episodes.flush())

    def update_alarms(self) -> list[Output]:
        """Raise / clear alarms from the episode state now, when an input since the last call could change one
        (call once per input step)."""
        if not self._dirty:
            return []
        self._dirty = False
        return [self._alarm_output(e) for e in self.alarms.update(self.episodes.snapshot())]

    # ------------------------------------------------------------------ outputs
    def rhythm_fields(self) -> dict[str, Any]:
        """What the ``rhythm`` message adds from here: the call, ectopic counts, AF burden, median intervals."""
        snap = self.episodes.snapshot()
        return {
            "rhythm": self.call.rhythm,
            "rhythm_since": round(self.call.since_s, 3),
            "episodes_active": sorted(snap["active"]),
            "pvc_per_min": snap["pvc_per_min"],
            "pac_per_min": snap["pac_per_min"],
            "af_burden_pct": snap["af_burden_pct"],
            "median_intervals_ms": self.median_intervals(),
            "alarms_active": sorted(self.alarms.raised()),
        }

    def median_intervals(self) -> dict[str, float | None]:
        """Median PR / QRS / QT / QTc (ms) over the last 16 good beats, each once 8 of them have it (``good``: QRS and
        T found, and from several segmented leads a T they agree on, :func:`edge.interpret.delineation.combine_leads`;
        a beat whose leads disagree on the T end has no QT and is not among them)."""
        out: dict[str, float | None] = {}
        for name in INTERVAL_NAMES:
            values = [iv[name] for iv in self._good if iv.get(name) is not None]
            out[name] = round(float(np.median(values)), 1) if len(values) >= MIN_INTERVAL_BEATS else None
        out["beats"] = len(self._good)
        return out

    def _events(self, events: list[EpisodeEvent | RhythmCall]) -> list[Output]:
        out = []
        for ev in events:
            if isinstance(ev, RhythmCall):
                self.call = ev
                continue
            payload = {
                "v": PROTOCOL_VERSION, "device": self.device, "type": ev.type, "state": ev.kind,
                "start": round(ev.start_s, 3), "at": round(ev.at_s, 3), "wall_time": round(time.time(), 3),
            }
            if ev.end_s is not None:
                payload["end"] = round(ev.end_s, 3)
                payload["duration_s"] = round(ev.end_s - ev.start_s, 3)
            out.append(Output("episodes", payload))
        return out

    def _alarm_output(self, event: AlarmEvent) -> Output:
        active = [{"type": name, "priority": a["priority"], "time": round(a["time_s"], 3),
                   "acknowledged": a["acknowledged"]} for name, a in sorted(self.alarms.raised().items())]
        payload = {
            "v": PROTOCOL_VERSION, "device": self.device, "type": event.type, "priority": event.priority,
            "state": event.state, "time": round(event.time_s, 3), "at": round(event.at_s, 3),
            "technical": event.technical, "wall_time": round(time.time(), 3), "active": active,
        }
        return Output("alarms", payload, retain=True)
