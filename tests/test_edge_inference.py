"""Live inference through a real broker with the shipped engines: per-beat wave boundaries against LUDB's
annotations, and rhythm messages every hop for every device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edge_harness import Collector, running_edge

from beatssl.cli import default_engines
from edge import protocol as proto
from edge.pipeline.device_inference import rhythm_phase
from offline.records import read_annotations
from simulator.replay import Replayer
from simulator.sources import wfdb_records

REPO = Path(__file__).resolve().parent.parent
LUDB_RECORDS = ("1", "2", "3", "4")


@pytest.fixture(scope="module")
def engines() -> tuple[Path, ...]:
    folders = tuple(default_engines())
    if len(folders) < 2:
        pytest.skip("the shipped engines are not built (engines/*/manifest.json)")
    return folders


def _truth_qrs(data_dir: Path, record: str, lead: str = "ii") -> np.ndarray:
    """(n, 2) QRS onset / offset (s) of one LUDB lead's annotations."""
    samples, symbols = read_annotations(data_dir / "ludb" / "data" / record, lead)
    out = []
    for i, sym in enumerate(symbols):
        if sym == "N" and 0 < i < len(symbols) - 1 and symbols[i - 1] == "(" and symbols[i + 1] == ")":
            out.append((samples[i - 1] / 500.0, samples[i + 1] / 500.0))
    return np.asarray(out)


def test_ludb_beats_carry_wave_boundaries_close_to_the_annotations(broker, data_dir, engines) -> None:
    records = wfdb_records(data_dir / "ludb", names=list(LUDB_RECORDS))
    with running_edge(broker, engines=engines, rhythm_hop_s=2.0) as (edge, settings):
        col = Collector(settings)
        replayer = Replayer(records, settings, devices=len(records), speed=float("inf"), chunk_ms=40,
                            device_prefix="ludb")
        replayer.run()
        devices = replayer.device_ids
        # every beat whose window completes (R + 1 s before the 10 s end) comes back with waves
        assert col.wait_for(lambda: all(len(col.get(proto.beats_topic(d))) >= 6 for d in devices), 30)
        half = edge.plan.seg_pre / edge.plan.fs_hz

        def score() -> tuple[list[tuple[float, float]], int]:
            errors_ms, n_truth = [], 0
            for device, rec in zip(devices, LUDB_RECORDS, strict=True):
                truth = _truth_qrs(data_dir, rec)
                # annotated beats whose segmentation window (centred on R) fits in the 10 s record
                truth = truth[(truth[:, 0] > half) & (truth[:, 1] < 10.0 - half)]
                n_truth += len(truth)
                for b in col.get(proto.beats_topic(device)):
                    if b["quality"] not in ("good", "partial"):
                        continue
                    assert set(b["waves"]) == {"P", "QRS", "T"}
                    assert set(b["intervals_ms"]) == {"PR", "QRS", "QT", "QTc_bazett", "QTc_fridericia"}
                    q = b["waves"]["QRS"]
                    k = int(np.argmin(np.abs(truth[:, 0] - q["on"])))
                    if abs(q["on"] - truth[k, 0]) <= 0.15:  # the standard 150 ms match window
                        errors_ms.append(((q["on"] - truth[k, 0]) * 1e3, (q["off"] - truth[k, 1]) * 1e3))
                        assert 40 <= b["intervals_ms"]["QRS"] <= 200
            return errors_ms, n_truth

        # segmented beats keep arriving while the engine works through the windows: wait for them
        col.wait_for(lambda: len(score()[0]) >= 0.9 * score()[1], 30)
        errors_ms, n_truth = score()
        qualities = [b["quality"] for d in devices for b in col.get(proto.beats_topic(d))]
        assert len(errors_ms) >= 0.9 * n_truth, f"{len(errors_ms)} of {n_truth} QRS matched; quality {qualities}"
        err = np.abs(np.asarray(errors_ms))
        assert np.mean(err <= 40) >= 0.95, f"QRS boundaries within 40 ms: {np.mean(err <= 40):.2f}"
        assert np.median(err) <= 16
        col.close()


