"""Superclass labels of CinC 2021 and LUDB records, their splits, and the classify task on all three sources.

Real files in ../shared/data; the expected labels are read off labels.csv and the LUDB headers by hand.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.ecg import PTBXL_SUPERCLASSES
from train import config
from train.data import cinc2021, ludb, ludb_dx
from train.data.rate import read_12_lead
from train.data.superclass import NONE, NORMAL, record_label
from train.tasks import ClassifyTask, held_out


def _names(y: np.ndarray | None) -> set[str] | None:
    return None if y is None else {c for c, v in zip(PTBXL_SUPERCLASSES, y, strict=True) if v}


def test_label_rule_on_hand_made_findings() -> None:
    assert _names(record_label([NORMAL, NORMAL])) == {"NORM"}
    assert _names(record_label([NORMAL, ("CD",), NONE, ("HYP", "STTC")])) == {"CD", "HYP", "STTC"}  # NORM dropped
    assert record_label([NORMAL, NONE]) is None  # e.g. sinus rhythm + axis deviation: no diagnostic information
    assert record_label([]) is None
    with pytest.raises(ValueError, match="superclass"):
        record_label([("AFIB",)])


# ------------------------------------------------------------------------------------------------------ CinC 2021
@pytest.fixture(scope="module")
def cinc(data_dir: Path) -> Path:
    return data_dir / "cinc2021_sample"


@pytest.mark.parametrize(
    ("record", "codes", "expected"),
    [
        ("E00004", "SB;LIs;TAb;LVH", {"STTC", "HYP"}),
        ("Q0012", "CMI;OldMI;Brady", {"MI", "STTC"}),
        ("JS20000", "PAC;STach;NSIVCB;STC", {"STTC", "CD"}),
        ("JS38062", "RVH;TPW;NSR;TAb;RAH", {"STTC", "HYP"}),
        ("E07501", "LAA;STach", {"HYP"}),
        ("E07532", "RAD;SB;STC;STIAb", {"STTC"}),
        ("JS00004", "SB", {"NORM"}),  # a sinus rhythm at any rate, nothing else
        ("HR00002", "SB;NSR", {"NORM"}),
        ("S0003", "MI", {"MI"}),
        ("A0003", "AF", None),  # rhythm only: left out
        ("HR00007", "LAD;NSR", None),  # axis deviation alone: left out
        ("JS37915", "NSR;TPW", None),  # tall P wave alone is not a diagnosis
    ],
)
def test_cinc_records_map_to_superclasses(cinc: Path, record: str, codes: str, expected: set[str] | None) -> None:
    row = next(r for r in cinc2021.read_labels(cinc) if r["record"] == record)
    assert row["dx_abbrev"] == codes
    assert _names(cinc2021.code_label(row["dx_snomed"].split(";"))) == expected


def test_cinc_index_leaves_out_unlabelled_and_flat_records(cinc: Path) -> None:
    rows = {r.record: r for r in cinc2021.read_index(cinc)}
    assert len(rows) == 141  # of 173: 31 without a label, and JS11438 whose V1-V6 are flat
    assert "JS11438" not in rows and _names(cinc2021.code_label(["427084000"])) == {"NORM"}  # STach, V1-V6 flat
    assert _names(rows["E00004"].labels) == {"STTC", "HYP"}
    assert rows["S0003"].path == cinc / "ptb" / "S0003"
    counts = np.stack([r.labels for r in rows.values()]).sum(axis=0).astype(int)
    assert dict(zip(PTBXL_SUPERCLASSES, counts.tolist(), strict=True)) == {
        "NORM": 51, "MI": 13, "STTC": 49, "CD": 32, "HYP": 16
    }  # fmt: skip
    signal = read_12_lead(rows["S0003"].path)  # 1000 Hz, 115.2 s
    assert signal.shape == (12, 28800) and signal.dtype == np.float32


def test_every_code_is_classed_and_every_mapped_code_is_a_challenge_code(cinc: Path) -> None:
    challenge = set()
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with open(cinc / name, newline="") as fh:
            challenge |= {row["SNOMEDCTCode"] for row in csv.DictReader(fh)}
    in_data = {c for row in cinc2021.read_labels(cinc) for c in row["dx_snomed"].split(";")}
    table = cinc2021.CODE_CLASSES
    assert challenge | in_data == set(table)  # every code of both tables and of labels.csv, nothing else
    assert {c for c, classes in table.items() if classes} <= challenge  # "251238007" (in no table) is NONE
    assert table["251238007"] == NONE
    assert {c for classes in table.values() for c in classes} == set(PTBXL_SUPERCLASSES)


def test_cinc_split_is_deterministic_disjoint_and_by_name(cinc: Path) -> None:
    rows = cinc2021.read_index(cinc)
    parts = cinc2021.split(rows, seed=0, test_fraction=0.2, val_fraction=0.1)
    names = {p: [r.record for r in rs] for p, rs in parts.items()}
    assert {p: len(n) for p, n in names.items()} == {"train": 97, "val": 16, "test": 28}
    assert sorted(sum(names.values(), [])) == sorted(r.record for r in rows)
    assert not set(names["test"]) & (set(names["train"]) | set(names["val"]))
    assert parts == cinc2021.split(rows, seed=0, test_fraction=0.2, val_fraction=0.1)
    half = cinc2021.split(rows[::2], seed=0, test_fraction=0.2, val_fraction=0.1)  # a record's part is its own
    assert all(set(r.record for r in half[p]) <= set(names[p]) for p in names)
    other = cinc2021.split(rows, seed=1, test_fraction=0.2, val_fraction=0.1)
    assert [r.record for r in other["test"]] != names["test"]


# ----------------------------------------------------------------------------------------------------------- LUDB
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", {"STTC", "HYP"}),  # SB, LAD, LVH, LV overload, non-specific repolarization abnormalities
        ("4", {"MI", "STTC", "CD", "HYP"}),  # IRBBB, LAH, LVH, ischemia, scar, undefined ischemia/scar/NSTEMI
        ("7", {"MI", "HYP"}),  # PACs, LAH, RA overload, LVH, STEMI
        ("8", {"STTC"}),  # AF, undefined ischemia/scar/NSTEMI, ventricular pacing
        ("56", {"NORM"}),  # sinus rhythm, vertical axis
        ("63", {"NORM"}),  # sinus arrhythmia, vertical axis
        ("93", None),  # AF, biventricular pacing
        ("128", None),  # sinus bradycardia, normal axis, early repolarization syndrome
    ],
)
def test_ludb_diagnoses_map_to_superclasses(data_dir: Path, name: str, expected: set[str] | None) -> None:
    assert _names(ludb_dx.diagnosis_label(data_dir / "ludb", name)) == expected


def test_ludb_statements_parse_and_every_one_is_classed(data_dir: Path) -> None:
    root = data_dir / "ludb"
    assert ludb_dx.record_statements(root, "1") == [
        "Rhythm: Sinus bradycardia",
        "Electric axis of the heart: left axis deviation",
        "Left ventricular hypertrophy",
        "Left ventricular overload",
        "Non-specific repolarization abnormalities: posterior wall",
    ]
    labels = {n: ludb_dx.diagnosis_label(root, n) for n in ludb.record_names(root)}  # raises on an unmatched one
    assert sum(y is None for y in labels.values()) == 7
    with pytest.raises(ValueError, match="matches no pattern"):
        ludb_dx.statement_classes("Dextrocardia.")


# ----------------------------------------------------------------------------------------------- the classify task
@pytest.fixture(scope="module")
def task_all(data_dir: Path) -> ClassifyTask:
    cfg = config.load("cpu-fast-finetune-classify-all", {"data": {"root": str(data_dir)}, "run": {"device": "cpu"}})
    return ClassifyTask(cfg)


def test_classify_task_pools_three_sources_with_their_splits(task_all: ClassifyTask) -> None:
    counts = {
        part: (dict(Counter(s.sources)), np.stack(s.labels).sum(axis=0).astype(int).tolist())
        for part, s in task_all.sets.items()
    }
    assert counts == {  # (records per source, NORM / MI / STTC / CD / HYP positives), measured 2026-11-30
        "train": ({"cinc2021": 97, "ludb": 108, "ptbxl": 8}, [62, 19, 85, 60, 88]),
        "val": ({"cinc2021": 16, "ludb": 16}, [7, 5, 12, 6, 13]),
        "test": ({"cinc2021": 28, "ludb": 29, "ptbxl": 2}, [13, 9, 24, 18, 28]),
    }
    ludb_test = [r.removeprefix("ludb/") for r in task_all.records["test"] if r.startswith("ludb/")]
    parts = ludb.split(ludb.record_names(task_all.cfg.data.root_path() / "ludb"), 0, 0.2, 0.1)
    assert set(ludb_test) <= set(parts["test"]) and len(parts["test"]) - len(ludb_test) == 3  # 3 unlabelled
    assert {x.shape for s in task_all.sets.values() for x in s.signals} == {(12, 2500)}
    short = np.arange(24, dtype=np.float32).reshape(12, 2)
    padded = task_all._fit(short)
    assert padded.shape == (12, 2500) and (padded[:, 1:] == short[:, 1:]).all()  # edge values


def test_classify_evaluate_reports_each_source(task_all: ClassifyTask) -> None:
    report = task_all.evaluate(task_all.model.eval(), "test")
    assert report["records"] == 59 and report["positives"] == {"NORM": 13, "MI": 9, "STTC": 24, "CD": 18, "HYP": 28}
    assert {s: r["records"] for s, r in report["sources"].items()} == {"ptbxl": 2, "cinc2021": 28, "ludb": 29}
    assert report["sources"]["cinc2021"]["positives"] == {"NORM": 9, "MI": 3, "STTC": 11, "CD": 7, "HYP": 4}
    assert report["auroc_classes_defined"] == 5 and 0.0 <= report["macro_auroc"] <= 1.0


def test_cinc_val_and_test_records_are_held_out_of_pretraining(task_all: ClassifyTask) -> None:
    out = held_out(task_all.cfg)
    root = task_all.cfg.data.root_path() / "cinc2021_sample"
    parts = cinc2021.split(cinc2021.read_index(root), 0, 0.2, 0.1)
    assert {root / r.source / r.record for r in parts["val"] + parts["test"]} <= out
    assert not {root / r.source / r.record for r in parts["train"]} & out


def test_default_classify_sources_are_ptbxl_only(data_dir: Path) -> None:
    cfg = config.load("cpu-fast-finetune-classify", {"data": {"root": str(data_dir)}})
    assert cfg.data.classify_sources == ["ptbxl"]
    task = ClassifyTask(cfg)
    assert {p: len(s) for p, s in task.sets.items()} == {"train": 8, "val": 0, "test": 2}
    assert set(task.sets["train"].sources) == {"ptbxl"}
