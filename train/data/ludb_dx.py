"""LUDB diagnoses (free text after ``#<diagnoses>:`` in each ``.hea``) -> PTB-XL superclasses.

Each statement ("Rhythm: Sinus bradycardia.", "Left ventricular hypertrophy.", ...) is matched against
:data:`STATEMENT_CLASSES` (first matching pattern wins); a statement no pattern matches is an error, so every
statement of the database is classed on purpose. :func:`train.data.superclass.record_label` makes the record label.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from train.data.superclass import NONE, NORMAL, record_label

#: (regular expression on the lower-cased statement, class tuple). The PTB-XL statement whose diagnostic_class is
#: used follows "=". Ischaemia is STTC and infarction (acute or old) MI, as in PTB-XL.
STATEMENT_CLASSES: list[tuple[str, tuple[str, ...]]] = [
    (r"^rhythm: (sinus rhythm|sinus bradycardia|sinus tachycardia|sinus arrhythmia|irregular sinus rhythm)", NORMAL),
    (r"^rhythm: ", NONE),  # atrial fibrillation, atrial flutter (= AFIB, AFLT: rhythm)
    (r"^electric axis of the heart: (normal|vertical|horizontal)", NORMAL),  # normal axis and its positions
    (r"^electric axis of the heart: ", NONE),  # left / right axis deviation: no class on its own
    (r"^(left|right) ventricular (hypertrophy|overload)", ("HYP",)),  # = LVH, RVH
    (r"^(left|right) atrial (hypertrophy|overload)", ("HYP",)),  # = LAO/LAE, RAO/RAE
    (r"^stemi: ", ("MI",)),  # acute infarction (= AMI, IMI, LMI ... and INJ*: injury is MI)
    (r"^scar formation: ", ("MI",)),  # old infarction (= the MI statements, which include old infarcts)
    # "ischemia, scar or suspected NSTEMI, not told apart": the finding seen is ischaemic-looking; PTB-XL's
    # non-specific ischemic statement ISC_ is STTC. MI only where an infarction is stated (STEMI, scar).
    (r"^undefined ischemia/scar/supp\.nstemi: ", ("STTC",)),
    (r"^ischemia: ", ("STTC",)),  # = ISC_, ISCAN, ISCIN, ISCLA ...
    (r"^non-specific repolarization abnormalities", ("STTC",)),  # = NDT / NST_
    (r"^early repolarization syndrome", NONE),  # usually a normal variant; no PTB-XL statement
    (r"^(complete|incomplete) (left|right) bundle branch block", ("CD",)),  # = CLBBB, ILBBB, CRBBB, IRBBB
    (r"^left anterior hemiblock", ("CD",)),  # = LAFB
    (r"^(i|ii|iii) degree av[- ]block", ("CD",)),  # = 1AVB, 2AVB, 3AVB
    (r"^non-specific intrav[ei]ntricular conduction delay", ("CD",)),  # = IVCD ("intravintricular" in LUDB)
    (r"^(atrial|ventricular) extrasystole", NONE),  # = PAC, PVC (form, no class)
    (r"^aberrant conduction", NONE),  # of supraventricular beats: intermittent, no PTB-XL statement
    (r"pacing$|^p-synchrony$|^wandering atrial pacemaker$", NONE),  # = PACE (rhythm)
]
_COMPILED = [(re.compile(p), c) for p, c in STATEMENT_CLASSES]


def statements(header: str) -> list[str]:
    """The diagnosis statements of a LUDB header text (the ``#`` lines after ``#<diagnoses>:``), without the ``#``
    and the trailing full stop."""
    lines = [line.strip() for line in header.splitlines()]
    if "#<diagnoses>:" not in lines:
        return []
    after = lines[lines.index("#<diagnoses>:") + 1 :]
    return [s for s in (line.lstrip("#").strip().rstrip(".").strip() for line in after if line.startswith("#")) if s]


def statement_classes(statement: str) -> tuple[str, ...]:
    """Class tuple of one statement; ValueError when no pattern of :data:`STATEMENT_CLASSES` matches."""
    text = statement.lower()
    for pattern, classes in _COMPILED:
        if pattern.search(text):
            return classes
    raise ValueError(f"LUDB diagnosis {statement!r} matches no pattern of STATEMENT_CLASSES")


def record_statements(root: Path, name: str) -> list[str]:
    """Diagnosis statements of record ``name`` (``root/data/<name>.hea``)."""
    return statements((root / "data" / f"{name}.hea").read_text())


def diagnosis_label(root: Path, name: str) -> np.ndarray | None:
    """(5,) superclass label of LUDB record ``name``, or None when it has no diagnostic finding and is not normal."""
    return record_label(statement_classes(s) for s in record_statements(root, name))
