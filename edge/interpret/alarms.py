"""Alarm conditions of one device, with IEC 60601-1-8 priorities, configurable limits, latching and acknowledgement.

:class:`AlarmMonitor` reads the :meth:`edge.interpret.episodes.EpisodeTracker.snapshot` after every beat or signal
chunk and raises / clears alarms. Each condition is decided from the tracker's own state (episodes, the live V run,
the lead status, the time since the last beat), never from segmentation windows, so the life-threatening ones fire
as soon as the beat detector and the signal say so:

==========  ========  =====================================================================================  ========
alarm       priority  condition (limits in :class:`AlarmLimits`)                                             needs
==========  ========  =====================================================================================  ========
asystole    high      the tracker's ASYSTOLE episode (no beat ≥ 4 s on a usable signal)                      beats
vf          high      the tracker's VFL episode (VF filter on the signal)                                    signal
vt          high      a V run has ≥ ``vt_run_beats`` (5) beats at > ``vt_rate_bpm`` (100 bpm): the live one, or  classes
                      one that ended since the last update (beats come in bursts)
brady       high      HR < ``brady_bpm`` (40 bpm, extreme bradycardia)                                       beats
tachy       high      HR > ``tachy_bpm`` (150 bpm, extreme tachycardia)                                      beats
pause       medium    no beat for > ``pause_s`` (3 s), or a completed RR > ``pause_s`` not alarmed as it happened  beats
af          medium    the tracker's AFIB episode (raised at its onset)                                       beats
lead_off    low       technical: the lead is flat or saturated (never reported as asystole)                  signal
==========  ========  =====================================================================================  ========

Precedence: while the vf condition holds, vt, brady and tachy are not present (VF supersedes them, as a monitor
shows one ventricular-arrhythmia alarm, not three): in VF the beat detector finds the flutter waves, the classifier
calls many of them V and their rate is above 150 /min, but the rhythm is VF. A vt or rate alarm raised before the vf
alarm clears when vf is raised, unless it latches. Nor do they come back from what VF left behind: once vf ends, a
V run that began before it ended, or an 8-beat rate whose oldest beat lies before it ended, raises no vt / brady /
tachy (the flutter waves called V beats are the same arrhythmia); a run or a rate window that begins after VF does.

Without beat classes the vt alarm cannot fire (no V run); VT then shows as extreme tachycardia (tachy, > 150 bpm)
when fast enough, and as asystole / vf when it degenerates. HR for brady / tachy is the rate of the last 8 beats of
any class (60 / median RR; the tracker's ``hr_all_bpm``).

Each :class:`AlarmEvent` carries ``time_s``, the device time at which the condition began, and ``at_s``, when the
monitor decided. A latched type (``AlarmLimits.latching``; asystole, vf, vt by default) stays raised after its
condition ends until :meth:`AlarmMonitor.acknowledge`; acknowledging an alarm whose condition persists silences it
(``acknowledged``) and it clears when the condition ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: Alarm types and their IEC 60601-1-8 priorities.
ALARM_PRIORITY: dict[str, str] = {
    "asystole": "high", "vf": "high", "vt": "high", "brady": "high", "tachy": "high",
    "pause": "medium", "af": "medium", "lead_off": "low",
}
#: How far inside its limit (bpm) the rate must come back before a brady / tachy alarm condition ends.
RATE_HYSTERESIS_BPM = 5.0

#: Technical (equipment) alarms; all others are physiological.
TECHNICAL_ALARMS: frozenset[str] = frozenset({"lead_off"})


@dataclass(frozen=True)
class AlarmLimits:
    """Per-device alarm limits; invalid values raise ValueError with one line.

    Attributes:
        brady_bpm: extreme bradycardia limit (bpm): alarm below it.
        tachy_bpm: extreme tachycardia limit (bpm): alarm above it.
        pause_s: pause limit (s): alarm when no beat comes for longer.
        vt_run_beats: V beats in a run before the vt alarm (the VT episode starts at 3).
        vt_rate_bpm: rate (bpm) the V run must exceed.
        latching: alarm types that stay raised until acknowledged.
        enabled: alarm types that may be raised at all.
    """

    brady_bpm: float = 40.0
    tachy_bpm: float = 150.0
    pause_s: float = 3.0
    vt_run_beats: int = 5
    vt_rate_bpm: float = 100.0
    latching: frozenset[str] = field(default_factory=lambda: frozenset({"asystole", "vf", "vt"}))
    enabled: frozenset[str] = field(default_factory=lambda: frozenset(ALARM_PRIORITY))

    def __post_init__(self) -> None:
        object.__setattr__(self, "latching", frozenset(self.latching))
        object.__setattr__(self, "enabled", frozenset(self.enabled))
        if not 10.0 <= self.brady_bpm < self.tachy_bpm <= 350.0:
            raise ValueError(f"alarm limits need 10 <= brady_bpm < tachy_bpm <= 350 bpm, got brady_bpm="
                             f"{self.brady_bpm}, tachy_bpm={self.tachy_bpm}")
        if not 1.0 <= self.pause_s <= 10.0:
            raise ValueError(f"alarm limit pause_s must be within 1..10 s, got {self.pause_s}")
        if not 3 <= self.vt_run_beats <= 20 or not 60.0 <= self.vt_rate_bpm <= 250.0:
            raise ValueError(f"alarm limits need vt_run_beats in 3..20 and vt_rate_bpm in 60..250, got "
                             f"{self.vt_run_beats}, {self.vt_rate_bpm}")
        unknown = (self.latching | self.enabled) - set(ALARM_PRIORITY)
        if unknown:
            raise ValueError(f"unknown alarm types {sorted(unknown)}; known: {sorted(ALARM_PRIORITY)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AlarmLimits:
        """Defaults overridden by ``values`` (e.g. a device's config table); unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown alarm limit {unknown[0]!r}; known: {sorted(names)}")
        return cls(**dict(values))


@dataclass(frozen=True)
class AlarmEvent:
    """An alarm was raised or cleared.

    Attributes:
        type: alarm type (:data:`ALARM_PRIORITY` keys); priority: ``high`` / ``medium`` / ``low``;
        state: ``"raised"`` or ``"cleared"``; time_s: device time the condition began (s);
        at_s: device time the monitor decided (s); technical: True for equipment alarms (lead_off).
    """

    type: str
    priority: str
    state: str
    time_s: float
    at_s: float
    technical: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "priority": self.priority, "state": self.state, "time_s": round(self.time_s, 3),
                "at_s": round(self.at_s, 3), "technical": self.technical}


