"""The online beat chain (resampler + QRS detector) on real MIT-BIH / QTDB / LUDB records (../shared/data)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from edge.detection.beats import BeatStream, detect_record
from edge.detection.qrs import OnlineQRSDetector, _correlate, _numpy_sum, _scan
from offline.records import read_annotations, read_record
from offline.scoring import BEAT_SYMBOLS, beat_samples, match_beats

DATA = Path(__file__).parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def mitdb():
    if not (DATA / "mitdb").is_dir():
        pytest.skip(f"no PhysioNet data at {DATA}")

    def load(name: str):
        record = read_record(DATA / "mitdb" / name)
        samples, symbols = read_annotations(DATA / "mitdb" / name)
        return record, beat_samples(samples, symbols)

    return load


def _f1(ref: np.ndarray, beats, fs_hz: float) -> float:
    tp, fn, fp = match_beats(ref, np.array([b.sample for b in beats]), 0.15 * fs_hz)
    return 2 * tp / (2 * tp + fn + fp)


def test_match_beats_is_one_to_one_within_tolerance():
    assert match_beats(np.array([100, 200, 300]), np.array([102, 195, 205, 420]), 10) == (2, 1, 2)
    assert match_beats(np.array([100]), np.array([]), 10) == (0, 1, 0)
    assert match_beats(np.array([]), np.array([5]), 10) == (0, 0, 1)
    assert set("NVAL/") <= BEAT_SYMBOLS and not {"+", "~", "|", "[", "]", "!"} & BEAT_SYMBOLS


@pytest.mark.parametrize("name", ["100", "119", "208"])
def test_f1_on_mitdb_records(mitdb, name):
    record, ref = mitdb(name)
    beats = detect_record(record.signal_mv, record.fs_hz)
    assert _f1(ref, beats, record.fs_hz) >= 0.99
    rr = np.array([b.rr_s for b in beats[1:]])
    np.testing.assert_allclose(np.diff([b.sample for b in beats]) / record.fs_hz, rr)
    assert all(b.time_s == b.sample / record.fs_hz for b in beats)


def test_beats_do_not_depend_on_chunking(mitdb):
    record, _ = mitdb("119")
    signal = record.signal_mv[: 360 * 600]
    whole = [b.sample for b in detect_record(signal, 360.0)]
    assert len(whole) > 500
    for chunk in (14, 7, 360, 4999):  # 40 ms, odd sizes, 1 s
        assert [b.sample for b in detect_record(signal, 360.0, chunk_samples=chunk)] == whole
    short = signal[: 360 * 30]  # one sample per push is slow: a shorter excerpt
    assert [b.sample for b in detect_record(short, 360.0, chunk_samples=1)] == [
        b.sample for b in detect_record(short, 360.0)
    ]


def _stages_one_by_one(signal: np.ndarray, fs_hz: float, sizes: list[int]):
    """The resampler's and the detector's own pushes, chunk by chunk: what BeatStream's fused kernel replaces."""
    stream = BeatStream(fs_hz, signal.shape[1])
    internal, peaks, i = [], [], 0
    for n in sizes:
        y = stream.resampler.push(signal[i : i + n])
        i += n
        internal.append(y)
        if y.shape[0]:
            peaks += [p.sample for p in stream.detector.push(y)]
    return np.concatenate(internal), peaks


