"""Which records to replay: discovery and selection in PTB-XL's native layout, any WFDB folder, and the bundled sample.

Nothing is read here beyond directory listings and PTB-XL's two CSV files; signals and annotations are read by
:mod:`offline.records` when a replay starts.
"""

from __future__ import annotations

import ast
import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge.ecg import PTBXL_SUPERCLASSES

log = logging.getLogger(__name__)

PTBXL_RATES_HZ: tuple[int, ...] = (500, 100)
_PTBXL_DATABASE = "ptbxl_database.csv"
_PTBXL_STATEMENTS = "scp_statements.csv"


class SourceError(ValueError):
    """A data folder, index file or record id that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ReplaySource:
    """One record to replay and what is known about it before reading it.

    Attributes:
        name: record name (file stem, e.g. ``"100"``, ``"06000_hr"``).
        path: record path without extension (``…/mitdb/100``).
        dataset: ``"ptbxl"`` or ``"wfdb"``.
        labels: PTB-XL diagnostic superclasses (:data:`edge.ecg.PTBXL_SUPERCLASSES` order); empty elsewhere.
        info: extra metadata carried into the truth message (PTB-XL: ``ecg_id``, ``strat_fold``, ``scp_codes``).
    """

    name: str
    path: Path
    dataset: str = "wfdb"
    labels: tuple[str, ...] = ()
    info: dict[str, object] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------------- PTB-XL
def ptbxl_records(
    data_dir: str | Path,
    ids: Iterable[int] | None = None,
    folds: Iterable[int] | None = None,
    count: int | None = None,
    rate: str | int = "auto",
) -> list[ReplaySource]:
    """Records of a PTB-XL download in its native PhysioNet layout, in ``ecg_id`` order (or the order of ``ids``).

    Args:
        data_dir: folder holding ``ptbxl_database.csv``, ``scp_statements.csv`` and ``records500/`` and/or
            ``records100/``.
        ids: ``ecg_id`` values to take (each must exist in the CSV), or None for all.
        folds: ``strat_fold`` values (1–10) to keep, or None for all.
        count: keep at most this many records after the other filters, or None for all.
        rate: ``500`` or ``100`` (Hz) for that rate's folder, ``"auto"`` for 500 Hz when present else 100 Hz.
            When the asked folder is missing, the other one is used and a warning is logged.

    Raises:
        SourceError: missing folder or CSV, unknown id, missing record files for an asked id, nothing selected.
    """
    root = _existing_dir(data_dir, "PTB-XL folder")
    rate_hz = _ptbxl_rate(root, rate)
    column = "filename_hr" if rate_hz == 500 else "filename_lr"
    classes = _scp_superclasses(root / _PTBXL_STATEMENTS)
    rows = {int(float(row["ecg_id"])): row for row in _read_csv(root / _PTBXL_DATABASE)}
    if ids is not None:
        wanted = list(dict.fromkeys(int(i) for i in ids))
        unknown = [i for i in wanted if i not in rows]
        if unknown:
            raise SourceError(f"PTB-XL ecg_id {_short(unknown)} not in {root / _PTBXL_DATABASE}")
    else:
        wanted = sorted(rows)
    if folds is not None:
        fold_set = {int(f) for f in folds}
        wanted = [i for i in wanted if int(float(rows[i]["strat_fold"])) in fold_set]
    sources: list[ReplaySource] = []
    skipped: list[int] = []
    for ecg_id in wanted:
        if count is not None and len(sources) >= count:
            break
        row = rows[ecg_id]
        path = root / row[column]
        if not path.with_suffix(".hea").is_file():
            if ids is not None:
                raise SourceError(f"PTB-XL ecg_id {ecg_id}: no record at {path}.hea")
            skipped.append(ecg_id)
            continue
        scp = ast.literal_eval(row["scp_codes"]) if row.get("scp_codes") else {}
        present = {classes[code] for code in scp if code in classes}
        sources.append(ReplaySource(
            name=path.name,
            path=path,
            dataset="ptbxl",
            labels=tuple(c for c in PTBXL_SUPERCLASSES if c in present),
            info={"ecg_id": ecg_id, "strat_fold": int(float(row["strat_fold"])), "scp_codes": scp},
        ))
    if skipped:
        log.warning("skipped %d PTB-XL records without files in %s (e.g. ecg_id %s)",
                    len(skipped), root / f"records{rate_hz}", _short(skipped))
    if not sources:
        raise SourceError(f"no PTB-XL record in {root} matches ids={_short(ids)} folds={_short(folds)}")
    return sources


def _ptbxl_rate(root: Path, rate: str | int) -> int:
    """The sampling rate (Hz) whose ``records<rate>/`` folder to use."""
    text = str(rate).strip().lower()
    present = [r for r in PTBXL_RATES_HZ if (root / f"records{r}").is_dir()]
    if not present:
        raise SourceError(f"{root} has neither records500/ nor records100/ (not a PTB-XL download?)")
    if text == "auto":
        return present[0]
    if text not in {str(r) for r in PTBXL_RATES_HZ}:
        raise SourceError(f"PTB-XL rate {rate!r} is not 500, 100 or auto")
    asked = int(text)
    if asked not in present:
        log.warning("PTB-XL: %s has no records%d/; using records%d/ instead", root, asked, present[0])
        return present[0]
    return asked


def _scp_superclasses(path: Path) -> dict[str, str]:
    """Diagnostic SCP code -> superclass (``diagnostic_class``) from ``scp_statements.csv``."""
    out = {}
    for row in _read_csv(path):
        code = (row.get("scp_code") or row.get("") or "").strip()
        klass = (row.get("diagnostic_class") or "").strip()
        if code and klass and (row.get("diagnostic") or "").strip() in ("1", "1.0"):
            out[code] = klass
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SourceError(f"missing {path.name} in {path.parent}")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------- WFDB folders
def wfdb_records(
    folder: str | Path, names: Sequence[str] | None = None, count: int | None = None
) -> list[ReplaySource]:
    """Records of a WFDB folder (MIT-BIH, QTDB, LUDB …), in ``RECORDS`` order, else sorted header names.

    Without a ``RECORDS`` file every ``*.hea`` in the folder is a record, or in its ``data/`` subfolder when the
    folder itself has none (LUDB's layout).

    Args:
        folder: the WFDB folder.
        names: record names to take, in this order (``"100"``, or a ``RECORDS`` entry such as ``"data/1"``).
        count: keep at most this many records, or None for all.

    Raises:
        SourceError: missing folder, no records, unknown name.
    """
    root = _existing_dir(folder, "WFDB folder")
    entries = _wfdb_entries(root)
    if not entries:
        raise SourceError(f"no WFDB records (RECORDS file or *.hea) in {root}")
    if names is not None:
        by_name = {**{Path(e).name: e for e in entries}, **{e: e for e in entries}}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            have = _short([Path(e).name for e in entries])
            raise SourceError(f"no record {_short(unknown)} in {root} (it has {have})")
        entries = list(dict.fromkeys(by_name[n] for n in names))
    if count is not None:
        entries = entries[:count]
    sources = []
    for entry in entries:
        path = root / entry
        if not path.with_suffix(path.suffix + ".hea").is_file():
            raise SourceError(f"record {entry} is listed in {root / 'RECORDS'} but {path}.hea is missing")
        sources.append(ReplaySource(name=path.name, path=path))
    return sources


def _wfdb_entries(root: Path) -> list[str]:
    records_file = root / "RECORDS"
    if records_file.is_file():
        return [line.strip() for line in records_file.read_text().splitlines() if line.strip()]
    for sub in (root, root / "data"):
        headers = sorted(sub.glob("*.hea"), key=lambda p: _natural_key(p.stem))
        if headers:
            return [str(p.relative_to(root).with_suffix("")) for p in headers]
    return []


def _natural_key(name: str) -> tuple:
    """Sort ``2`` before ``10`` but keep non-numeric names in text order."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


# ---------------------------------------------------------------------------------------------- bundled sample
def sample_dir() -> Path:
    """Folder of the bundled demo sample (4 LUDB records, 2 one-minute MIT-BIH excerpts; see its SOURCE.md)."""
    return Path(str(resources.files("simulator") / "sample"))


def sample_records() -> list[ReplaySource]:
    """The bundled demo sample's records, in ``RECORDS`` order."""
    return wfdb_records(sample_dir())


# ---------------------------------------------------------------------------------------------- helpers
def _existing_dir(path: str | Path, what: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise SourceError(f"{what} {root} does not exist")
    return root


def _short(values: Iterable[object] | None, limit: int = 8) -> str:
    """``1, 2, 3 …`` (at most ``limit`` items) for one-line messages; ``all`` for None."""
    if values is None:
        return "all"
    items = [str(v) for v in values]
    return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")
