"""The one rule that turns a record's findings into a PTB-XL superclass label (CinC 2021 codes, LUDB diagnoses).

Each source has a table that gives every finding (a SNOMED-CT code, a line of LUDB text) a tuple of class names:

- ``("NORM",)`` — compatible with a normal ECG: a sinus rhythm at any rate, a normal electric axis;
- one or more of ``MI, STTC, CD, HYP`` — a diagnostic finding, classed as PTB-XL's ``scp_statements.csv`` classes
  the equivalent diagnostic statement;
- ``()`` — not diagnostic: a non-sinus rhythm, ectopic beats, pacing, axis deviation, a finding PTB-XL only has as
  a form statement without a class (low voltage, Q wave, voltage criteria alone), or a clinical diagnosis.

A record's label is the union of its diagnostic classes; NORM when all its findings are NORM-compatible; and none
(the record is left out) when it has no diagnostic finding but at least one non-diagnostic one: e.g. atrial
fibrillation alone says nothing about the superclasses, so neither NORM nor all-zero would be a label.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edge.ecg import PTBXL_SUPERCLASSES

#: Class tuple of a finding compatible with a normal ECG.
NORMAL: tuple[str, ...] = ("NORM",)
#: Class tuple of a finding that is not diagnostic.
NONE: tuple[str, ...] = ()


def record_label(findings: Iterable[tuple[str, ...]]) -> np.ndarray | None:
    """(5,) float32 multi-hot over PTBXL_SUPERCLASSES from the class tuples of a record's findings, or None.

    None when the record has no finding, or no diagnostic finding and at least one non-diagnostic one.
    """
    findings = list(findings)
    diagnostic = {c for f in findings if f != NORMAL for c in f}
    if diagnostic:
        names = diagnostic
    elif findings and all(f == NORMAL for f in findings):
        names = {"NORM"}
    else:
        return None
    unknown = names - set(PTBXL_SUPERCLASSES)
    if unknown:
        raise ValueError(f"not a PTB-XL superclass: {sorted(unknown)}")
    return np.array([c in names for c in PTBXL_SUPERCLASSES], dtype=np.float32)