@dataclass
class _Alarm:
    raised: bool = False
    condition: bool = False
    acknowledged: bool = False
    time_s: float = 0.0


class AlarmMonitor:
    """Alarm state of one device. :meth:`update` with each tracker snapshot; :meth:`acknowledge` from the operator."""

    def __init__(self, limits: AlarmLimits | None = None):
        self.limits = limits or AlarmLimits()
        self.reset()

    def reset(self) -> None:
        self._alarms: dict[str, _Alarm] = {name: _Alarm() for name in ALARM_PRIORITY}
        self._last_rr_beat: float | None = None
        self._silence_seen: float | None = None  # last beat (s) after which a silence > pause_s was seen live
        self._vf_seen_s: float | None = None  # device time (s) of the latest update at which vf was present
        self._vt_runs_seen = 0  # number of the latest ended V run the last update saw

    def conditions(self, snap: Mapping[str, Any]) -> dict[str, float | None]:
        """Onset time (s) of every alarm condition present in a tracker snapshot, None when absent."""
        lim, now, active = self.limits, snap.get("now_s") or 0.0, snap.get("active", {})
        hr, last_beat = snap.get("hr_all_bpm"), snap.get("last_beat_s")
        run, rate = snap.get("vt_run_beats", 0), snap.get("vt_run_rate_bpm")
        pause = None
        if last_beat is not None and now - last_beat > lim.pause_s:
            self._silence_seen = last_beat  # this silence is alarmed as it happens (pause, then asystole)
            if "ASYSTOLE" not in active:
                pause = last_beat
        # rate alarms go off again only RATE_HYSTERESIS_BPM inside their limit (no flicker around it)
        brady_on = lim.brady_bpm + (RATE_HYSTERESIS_BPM if self._alarms["brady"].condition else 0.0)
        tachy_on = lim.tachy_bpm - (RATE_HYSTERESIS_BPM if self._alarms["tachy"].condition else 0.0)
        rr = snap.get("last_rr_s")
        if pause is None and rr is not None and rr > lim.pause_s and last_beat != self._last_rr_beat:
            self._last_rr_beat = last_beat
            seen = self._silence_seen is not None and abs(self._silence_seen - (last_beat - rr)) < 1e-6
            if not seen:  # not alarmed while it happened (it fell between two updates)
                pause = last_beat - rr  # a pause seen only when the beat after it came
        vf = active.get("VFL")
        if vf is not None:
            self._vf_seen_s = now
        # VF supersedes vt and the rate alarms, and what it left behind (a run or a rate window begun in it) is VF's
        run_start, rate_from = snap.get("vt_run_start_s"), snap.get("hr_all_from_s")
        after_vf = self._vf_seen_s
        vt_start = run_start if run >= lim.vt_run_beats and rate and rate > lim.vt_rate_bpm else None
        ended = snap.get("vt_ended_runs") or []
        if ended and ended[-1][0] < self._vt_runs_seen:  # the tracker was reset
            self._vt_runs_seen = 0
        for number, start, beats, run_rate in ended:  # runs that began and ended between two updates
            if vt_start is None and number > self._vt_runs_seen and beats >= lim.vt_run_beats and run_rate \
                    and run_rate > lim.vt_rate_bpm:
                vt_start = start
        self._vt_runs_seen = ended[-1][0] if ended else self._vt_runs_seen
        vt_ok = vf is None and vt_start is not None and (after_vf is None or vt_start > after_vf)
        rate_ok = vf is None and hr is not None and (
            after_vf is None or (rate_from is not None and rate_from > after_vf))
        return {
            "asystole": active.get("ASYSTOLE"),
            "vf": vf,
            "vt": vt_start if vt_ok else None,
            "brady": now if rate_ok and hr < brady_on else None,
            "tachy": now if rate_ok and hr > tachy_on else None,
            "pause": pause,
            "af": active.get("AFIB"),
            "lead_off": snap.get("signal_since_s") if snap.get("signal") == "lead_off" else None,
        }

    def update(self, snap: Mapping[str, Any]) -> list[AlarmEvent]:
        """Raise / clear alarms from one :meth:`EpisodeTracker.snapshot`; returns the events, in type order."""
        now = snap.get("now_s") or 0.0
        events = []
        for name, began in self.conditions(snap).items():
            if name not in self.limits.enabled:
                continue
            alarm = self._alarms[name]
            present = began is not None
            if present and not alarm.raised:
                alarm.raised, alarm.acknowledged, alarm.time_s = True, False, float(began)  # type: ignore[arg-type]
                events.append(self._event(name, "raised", now))
            elif not present and alarm.condition and alarm.raised:
                if name not in self.limits.latching or alarm.acknowledged:
                    alarm.raised = False
                    events.append(self._event(name, "cleared", now))
            alarm.condition = present
        return events

    def acknowledge(self, alarm_type: str, at_s: float) -> list[AlarmEvent]:
        """Operator acknowledgement at device time ``at_s`` (s): clears a latched alarm whose condition has ended;
        an alarm whose condition persists is marked acknowledged and clears when the condition ends."""
        if alarm_type not in ALARM_PRIORITY:
            raise ValueError(f"unknown alarm type {alarm_type!r}; known: {sorted(ALARM_PRIORITY)}")
        alarm = self._alarms[alarm_type]
        if not alarm.raised:
            return []
        alarm.acknowledged = True
        if alarm.condition:
            return []
        alarm.raised = False
        return [self._event(alarm_type, "cleared", at_s)]

    def raised(self) -> dict[str, dict[str, Any]]:
        """The raised alarms: type -> priority, time_s, acknowledged, and whether the condition is still present."""
        return {name: {"priority": ALARM_PRIORITY[name], "time_s": a.time_s, "acknowledged": a.acknowledged,
                       "condition": a.condition} for name, a in self._alarms.items() if a.raised}

    def _event(self, name: str, state: str, at_s: float) -> AlarmEvent:
        return AlarmEvent(name, ALARM_PRIORITY[name], state, self._alarms[name].time_s, float(at_s),
                          name in TECHNICAL_ALARMS)

    def __repr__(self) -> str:
        return f"AlarmMonitor(raised={sorted(self.raised())})"
