"""PhysioNet/CinC Challenge 2021 records (``cinc2021_sample``): SNOMED-CT codes -> PTB-XL superclasses.

``labels.csv`` lists each record's codes (``dx_snomed``, ';'-separated) and its zero-variance leads
(``flat_leads``). :data:`CODE_CLASSES` gives every code of the Challenge's ``dx_mapping_scored.csv`` and
``dx_mapping_unscored.csv`` a class tuple; :func:`train.data.superclass.record_label` turns a record's codes into its
label (the rule is described there). Records with a flat lead are left out: six of twelve leads at zero is not a
12-lead ECG. The split is by record name (:func:`split`), so a record keeps its part when others are added.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.data.superclass import NONE, NORMAL, record_label

MI, STTC, CD, HYP = ("MI",), ("STTC",), ("CD",), ("HYP",)

#: SNOMED-CT code -> class tuple. Names and abbreviations as in dx_mapping_*.csv; "= X" names the PTB-XL
#: scp_statements.csv statement whose diagnostic_class is used. Where PTB-XL has the finding only as a form
#: statement without a class (TAB_, INVT, STD_, STE_, LPR), the class of the diagnostic statement it stands for
#: (NDT / NST_ / ISC_ -> STTC, 1AVB -> CD) is used, because these sources give no second, diagnostic code.
CODE_CLASSES: dict[str, tuple[str, ...]] = {
    # ---- NORM-compatible: sinus rhythm at any rate (PTB-XL: SR, SARRH, SBRAD, STACH are rhythm statements and
    # PTB-XL gives NORM beside them; rate alone is not a diagnostic superclass)
    "426783006": NORMAL,  # sinus rhythm, NSR (= SR)
    "427393009": NORMAL,  # sinus arrhythmia, SA (= SARRH)
    "426177001": NORMAL,  # sinus bradycardia, SB (= SBRAD)
    "427084000": NORMAL,  # sinus tachycardia, STach (= STACH)
    # ---- MI: infarction, acute or old (= IMI, AMI, ASMI, ALMI, LMI, PMI ... all MI)
    "164865005": MI,  # myocardial infarction, MI
    "57054005": MI,  # acute myocardial infarction, AMI
    "54329005": MI,  # anterior myocardial infarction, AnMI (= AMI)
    "164867002": MI,  # old myocardial infarction, OldMI
    # ---- STTC: ST-T changes, ischaemia without infarction, long QT
    "428750005": STTC,  # nonspecific st t abnormality, NSSTTA (= NDT / NST_)
    "55930002": STTC,  # s t changes, STC (= NST_)
    "164930006": STTC,  # st interval abnormal, STIAb (= NST_)
    "429622005": STTC,  # st depression, STD (PTB-XL STD_: form only)
    "704997005": STTC,  # inferior ST segment depression, ISTD (PTB-XL STD_: form only)
    "164931005": STTC,  # st elevation, STE (PTB-XL STE_: form only)
    "164934002": STTC,  # t wave abnormal, TAb (PTB-XL TAB_: form only; NDT is STTC)
    "59931005": STTC,  # t wave inversion, TInv (PTB-XL INVT: form only)
    "164861001": STTC,  # myocardial ischemia, MIs (= ISC_)
    "413444003": STTC,  # acute myocardial ischemia, AMIs (= ISC_: ischaemia is STTC, only injury/infarction is MI)
    "413844008": STTC,  # chronic myocardial ischemia, CMI (= ISC_)
    "426434006": STTC,  # anterior ischemia, AnMIs (= ISCAN)
    "425419005": STTC,  # inferior ischaemia, IIs (= ISCIN)
    "425623009": STTC,  # lateral ischaemia, LIs (= ISCLA)
    "111975006": STTC,  # prolonged qt interval, LQT (= LNGQT)
    # ---- CD: bundle branch and fascicular blocks, AV blocks, intraventricular delay, pre-excitation
    "6374002": CD,  # bundle branch block, BBB
    "164909002": CD,  # left bundle branch block, LBBB (= CLBBB)
    "733534002": CD,  # complete left bundle branch block, CLBBB (= CLBBB)
    "251120003": CD,  # incomplete left bundle branch block, ILBBB (= ILBBB)
    "59118001": CD,  # right bundle branch block, RBBB (= CRBBB)
    "713427006": CD,  # complete right bundle branch block, CRBBB (= CRBBB)
    "713426002": CD,  # incomplete right bundle branch block, IRBBB (= IRBBB)
    "445118002": CD,  # left anterior fascicular block, LAnFB (= LAFB)
    "445211001": CD,  # left posterior fascicular block, LPFB (= LPFB)
    "698252002": CD,  # nonspecific intraventricular conduction disorder, NSIVCB (= IVCD)
    "82226007": CD,  # diffuse intraventricular block, DIB (= IVCD)
    "270492004": CD,  # 1st degree av block, IAVB (= 1AVB)
    "164947007": CD,  # prolonged pr interval, LPR (PTB-XL LPR: form only; a PR > 200 ms is 1AVB)
    "233917008": CD,  # av block, AVB (= 1AVB / 2AVB / 3AVB)
    "195042002": CD,  # 2nd degree av block, IIAVB (= 2AVB)
    "54016002": CD,  # mobitz type i wenckebach atrioventricular block, MoI (= 2AVB)
    "426183003": CD,  # mobitz type II atrioventricular block, IIAVBII (= 2AVB)
    "27885002": CD,  # complete heart block, CHB (= 3AVB)
    "204384007": CD,  # congenital incomplete atrioventricular heart block, CIAHB (= 2AVB)
    "74390002": CD,  # wolff parkinson white pattern, WPW (= WPW)
    "195060002": CD,  # ventricular pre excitation, VPEx (= WPW)
    # ---- HYP: ventricular hypertrophy, atrial overload / enlargement
    "164873001": HYP,  # left ventricular hypertrophy, LVH (= LVH)
    "89792004": HYP,  # right ventricular hypertrophy, RVH (= RVH)
    "266249003": HYP,  # ventricular hypertrophy, VH (= SEHYP / LVH / RVH)
    "370365005": ("HYP", "STTC"),  # left ventricular strain, LVS (LVH with secondary ST-T changes)
    "253352002": HYP,  # left atrial abnormality, LAA (= LAO/LAE)
    "67741000119109": HYP,  # left atrial enlargement, LAE (= LAO/LAE)
    "446813000": HYP,  # left atrial hypertrophy, LAH (= LAO/LAE)
    "253339007": HYP,  # right atrial abnormality, RAAb (= RAO/RAE)
    "446358003": HYP,  # right atrial hypertrophy, RAH (= RAO/RAE)
    "195126007": HYP,  # atrial hypertrophy, AH (= LAO/LAE or RAO/RAE)
    # ---- not diagnostic: non-sinus rhythms and tachycardias
    "164889003": NONE,  # atrial fibrillation, AF (= AFIB, rhythm)
    "195080001": NONE,  # atrial fibrillation and flutter, AFAFL
    "426749004": NONE,  # chronic atrial fibrillation, CAF
    "282825002": NONE,  # paroxysmal atrial fibrillation, PAF
    "314208002": NONE,  # rapid atrial fibrillation, RAF
    "164890007": NONE,  # atrial flutter, AFL (= AFLT, rhythm)
    "713422000": NONE,  # atrial tachycardia, ATach
    "426761007": NONE,  # supraventricular tachycardia, SVT (= SVTAC)
    "67198005": NONE,  # paroxysmal supraventricular tachycardia, PSVT (= PSVT)
    "251166008": NONE,  # atrioventricular node reentrant tachycardia, AVNRT
    "233897008": NONE,  # atrioventricular reentrant tachycardia, AVRT
    "426648003": NONE,  # junctional tachycardia, JTach
    "164895002": NONE,  # ventricular tachycardia, VTach
    "425856008": NONE,  # paroxysmal ventricular tachycardia, PVT
    "164896001": NONE,  # ventricular fibrillation, VF
    "111288001": NONE,  # ventricular flutter, VFL
    "426627000": NONE,  # bradycardia, Brady (not necessarily sinus)
    "74615001": NONE,  # brady tachy syndrome, BTS
    "106068003": NONE,  # atrial rhythm, ARH
    "233892002": NONE,  # accelerated atrial escape rhythm, AAR
    "29320008": NONE,  # atrioventricular junctional rhythm, AVJR
    "426664006": NONE,  # accelerated junctional rhythm, AJR
    "426995002": NONE,  # junctional escape, JE
    "49260003": NONE,  # idioventricular rhythm, IR
    "61277005": NONE,  # accelerated idioventricular rhythm, AIVR
    "81898007": NONE,  # ventricular escape rhythm, VEsR
    "17366009": NONE,  # sinus atrium to atrial wandering rhythm, SAAWR
    "195101003": NONE,  # wandering atrial pacemaker, WAP
    "50799005": NONE,  # atrioventricular dissociation, AVD
    "65778007": NONE,  # sinoatrial block, SAB
    "5609005": NONE,  # sinus arrest, SARR
    "60423000": NONE,  # sinus node dysfunction, SND
    "698247007": NONE,  # cardiac dysrhythmia, CD
    # ---- not diagnostic: ectopic beats and patterns (PTB-XL PAC, PVC, PRC(S): form; BIGU, TRIGU: rhythm)
    "284470004": NONE,  # premature atrial contraction, PAC
    "63593006": NONE,  # supraventricular premature beats, SVPB
    "251170000": NONE,  # blocked premature atrial contraction, BPAC
    "251173003": NONE,  # atrial bigeminy, AB
    "251168009": NONE,  # supraventricular bigeminy, SVB
    "251187003": NONE,  # atrial escape beat, AED
    "251164006": NONE,  # junctional premature complex, JPC
    "427172004": NONE,  # premature ventricular contractions, PVC
    "17338001": NONE,  # ventricular premature beats, VPB
    "164884008": NONE,  # ventricular ectopics, VEB
    "251182009": NONE,  # paired ventricular premature complexes, VPVC
    "11157007": NONE,  # ventricular bigeminy, VBig
    "251180001": NONE,  # ventricular trigeminy, VTrig
    "75532003": NONE,  # ventricular escape beat, VEsB
    "13640000": NONE,  # fusion beats, FB
    # ---- not diagnostic: pacing (PTB-XL PACE: rhythm)
    "10370003": NONE,  # pacing rhythm, PR
    "251268003": NONE,  # atrial pacing pattern, AP
    "251266004": NONE,  # ventricular pacing pattern, VPP
    # ---- not diagnostic: axis and rotation (PTB-XL keeps the axis apart from its statements)
    "39732003": NONE,  # left axis deviation, LAD
    "47665007": NONE,  # right axis deviation, RAD
    "251200008": NONE,  # indeterminate cardiac axis, ICA
    "251198002": NONE,  # clockwise rotation, CR
    "251199005": NONE,  # countercolockwise rotation, CCR
    "61721007": NONE,  # clockwise or counterclockwise vectorcardiographic loop, CVCL/CCVCL
    # ---- not diagnostic: form findings PTB-XL has only as form statements without a class, or not at all
    "164951009": NONE,  # abnormal QRS, abQRS (= ABQRS, form)
    "164917005": NONE,  # qwave abnormal, QAb (= QWAVE, form)
    "251146004": NONE,  # low qrs voltages, LQRSV (= LVOLT, form)
    "55827005": NONE,  # left ventricular high voltage, LVHV (= VCLVH, form: voltage criteria alone are not LVH)
    "67751000119106": NONE,  # right atrial high voltage, RAHV (P amplitude alone, as LVHV)
    "251223006": NONE,  # tall p wave, TPW (P amplitude alone, as LVHV)
    "251259000": NONE,  # high t-voltage, HTV
    "365413008": NONE,  # poor R wave Progression, PRWP
    "164921003": NONE,  # r wave abnormal, RAb
    "164942001": NONE,  # fqrs wave, FQRS
    "164912004": NONE,  # p wave change, PWC
    "251205003": NONE,  # prolonged P wave, PPW
    "164937009": NONE,  # u wave abnormal, UAb
    "49578007": NONE,  # shortened pr interval, SPRI
    "77867006": NONE,  # decreased qt interval, SQT
    "428417006": NONE,  # early repolarization, ERe (a normal variant or not: no PTB-XL statement)
    "418818005": NONE,  # brugada, BRU (no PTB-XL statement)
    "251139008": NONE,  # suspect arm ecg leads reversed, ALR (technical)
    # ---- not diagnostic: clinical diagnoses, not ECG findings
    "53741008": NONE,  # coronary heart disease, CHD
    "84114007": NONE,  # heart failure, HF
    "368009": NONE,  # heart valve disorder, HVD
    "266257000": NONE,  # transient ischemic attack, TIA
    # ---- in neither mapping table (record JS20006, abbreviation "?" in labels.csv); meaning not established
    "251238007": NONE,
}


@dataclass(frozen=True)
class CincRow:
    """One labelled CinC 2021 record: name (``"E00004"``), source folder, (5,) float32 label, codes, record path."""

    record: str
    source: str
    labels: np.ndarray
    codes: tuple[str, ...]
    path: Path


def code_label(codes: list[str] | tuple[str, ...]) -> np.ndarray | None:
    """(5,) superclass label of one record's SNOMED-CT codes, or None when it has none (see ``superclass``).

    A code missing from :data:`CODE_CLASSES` counts as not diagnostic.
    """
    return record_label(CODE_CLASSES.get(code, NONE) for code in codes)


def read_labels(root: Path) -> list[dict[str, str]]:
    """The rows of ``root/labels.csv`` as dicts (one per record present)."""
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def read_index(root: Path) -> list[CincRow]:
    """Every record of ``root/labels.csv`` that has a label and no flat lead, in file order."""
    out = []
    for row in read_labels(root):
        codes = tuple(c for c in row["dx_snomed"].split(";") if c)
        labels = code_label(codes)
        if labels is None or row["flat_leads"].strip():
            continue
        out.append(CincRow(row["record"], row["source"], labels, codes, root / row["source"] / row["record"]))
    return out


def part_of(record: str, seed: int, test_fraction: float, val_fraction: float) -> str:
    """``"test"``, ``"val"`` or ``"train"`` for one record name, from a seeded hash of the name alone."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{record}".encode()).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def split(rows: list[CincRow], seed: int, test_fraction: float, val_fraction: float) -> dict[str, list[CincRow]]:
    """Rows by split part (each record's part depends on its name and ``seed`` only), in input order."""
    parts: dict[str, list[CincRow]] = {"train": [], "val": [], "test": []}
    for r in rows:
        parts[part_of(r.record, seed, test_fraction, val_fraction)].append(r)
    return parts

