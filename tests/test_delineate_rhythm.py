"""Beat delineation from per-sample labels, intervals, rhythm description and label hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from edge.ecg import WAVE_CLASSES
from edge.interpret.delineation import BeatWaves, combine_leads, delineate_beat, intervals_ms, runs
from edge.interpret.rhythm import LabelSmoother, describe_rr, rr_stats, window_problem
from train.features import RHYTHM_FEATURES, rhythm_features

FS = 250.0
P, QRS, T = (WAVE_CLASSES.index(n) for n in ("P", "QRS", "T"))


def _labels(beats: list[tuple[int, int, int, int, int, int]], n: int = 1000) -> np.ndarray:
    lab = np.zeros(n, np.int64)
    for p_on, p_off, q_on, q_off, t_on, t_off in beats:
        lab[p_on:p_off + 1] = P
        lab[q_on:q_off + 1] = QRS
        lab[t_on:t_off + 1] = T
    return lab


def test_runs_respects_min_length() -> None:
    lab = np.array([0, 2, 2, 0, 2, 0, 0, 2, 2, 2])
    np.testing.assert_array_equal(runs(lab, 2), [[1, 2], [4, 4], [7, 9]])
    np.testing.assert_array_equal(runs(lab, 2, min_len=2), [[1, 2], [7, 9]])


def test_delineate_picks_the_waves_of_the_beat_and_intervals() -> None:
    # two beats: P 100-125, QRS 150-174 (R at 160), T 220-280; the next beat 250 samples later
    b1 = (100, 125, 150, 174, 220, 280)
    b2 = tuple(v + 250 for v in b1)
    lab = _labels([b1, b2])
    w = delineate_beat(lab, 160, FS, next_r_index=410)
    assert w == BeatWaves((100, 125), (150, 174), (220, 280)) and w.quality == "good"
    w2 = delineate_beat(lab, 410, FS)
    assert w2.qrs == (400, 424) and w2.p == (350, 375)
    iv = intervals_ms(w, FS, rr_s=1.0)
    assert iv["PR"] == pytest.approx(200.0)           # 50 samples
    assert iv["QRS"] == pytest.approx(100.0)          # 25 samples
    assert iv["QT"] == pytest.approx(524.0)           # 131 samples
    assert iv["QTc_bazett"] == iv["QT"] and iv["QTc_fridericia"] == iv["QT"]  # RR = 1 s
    iv2 = intervals_ms(w, FS, rr_s=0.64)
    assert iv2["QTc_bazett"] == pytest.approx(524.0 / 0.8, abs=0.1)
    assert iv2["QTc_fridericia"] == pytest.approx(524.0 / 0.64 ** (1 / 3), abs=0.1)


def test_missing_waves_are_none_and_quality_flags() -> None:
    lab = _labels([(100, 125, 150, 174, 220, 280)])
    lab[220:281] = 0
    w = delineate_beat(lab, 160, FS)
    assert w.t is None and w.quality == "partial"
    assert intervals_ms(w, FS, 0.8)["QT"] is None
    assert delineate_beat(lab, 600, FS).quality == "poor"


def test_combine_leads_takes_the_median_and_drops_minority_waves() -> None:
    a = BeatWaves((100, 120), (150, 175), (220, 280))
    b = BeatWaves((102, 124), (149, 173), None)
    c = BeatWaves(None, (152, 176), None)
    w = combine_leads([a, b, c])
    assert w.qrs == (150, 175) and w.p == (101, 122) and w.t is None


def test_combine_leads_keeps_only_a_t_wave_the_leads_agree_on() -> None:
    """At 250 Hz the T offsets must lie within 20 ms (5 samples) of their median: one lead's U wave taken for the T
    (25 samples = 100 ms later) is not averaged into the QT."""
    qrs = (150, 175)
    mlii = BeatWaves(None, qrs, (215, 260))  # a T that runs on into the U wave
    v5 = BeatWaves(None, qrs, (190, 235))
    assert combine_leads([mlii, v5]).t is None and combine_leads([mlii, v5]).quality == "partial"
    assert combine_leads([BeatWaves(None, qrs, (192, 243)), v5]).t == (191, 239)  # 32 ms apart: agreed
    assert combine_leads([mlii, v5, BeatWaves(None, qrs, (194, 238))]).t == (192, 236)  # the two that agree
    assert combine_leads([mlii]).t == (215, 260)  # one lead: nothing to check it against
    # 125 Hz: the same 5 samples are 40 ms, too far apart
    assert combine_leads([BeatWaves(None, qrs, (192, 243)), v5], fs_hz=125.0).t is None


def test_describe_rr() -> None:
    reg = describe_rr(np.full(10, 0.8))
    assert reg["hr_bpm"] == 75.0 and reg["regularity"] == "regular" and reg["rate"] == "normal"
    rng = np.random.default_rng(1)
    irr = describe_rr(rng.uniform(0.4, 1.0, 20))
    assert irr["regularity"] == "irregular" and irr["rr_cv"] > 0.12
    assert describe_rr(np.full(5, 1.25))["rate"] == "brady"
    assert describe_rr(np.full(5, 0.5))["rate"] == "tachy"
    assert describe_rr(np.array([]))["hr_bpm"] is None


def test_training_features_use_the_edge_heart_rate_convention() -> None:
    """One HR / HRV convention: 60 / median RR and ddof-1 SDNN, on the edge and in Beat-SSL's rhythm features."""
    r_peaks = np.array([100, 300, 500, 800, 1000, 1200])  # RR 0.8 0.8 1.2 0.8 0.8 s at 250 Hz: median 0.8, mean 0.88
    rr_s = np.diff(r_peaks) / FS
    st = rr_stats(rr_s)
    assert st.n_rr == 5 and st.hr_bpm == pytest.approx(75.0)  # 60 / mean RR would be 68.2
    assert st.sd_ms == pytest.approx(np.std(rr_s, ddof=1) * 1e3) and st.sd_ms == pytest.approx(178.885, abs=1e-3)
    assert describe_rr(rr_s)["hr_bpm"] == 75.0 and describe_rr(rr_s)["rr_sd_ms"] == 178.9
    ecg = np.zeros((2, 2500))
    ecg[1, r_peaks] = 1.0  # lead II (the preferred lead) carries the beats
    feats = dict(zip(RHYTHM_FEATURES, rhythm_features(ecg, r_peaks, ("V1", "II"), FS), strict=True))
    assert feats["hr_bpm"] == pytest.approx(st.hr_bpm) and feats["sdnn_ms"] == pytest.approx(st.sd_ms)
    assert feats["rmssd_ms"] == pytest.approx(st.rmssd_ms) and feats["r_amp_mv"] == pytest.approx(1.0)
    assert np.isnan(rhythm_features(ecg, r_peaks[:3], ("V1", "II"), FS)[1])  # SDNN needs 3 RR, as on the edge