@pytest.mark.parametrize(("name", "fs_hz"), [("119", 360.0), ("ludb", 500.0)])
def test_the_fused_kernel_gives_what_the_stages_give_one_by_one(mitdb, name, fs_hz):
    if name == "ludb":
        if not (DATA / "ludb").is_dir():
            pytest.skip(f"no LUDB at {DATA}")
        signal = np.tile(read_record(DATA / "ludb" / "data" / "1").signal_mv, (12, 1))  # 12 leads, 120 s
    else:
        signal = mitdb(name)[0].signal_mv[: 360 * 300]
    chunk = round(0.04 * fs_hz)
    # 40 ms chunks, then one chunk longer than the histories hold (it runs the stages and grows them), then 40 ms
    sizes = [chunk] * 1000 + [20000] + [chunk] * ((signal.shape[0] - 1000 * chunk - 20000) // chunk)
    stream = BeatStream(fs_hz, signal.shape[1])
    internal, peaks, i, fused = [], [], 0, 0
    for n in sizes:
        fused += 0 < n <= stream._fused
        y, beats = stream.push(signal[i : i + n])
        i += n
        internal.append(y)
        peaks += [b.sample for b in beats]
    expected_internal, expected_peaks = _stages_one_by_one(signal, fs_hz, sizes)
    assert fused > 0.9 * len(sizes)  # the fused kernel ran (all but the learning period and the long chunk)
    np.testing.assert_array_equal(np.concatenate(internal), expected_internal)
    assert len(peaks) > 80  # 119: ~340 in 300 s; LUDB 1 tiled: 96 in 120 s
    assert [round(stream.resampler.output_time(p)) for p in expected_peaks] == peaks


def test_latency_is_bounded(mitdb):
    record, _ = mitdb("100")
    beats = detect_record(record.signal_mv, record.fs_hz, chunk_samples=14)
    latency = np.array([b.latency_s for b in beats])
    assert latency.min() >= 0.0
    assert np.percentile(latency, 99) <= 0.3
    assert np.median(latency) <= 0.25


def test_flat_and_constant_input_yield_no_beats():
    for level in (0.0, 1.5, -3.0):
        assert detect_record(np.full((250 * 30, 2), level, dtype=np.float32), 250.0, chunk_samples=10) == []
    stream = BeatStream(500.0, 1)
    internal, beats = stream.push(np.zeros((500 * 20, 1)))
    assert stream.samples_in == 10000 and stream.samples_internal == internal.shape[0] > 4990
    tail, beats_at_end = stream.flush()
    assert beats == [] and beats_at_end == []
    assert internal.shape[0] + tail.shape[0] == stream.samples_internal == 5000  # all of 20 s at 250 Hz


def test_reset_starts_a_new_stream(mitdb):
    record, _ = mitdb("100")
    signal = record.signal_mv[: 360 * 60]
    stream = BeatStream(360.0, 2)
    first = stream.push(signal)[1] + stream.flush()[1]
    stream.reset()
    assert stream.samples_in == 0
    again = stream.push(signal)[1] + stream.flush()[1]
    assert again == first and len(first) > 60
    detector = OnlineQRSDetector(250.0, 2)
    internal = stream.resampler.push(signal)
    peaks = detector.push(internal) + detector.flush()
    detector.reset()
    assert detector.samples_in == 0 and detector.push(internal) + detector.flush() == peaks


@pytest.mark.parametrize(("path", "n_min"), [("qtdb/sel100", 1100), ("qtdb/sele0104", 800)])
def test_qtdb_at_internal_rate(path, n_min):
    if not (DATA / "qtdb").is_dir():
        pytest.skip(f"no PhysioNet data at {DATA}")
    record = read_record(DATA / path)
    samples, symbols = read_annotations(DATA / path)
    beats = detect_record(record.signal_mv, record.fs_hz, chunk_samples=10)
    assert len(beats) >= n_min
    assert _f1(beat_samples(samples, symbols), beats, record.fs_hz) >= 0.99


def test_twelve_lead_500_hz_record():
    if not (DATA / "ludb").is_dir():
        pytest.skip(f"no PhysioNet data at {DATA}")
    record = read_record(DATA / "ludb" / "data" / "1")
    beats = detect_record(record.signal_mv, record.fs_hz, chunk_samples=20)
    samples, _ = read_annotations(DATA / "ludb" / "data" / "1", extension="ii")
    assert 8 <= len(beats) <= 20
    hr = [b.hr_bpm for b in beats[1:]]
    assert all(40 < h < 150 for h in hr)
    assert samples.size > 0


x86_64 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="einsum's order is x86-64's")


@x86_64
@pytest.mark.parametrize("m", [1, 10, 4096])
def test_compiled_fir_sums_in_einsum_order(m):
    taps = OnlineQRSDetector(250.0, 2)._slope_taps
    x = np.random.default_rng(m).standard_normal(m + taps.size + 5)
    out, scratch = np.empty(m), np.empty(m)
    _correlate(x, 3, taps, out, scratch)
    expected = np.einsum("nk,k->n", sliding_window_view(x, taps.size)[3 : 3 + m], taps)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 12, 17, 40])
def test_lead_sum_is_numpys(n):
    rng = np.random.default_rng(n)
    for _ in range(200):
        values = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)
        assert _numpy_sum(values.tolist()) == float(values.sum())


def test_candidate_features_match_their_numpy_definition(mitdb):
    record, _ = mitdb("119")
    internal = BeatStream(record.fs_hz, 2).resampler.push(record.signal_mv[: 360 * 60])
    d = OnlineQRSDetector(250.0, 2)
    d.push(internal)
    lo, hi = d.half + d.window + 1, d.samples_in - d.half
    d._grow(hi - lo)
    half, window, delay, min_energy, scale, _, band_reversed, _ = d._constants
    count = _scan(d._energy.data, d._x.data, -d._energy.start, -d._x.start, lo, hi, d.samples_in, False, half, window,
                  delay, min_energy, scale, band_reversed, d._found)
    assert count > 90  # beats, T waves and noise peaks of 60 s (119: 98)
    e, xs = d._energy, d._x
    for j, r_sample, energy, slope, *leads in d._found[:count].tolist():
        k = e.column(int(j))
        mwi = e.data[1]
        assert mwi[k] * scale == energy >= min_energy
        assert mwi[k - half : k].max() < mwi[k] >= mwi[k + 1 : k + 1 + half].max()
        assert slope == float(np.sqrt(np.diff(e.data[0, k - window : k + 1]).max() * 1e-6))
        per_lead = e.data[2:, k - half - window + 1 : k + 1 + half]
        sums = np.cumsum(per_lead, axis=1)
        lead_mwi = sums[:, window - 1 :].copy()
        lead_mwi[:, 1:] -= sums[:, :-window]
        assert leads == (lead_mwi.max(axis=1) * scale).tolist()
        kx = xs.column(int(j))
        segment = xs.data[:, kx - window - d._band.size + 2 : kx + 1]
        power = sum(np.convolve(lead, d._band, mode="valid") ** 2 for lead in segment)
        assert r_sample == max(0, int(j) - window + 1 + int(np.argmax(power)) - delay)
