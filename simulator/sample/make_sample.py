"""Rebuild the bundled demo sample from ``../shared/data`` (run from the repository root; needs ``wfdb``).

    .venv/bin/python simulator/sample/make_sample.py [DATA_DIR]

What it writes next to this script (≈ 0.7 MB in all; see SOURCE.md for attribution and licences):

* ``ludb/<n>.*`` — LUDB records 1 (sinus bradycardia), 2 (sinus rhythm), 8 (atrial fibrillation) and
  114 (sinus tachycardia): byte-for-byte copies of the header, the signal file and the twelve per-lead wave
  annotation files (``.i`` … ``.v6``).
* ``mitdb/mitdb100.*`` and ``mitdb/mitdb119.*`` — 60-second excerpts of MIT-BIH records 100 (0:00–1:00, sinus
  rhythm with atrial premature beats) and 119 (18:00–19:00, ventricular bigeminy), written as new WFDB records
  with the original digital samples (format 212, 200 adu/mV, baseline 1024) and the reference annotations
  (``.atr``) cropped to the excerpt and shifted to start at sample 0. The rhythm in force at the cut is
  repeated as a ``+`` annotation at sample 0 so that the excerpt's rhythm labels stay complete.
* ``RECORDS`` — the six record paths, in replay order.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parent
LUDB_RECORDS = ("1", "2", "8", "114")
LUDB_LEAD_EXTENSIONS = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")
#: (MIT-BIH record, excerpt start (s), excerpt length (s))
MITDB_EXCERPTS = (("100", 0, 60), ("119", 18 * 60, 60))


def copy_ludb(data: Path) -> list[str]:
    """Copy the LUDB records verbatim; return their RECORDS entries."""
    out = HERE / "ludb"
    out.mkdir(exist_ok=True)
    for name in LUDB_RECORDS:
        for ext in ("hea", "dat", *LUDB_LEAD_EXTENSIONS):
            shutil.copyfile(data / "ludb" / "data" / f"{name}.{ext}", out / f"{name}.{ext}")
    return [f"ludb/{name}" for name in LUDB_RECORDS]


def excerpt_mitdb(data: Path, name: str, start_s: int, length_s: int) -> str:
    """Write a cropped MIT-BIH record and its cropped ``.atr``; return its RECORDS entry."""
    out = HERE / "mitdb"
    out.mkdir(exist_ok=True)
    src = data / "mitdb" / name
    header = wfdb.rdheader(str(src))
    start = int(start_s * header.fs)
    stop = start + int(length_s * header.fs)
    rec = wfdb.rdrecord(str(src), sampfrom=start, sampto=stop, physical=False)
    new_name = f"mitdb{name}"
    wfdb.wrsamp(
        new_name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal,
        fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline,
        comments=[f"excerpt of MIT-BIH Arrhythmia Database record {name}, {start_s} s to {start_s + length_s} s",
                  *rec.comments],
        write_dir=str(out),
    )
    ann = wfdb.rdann(str(src), "atr")
    sample = np.asarray(ann.sample)
    keep = (sample >= start) & (sample < stop)
    symbol = list(np.asarray(ann.symbol)[keep])
    aux = list(np.asarray(ann.aux_note, dtype=object)[keep])
    fields = {key: list(np.asarray(getattr(ann, key))[keep]) for key in ("subtype", "chan", "num")}
    new_sample = list(sample[keep] - start)
    rhythm_before = [a for s, a, sym in zip(sample, ann.aux_note, ann.symbol, strict=True)
                     if s < start and sym == "+"]
    if rhythm_before and not (new_sample and new_sample[0] == 0 and symbol[0] == "+"):
        new_sample.insert(0, 0)
        symbol.insert(0, "+")
        aux.insert(0, rhythm_before[-1])
        for key in fields:
            fields[key].insert(0, 0)
    wfdb.wrann(
        new_name, "atr", np.asarray(new_sample, dtype=np.int64), symbol=symbol, aux_note=aux,
        subtype=np.asarray(fields["subtype"]), chan=np.asarray(fields["chan"]), num=np.asarray(fields["num"]),
        fs=rec.fs, write_dir=str(out),
    )
    return f"mitdb/{new_name}"


def main(data: Path) -> None:
    entries = copy_ludb(data)
    entries += [excerpt_mitdb(data, name, start_s, length_s) for name, start_s, length_s in MITDB_EXCERPTS]
    (HERE / "RECORDS").write_text("".join(f"{entry}\n" for entry in entries))
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote {len(entries)} records to {HERE} ({total / 1e6:.2f} MB with docs)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