def test_window_problem() -> None:
    t = np.arange(2500) / FS
    ecg = np.stack([np.sin(2 * np.pi * 1.2 * t) for _ in range(3)], axis=1)
    assert window_problem(ecg, FS, n_beats=12, restarted=False) is None
    assert window_problem(ecg, FS, 12, restarted=True) == "gap"
    flat = ecg.copy()
    flat[:, 1] = 0.1
    assert window_problem(flat, FS, 12, False) == "lead_off"
    noisy = ecg + np.random.default_rng(0).normal(0, 3, ecg.shape)
    assert window_problem(noisy, FS, 12, False) == "noise"
    assert window_problem(ecg, FS, 1, False) == "no_beats"


def test_label_smoother_has_hysteresis() -> None:
    s = LabelSmoother({"NORM": 0.5, "MI": 0.5}, margin=0.1, on_windows=2, off_windows=2)
    seq = [0.6, 0.45, 0.6, 0.6, 0.45, 0.3, 0.45, 0.35, 0.3]
    active = [("NORM" in s.update({"NORM": p, "MI": 0.0})) for p in seq]
    # on after two consecutive >= 0.5; 0.45 is inside the band (no switch off); off after two < 0.4
    assert active == [False, False, False, True, True, True, True, True, False]


def test_label_with_a_threshold_below_the_margin_still_switches_off() -> None:
    # threshold 0.04 (as tuned on validation data): off level max(0.04 - 0.1, 0.02) = 0.02, not -0.06
    s = LabelSmoother({"CD": 0.04}, margin=0.1, on_windows=2, off_windows=2)
    active = [bool(s.update({"CD": p})) for p in [0.05, 0.3, 0.03, 0.01, 0.0, 0.05]]
    assert active == [False, True, True, True, False, False]
