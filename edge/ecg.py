"""ECG constants shared by the edge, the simulator and training: the one source of truth.

Lead names, the internal sampling rate of the edge and the class names of the shipped tasks are defined here
and imported everywhere else; nothing else spells them out.
"""

from __future__ import annotations

#: The twelve standard leads, in the order used by every 12-lead tensor in this project.
LEADS_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

#: The eight independent leads (I, II, V1..V6) from which the other four follow (Einthoven / Goldberger).
LEADS_8: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

#: Internal sampling rate of the edge (Hz). Every stream is resampled to it before filtering, detection and
#: inference; the shipped engines are trained at this rate.
INTERNAL_FS_HZ: int = 250

#: PTB-XL diagnostic superclasses (multilabel), in output order of classification engines.
PTBXL_SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

#: Per-sample wave classes of segmentation engines, in output channel order.
WAVE_CLASSES: tuple[str, ...] = ("none", "P", "QRS", "T")

#: Spelling variants seen in WFDB headers, mapped to the canonical names above (upper-cased keys).
_LEAD_ALIASES: dict[str, str] = {
    "AVR": "aVR",
    "AVL": "aVL",
    "AVF": "aVF",
    "MLII": "MLII",
    "ML2": "MLII",
    "D1": "I",
    "D2": "II",
    "D3": "III",
}


def canonical_lead(name: str) -> str:
    """Return the canonical spelling of a lead name (``"avr"`` -> ``"aVR"``, ``"v1"`` -> ``"V1"``).

    Names that are not standard (``"MLII"``, ``"CM5"``) are returned upper-cased.
    """
    key = name.strip().upper()
    if key in _LEAD_ALIASES:
        return _LEAD_ALIASES[key]
    for lead in LEADS_12:
        if lead.upper() == key:
            return lead
    return key


#: Leads in order of preference for single-lead work (beat segmentation, beat classification, the live strip):
#: lead II, its Holter analogue MLII, then the leads on which QRS is usually tallest. The one preference order.
LEAD_PREFERENCE: tuple[str, ...] = ("II", "MLII", "I", "V5", "V2")


def preferred_lead(leads: tuple[str, ...] | list[str]) -> int:
    """Index in ``leads`` (canonical names) of the most preferred lead of :data:`LEAD_PREFERENCE`; 0 if none is
    present."""
    for name in LEAD_PREFERENCE:
        if name in leads:
            return list(leads).index(name)
    return 0


#: AAMI EC57 heartbeat classes, in output order of beat-classification engines: N normal / bundle branch block /
#: escape, S supraventricular ectopic, V ventricular ectopic, F fusion, Q paced / unclassifiable.
AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

#: EC57 mapping of MIT-BIH beat symbols to :data:`AAMI_CLASSES` (N = N L R e j, S = A a J S, V = V E, F = F,
#: Q = / f Q). Other annotation symbols are not beats.
MITDB_TO_AAMI: dict[str, str] = {
    **dict.fromkeys("NLRej", "N"), **dict.fromkeys("AaJS", "S"), **dict.fromkeys("VE", "V"), "F": "F",
    **dict.fromkeys("/fQ", "Q"),
}