def test_rhythm_phases_spread_devices_over_the_hop() -> None:
    # 100 devices that start together ask for classifier windows spread over the hop, not all at once
    phases = np.array([rhythm_phase(f"sim-{i:03d}", 500) for i in range(100)])
    assert phases.min() >= 0 and phases.max() < 500
    per_quarter = np.bincount(phases // 125, minlength=4)
    assert per_quarter.min() >= 15, per_quarter
    assert rhythm_phase("sim-007", 500) == rhythm_phase("sim-007", 500)


def test_rhythm_messages_every_hop_for_every_device(broker, data_dir, engines) -> None:
    records = wfdb_records(data_dir / "ludb", names=["6", "7", "8"])
    with running_edge(broker, engines=engines, rhythm_hop_s=2.0) as (edge, settings):
        col = Collector(settings)
        replayer = Replayer(records, settings, devices=3, speed=float("inf"), chunk_ms=40, loop=True,
                            device_prefix="rhy")
        replayer.run(duration_s=24.0)
        # hops end at φ + 2, 4, … s (φ in [0, 2): the device's phase) up to 22 s (φ + 20 s at least): 10 or 11
        phases, n_windows = {}, 0
        for device in replayer.device_ids:
            assert col.wait_for(lambda d=device: len(col.get(proto.rhythm_topic(d))) >= 10, 20)
            msgs = col.get(proto.rhythm_topic(device))
            t_end = [m["t_end"] for m in msgs]
            assert np.allclose(np.diff(t_end), 2.0, atol=0.01), t_end
            phases[device] = t_end[0] - 2.0
            assert 0.0 <= phases[device] < 2.0
            assert phases[device] == pytest.approx(rhythm_phase(device, 500) / 250.0, abs=0.005)
            assert [m["reason"] for m in msgs[:4]] == ["warming_up"] * 4
            usable = [m for m in msgs if m["usable"]]
            assert usable, "no usable window in 24 s of clean LUDB signal"
            n_windows += len({m["diagnosis_t_end"] for m in usable})
            for m in usable:
                assert m["window_s"] == 10.0 and m["diagnosis_engine"] is not None
                assert set(m["diagnosis_probs"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
                assert all(0.0 <= p <= 1.0 for p in m["diagnosis_probs"].values())
                assert m["hr_bpm"] is not None and 30 <= m["hr_bpm"] <= 200
                assert m["regularity"] in ("regular", "irregular")
        health = edge.health("online")
        # the usable messages carry the answers of classifier windows 10 s apart (--diagnosis-every-s): 2 per device,
        # hops at φ + 10 and φ + 20 s
        assert health["engines"]["classify"]["windows"] >= n_windows >= 3 * 2
        assert health["engines"]["segment"]["mean_batch"] >= 1.0
        col.close()


def test_stream_without_the_classifier_leads_is_reported_not_crashed(broker, data_dir, engines) -> None:
    records = wfdb_records(data_dir / "mitdb", names=["100"])
    with running_edge(broker, engines=engines) as (edge, settings):
        col = Collector(settings)
        replayer = Replayer(records, settings, devices=1, speed=float("inf"), device_prefix="holter")
        replayer.run(duration_s=16.0)
        device = replayer.device_ids[0]
        assert col.wait_for(lambda: len(col.get(proto.rhythm_topic(device))) >= 7, 20)
        errors = col.get(proto.errors_topic(device))
        assert [e["code"] for e in errors] == ["no_engine_for_leads"]
        assert "MLII" in errors[0]["message"] and "missing" in errors[0]["message"]
        usable = [m for m in col.get(proto.rhythm_topic(device)) if m["usable"]]
        assert usable and all(m["diagnosis_probs"] is None and m["diagnosis"] == [] and m["diagnosis_engine"] is None
                              for m in usable)
        assert all(60 <= m["hr_bpm"] <= 90 for m in usable)
        # beats are still segmented, on both Holter leads (MLII, V5); where the two disagree on the T end (100's MLII
        # takes the U wave for the T on about half the beats) the beat is partial, with no QT
        def good() -> list[dict]:
            return [b for b in col.get(proto.beats_topic(device)) if b["quality"] == "good"]

        assert col.wait_for(lambda: len(good()) >= 6, 20), [b["quality"] for b in col.get(proto.beats_topic(device))]
        assert all(b["segmented_leads"] == ["MLII", "V5"] and b["intervals_ms"]["QT"] for b in good())
        col.close()


@pytest.mark.parametrize("every_s", [10.0, 2.0])
def test_the_diagnosis_runs_every_diagnosis_every_s_and_the_hops_between_carry_it(data_dir: Path,
                                                                                 every_s: float) -> None:
    from edge.app import EdgeConfig, load_plan
    from edge.pipeline.runner import run_recording
    from edge.transport.mqtt import BrokerAddress, MqttSettings
    from offline.records import read_record

    rec = [read_record(data_dir / "ludb" / "data" / r) for r in LUDB_RECORDS]
    signal = np.concatenate([r.signal_mv for r in rec])  # 40 s, 12 leads, 500 Hz
    engine = REPO / "engines" / "rhythm-cls"
    if not (engine / "manifest.json").is_file():
        pytest.skip("the shipped rhythm-cls engine is not built")
    plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=(engine,),
                                         diagnosis_every_s=every_s))
    rhythm = run_recording(signal, rec[0].fs_hz, rec[0].leads, engines, plan, device="diag")["rhythm"]
    usable = [m for m in rhythm if m["usable"]]
    assert len(usable) >= 14  # a hop every 2 s once the first 10 s window is in
    assert all(m["diagnosis_probs"] is not None and m["diagnosis_engine"] == "rhythm-cls" for m in usable)
    ran = sorted({m["diagnosis_t_end"] for m in usable})  # the windows the classifier ran on
    if every_s <= plan.rhythm_hop_s:
        assert all(m["diagnosis_t_end"] == m["t_end"] for m in usable)
    else:
        assert len(ran) == pytest.approx(len(usable) / 5, abs=1)  # one window in five
        assert min(np.diff(ran)) >= every_s - 1e-3
        first = {m["diagnosis_t_end"]: m for m in usable if m["diagnosis_t_end"] == m["t_end"]}
        for m in usable:  # each hop carries its window's answer, from at most every_s earlier
            assert 0 <= m["t_end"] - m["diagnosis_t_end"] < every_s
            assert m["diagnosis_probs"] == first[m["diagnosis_t_end"]]["diagnosis_probs"]
            assert m["diagnosis"] == first[m["diagnosis_t_end"]]["diagnosis"]
