"""Streaming DSP blocks and WFDB reading, on real PhysioNet records (../shared/data)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly, sosfilt, sosfilt_zi

from edge.dsp.filters import StreamingSOS, display_bandpass, impulse_response, qrs_bandpass
from edge.dsp.resample import StreamingResampler, dot
from offline.records import RecordError, read_annotations, read_record

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "mitdb").is_dir(), reason=f"no PhysioNet data at {DATA}")
# the compiled kernels sum in the order of numpy's x86-64 build (einsum's SSE2 loops)
x86_64 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="einsum's order is x86-64's")


def _push_in_chunks(stage, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < x.shape[0]:
        size = sizes[k % len(sizes)]
        out.append(stage.push(x[i : i + size]))
        i += size
        k += 1
    return np.concatenate(out)


@pytest.fixture(scope="module")
def mitdb_100() -> np.ndarray:
    if not (DATA / "mitdb").is_dir():
        pytest.skip(f"no PhysioNet data at {DATA}")
    return read_record(DATA / "mitdb" / "100").signal_mv[: 360 * 120].astype(np.float64)


@pytest.mark.parametrize(("fs_in", "fs_out", "up", "down"), [(360, 250, 25, 36), (500, 250, 1, 2), (128, 250, 125, 64)])
def test_resampler_matches_resample_poly_in_the_interior(mitdb_100, fs_in, fs_out, up, down):
    resampler = StreamingResampler(fs_in, fs_out, 2)
    assert (resampler.up, resampler.down) == (up, down)
    y = resampler.push(mitdb_100)
    ref = resample_poly(mitdb_100, up, down, axis=0, window=resampler.filter / up)
    assert y.dtype == np.float32 and y.shape[1] == 2
    # every output whose input is complete is emitted; the rest waits for the look-ahead
    lag = int(np.ceil(resampler.delay_s * fs_out)) + 1
    assert ref.shape[0] - lag <= y.shape[0] <= ref.shape[0]
    skip = lag + 1  # the start differs: the stream is extended with its first sample, resample_poly with zeros
    np.testing.assert_allclose(y[skip:], ref[skip : y.shape[0]], atol=2e-6)


@pytest.mark.parametrize("sizes", [[1], [7], [14, 15], [360], [3, 1000, 1, 50]])
def test_resampler_output_does_not_depend_on_chunking(mitdb_100, sizes):
    whole = StreamingResampler(360, 250, 2).push(mitdb_100[: 360 * 20])
    chunked = _push_in_chunks(StreamingResampler(360, 250, 2), mitdb_100[: 360 * 20], sizes)
    np.testing.assert_array_equal(whole, chunked)


def test_resampler_pass_through_and_reset(mitdb_100):
    same = StreamingResampler(250, 250, 2)
    np.testing.assert_array_equal(same.push(mitdb_100[:100]), mitdb_100[:100].astype(np.float32))
    assert same.delay_s == 0.0
    resampler = StreamingResampler(360, 250, 2)
    first = resampler.push(mitdb_100[:3600])
    resampler.reset()
    np.testing.assert_array_equal(resampler.push(mitdb_100[:3600]), first)
    assert resampler.delay_s == pytest.approx(0.02)


def test_streaming_sos_equals_sosfilt_and_is_chunk_invariant(mitdb_100):
    sos = display_bandpass(360.0)
    x = mitdb_100[: 360 * 10]
    ref = sosfilt(sos, x, axis=0, zi=sosfilt_zi(sos)[:, :, None] * x[0])[0]
    np.testing.assert_array_equal(StreamingSOS(sos, 2).push(x), ref)
    stream = StreamingSOS(sos, 2)
    np.testing.assert_array_equal(_push_in_chunks(stream, x, [1, 9, 14]), ref)
    stream.reset()
    np.testing.assert_array_equal(stream.push(x), ref)


def test_qrs_bandpass_fir_is_causal_and_rejects_dc_and_baseline():
    fs = 250.0
    h = impulse_response(qrs_bandpass(fs))
    assert 20 < h.size < 400
    n = np.arange(2500) / fs
    assert abs(np.convolve(np.ones(2500), h)[h.size : 2500]).max() < 1e-3  # DC
    baseline = np.convolve(np.sin(2 * np.pi * 0.3 * n), h)[500:2500]  # 0.3 Hz wander
    qrs_band = np.convolve(np.sin(2 * np.pi * 10.0 * n), h)[500:2500]
    assert np.abs(baseline).max() < 0.02 < 0.9 < np.abs(qrs_band).max()


@needs_data
@pytest.mark.parametrize(
    ("path", "fs", "n_leads", "first_lead"),
    [
        ("mitdb/100", 360.0, 2, "MLII"),
        ("qtdb/sel14046", 250.0, 2, "RECORD 14046, SIGNAL 0"),
        ("ludb/data/1", 500.0, 12, "I"),
        ("ptbxl/records500/06000/06000_hr", 500.0, 12, "I"),
    ],
)
def test_read_record_each_dataset(path, fs, n_leads, first_lead):
    record = read_record(DATA / path)
    assert record.fs_hz == fs
    assert record.signal_mv.dtype == np.float32 and record.signal_mv.shape[1] == n_leads
    assert record.leads[0] == first_lead and len(record.leads) == n_leads
    # physical units in mV: ECG amplitudes of a few mV, not µV counts
    assert 0.2 < np.ptp(record.signal_mv[:, 0]) < 20.0


@needs_data
def test_read_record_lead_selection_and_canonical_names():
    record = read_record(DATA / "ludb" / "data" / "1.hea", leads=["avf", "V1", "ii"])
    assert record.leads == ("aVF", "V1", "II")
    full = read_record(DATA / "ludb" / "data" / "1")
    np.testing.assert_array_equal(record.signal_mv[:, 2], full.signal_mv[:, 1])
    with pytest.raises(RecordError, match="no lead"):
        read_record(DATA / "mitdb" / "100", leads=["V6"])


@needs_data
def test_read_annotations_and_clear_errors(tmp_path):
    samples, symbols = read_annotations(DATA / "mitdb" / "100")
    assert samples.dtype == np.int64 and len(samples) == len(symbols) and symbols.count("N") == 2239
    missing = DATA / "mitdb" / "999"
    with pytest.raises(RecordError, match="999"):
        read_record(missing)
    with pytest.raises(RecordError, match="999"):
        read_annotations(missing)
    (tmp_path / "bad.hea").write_text("bad 1 360 10\nbad.dat 212 200 11 1024 0 0 0 MLII\n")
    with pytest.raises(RecordError, match="bad"):
        read_record(tmp_path / "bad")


@x86_64
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 132])
def test_dot_sums_in_einsum_order(n):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, 200, n)) * 10.0 ** rng.uniform(-3, 3, (2, 200, n))
    assert [dot(x, y) for x, y in zip(a, b, strict=True)] == np.einsum("sk,sk->s", a, b).tolist()


@x86_64
@pytest.mark.parametrize(("fs_in", "fs_out"), [(360, 250), (500, 250), (128, 250)])
def test_resampler_equals_the_numpy_gather_and_einsum_bit_for_bit(mitdb_100, fs_in, fs_out):
    x = mitdb_100[: 360 * 10]
    resampler = StreamingResampler(fs_in, fs_out, 2)
    y = _push_in_chunks(resampler, x, [14, 1, 333])
    # the stream extended with its first sample (as push does), channel-major, then every output's window and taps
    keep = resampler._history.keep
    padded = np.concatenate([np.repeat(x[:1], keep, axis=0), x]).T
    k = np.arange(y.shape[0])
    q, r = np.divmod(k, resampler.up)
    oldest = q * resampler.down + resampler._shift + resampler._first[r] + keep
    windows = sliding_window_view(padded, resampler._weights.shape[1], axis=1)[:, oldest]
    expected = np.einsum("csk,sk->cs", windows, resampler._weights[r]).T.astype(np.float32)
    np.testing.assert_array_equal(y, expected)
