"""PTB-XL in its native PhysioNet layout: superdiagnostic multilabels and the official strat_fold split.

``ptbxl_database.csv`` gives ``scp_codes`` (a dict literal) and ``strat_fold``; ``scp_statements.csv`` maps each
diagnostic statement to its ``diagnostic_class``. A record's label is every superclass of a statement with
``diagnostic == 1`` (any likelihood), the standard aggregation of Wagner et al. / Strodthoff et al.
"""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.ecg import PTBXL_SUPERCLASSES

#: Official split: folds 1-8 train, 9 validation, 10 test.
FOLDS: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}


@dataclass(frozen=True)
class PtbxlRow:
    """One PTB-XL record: id, fold, (5,) float32 superclass labels and its record path (without extension)."""

    ecg_id: int
    fold: int
    labels: np.ndarray
    path: Path


def diagnostic_classes(root: Path) -> dict[str, str]:
    """SCP code -> diagnostic superclass for every diagnostic statement of ``scp_statements.csv``."""
    with open(root / "scp_statements.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = next(iter(rows[0]))  # the unnamed first column holds the code (named scp_code in some copies)
    return {
        row[key]: row["diagnostic_class"]
        for row in rows
        if row.get("diagnostic", "").strip() in ("1", "1.0") and row["diagnostic_class"]
    }


def superclass_labels(scp_codes: dict[str, float], classes: dict[str, str]) -> np.ndarray:
    """(5,) multi-hot over PTBXL_SUPERCLASSES from one record's scp_codes."""
    out = np.zeros(len(PTBXL_SUPERCLASSES), dtype=np.float32)
    for code in scp_codes:
        if classes.get(code) in PTBXL_SUPERCLASSES:
            out[PTBXL_SUPERCLASSES.index(classes[code])] = 1.0
    return out


def read_index(root: Path) -> list[PtbxlRow]:
    """All rows of ``ptbxl_database.csv`` whose signal files exist (records500 preferred, else records100)."""
    classes = diagnostic_classes(root)
    out = []
    with open(root / "ptbxl_database.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = next(
                (root / row[col] for col in ("filename_hr", "filename_lr") if (root / f"{row[col]}.hea").exists()),
                None,
            )
            if path is None:
                continue
            labels = superclass_labels(ast.literal_eval(row["scp_codes"]), classes)
            out.append(PtbxlRow(int(float(row["ecg_id"])), int(float(row["strat_fold"])), labels, path))
    return out


def rows_for(rows: list[PtbxlRow], part: str) -> list[PtbxlRow]:
    """Rows of one official split part: ``"train"``, ``"val"`` or ``"test"``."""
    return [r for r in rows if r.fold in FOLDS[part]]

