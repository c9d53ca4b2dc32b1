"""Acceptance run of train/: Beat-SSL pretraining (cpu-small), then LUDB segmentation fine-tuned from it versus
the same encoder from scratch (same config, same epochs, same run), and the PTB-XL classification smoke test.

Runs the ``train`` CLI stage by stage (each a subprocess, timed), then writes ``bench/train_report.md`` and
``bench/train_report.json`` from the stages' ``metrics.json``. ``--reuse`` skips stages whose model.pt exists.

    .venv/bin/python bench/train_report.py [--out runs/report] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from edge.ecg import PTBXL_SUPERCLASSES, WAVE_CLASSES

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "train.cli"]


def stages(out: str) -> dict[str, list[str]]:
    """Stage name -> CLI arguments (after ``train``)."""
    pre = f"{out}/pretrain/model.pt"
    return {
        "pretrain": ["pretrain", "-c", "cpu-small-pretrain", "--out", f"{out}/pretrain", "--no-resume"],
        "segment_pretrained": ["finetune", "--task", "segment", "-c", "cpu-small-finetune-segment", "--init", pre,
                               "--out", f"{out}/segment-pretrained", "--no-resume"],
        "segment_scratch": ["finetune", "--task", "segment", "-c", "cpu-small-finetune-segment",
                            "--out", f"{out}/segment-scratch", "--no-resume"],
        "classify": ["finetune", "--task", "classify", "-c", "cpu-small-finetune-classify", "--init", pre,
                     "--out", f"{out}/classify", "--no-resume"],
    }  # fmt: skip


def run_stage(name: str, args: list[str], folder: Path, reuse: bool) -> dict:
    """Run one stage unless reusable; returns its metrics.json plus the wall time (s) of the command."""
    if not (reuse and (folder / "model.pt").exists()):
        for stale in ("last.pt", "model.pt", "metrics.json", "log.jsonl"):
            (folder / stale).unlink(missing_ok=True)
        t0 = time.monotonic()
        print(f"== {name}: train {' '.join(args)}", flush=True)
        subprocess.run(TRAIN + args, cwd=REPO, check=True)
        (folder / "wall_s.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["wall_s"] = float((folder / "wall_s.txt").read_text())
    metrics.pop("history", None)
    return metrics


def seg_table(results: dict[str, dict]) -> list[str]:
    """Markdown rows: per class Dice, onset/offset F1 and error (mean ± sd ms), for each segmentation run."""
    lines = [
        "| run | wave | Dice | onset F1 | offset F1 | onset error ms (mean ± sd) | offset error ms (mean ± sd) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in ("segment_pretrained", "segment_scratch"):
        test = results[run]["test"]
        for wave in WAVE_CLASSES[1:]:
            w = test[wave]
            lines.append(
                f"| {run.removeprefix('segment_')} | {wave} | {w['dice']:.3f} | {w['onset']['f1']:.3f} | "
                f"{w['offset']['f1']:.3f} | {w['onset']['err_mean_ms']:+.1f} ± {w['onset']['err_sd_ms']:.1f} | "
                f"{w['offset']['err_mean_ms']:+.1f} ± {w['offset']['err_sd_ms']:.1f} |"
            )
        lines.append(
            f"| {run.removeprefix('segment_')} | **mean** | **{test['mean_dice']:.3f}** | "
            f"boundary F1 {test['mean_boundary_f1']:.3f} | | | |"
        )
    return lines


def verdict(results: dict[str, dict]) -> list[str]:
    """Acceptance targets, each marked met / not met from the measured numbers."""
    pre, scr = results["segment_pretrained"]["test"], results["segment_scratch"]["test"]
    qrs_f1 = min(pre["QRS"]["onset"]["f1"], pre["QRS"]["offset"]["f1"])
    checks = [
        (f"mean Dice >= 0.90 (pretrained: {pre['mean_dice']:.3f})", pre["mean_dice"] >= 0.90),
        (f"QRS onset and offset F1 >= 0.98 (pretrained: min {qrs_f1:.3f})", qrs_f1 >= 0.98),
        (
            f"pretrained >= scratch in mean Dice ({pre['mean_dice']:.4f} vs {scr['mean_dice']:.4f}; mean boundary F1 "
            f"{pre['mean_boundary_f1']:.4f} vs {scr['mean_boundary_f1']:.4f})",
            pre["mean_dice"] >= scr["mean_dice"],
        ),
    ]
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def write_report(results: dict[str, dict], out_md: Path) -> None:
    pre, cls = results["pretrain"], results["classify"]
    seg = results["segment_pretrained"]
    lines = [
        "# train/ acceptance report (cpu-small)",
        "",
        f"Written by `bench/train_report.py` on {platform.node()} ({os.cpu_count()} CPU cores, torch "
        f"{torch.__version__}, threads {torch.get_num_threads()}). The CPU may be shared with other jobs: wall "
        "times are upper bounds.",
        "",
        "## Stages",
        "",
        "| stage | epochs | steps | stopped by time budget | wall time (min) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in results.items():
        row = [name, m["epochs_done"], m["steps"], m["stopped_by_time"], f"{m['wall_s'] / 60:.1f}"]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += [
        "",
        "## LUDB wave segmentation (held-out test records)",
        "",
        f"Split by record (seed 0): {seg['test']['records']} test records x 12 leads = {seg['test']['leads']} "
        "single-lead windows, scored inside each lead's annotated span only. Boundary F1: an onset/offset matches a "
        "reference one within 150 ms (one-to-one, nearest first); errors are predicted - reference over matched "
        "boundaries. Same config, same epochs, same run for both rows; only the encoder initialisation differs.",
        "",
        *seg_table(results),
        "",
        "### Targets",
        "",
        *verdict(results),
        "",
        "## PTB-XL classification smoke test (10 records)",
        "",
        f"Encoder from the pretraining above, fine-tuned on folds 1-8 ({cls['val'].get('records', 0)} validation "
        f"records; thresholds: see the checkpoint's `thresholds_from`), tested on fold 10 "
        f"({cls['test']['records']} records). Far too small for a benchmark: this only shows the pipeline runs end "
        "to end.",
        "",
        "| class | AUROC | F1 |",
        "| --- | --- | --- |",
    ]
    for name in PTBXL_SUPERCLASSES:
        c = cls["test"]["per_class"][name]
        lines.append(f"| {name} | {c['auroc']:.3f} | {c['f1']:.3f} |")
    lines += [
        f"| macro | {cls['test']['macro_auroc']:.3f} ({cls['test']['auroc_classes_defined']} classes defined) | "
        f"{cls['test']['macro_f1']:.3f} |",
        "",
        "## Pretraining",
        "",
        f"{pre['epochs_done']} epochs, {pre['steps']} steps in {pre['wall_s'] / 60:.1f} min (incl. data preparation).",
        "",
    ]
    out_md.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/report", help="run folder (relative to the repository)")
    parser.add_argument("--reuse", action="store_true", help="skip stages whose model.pt exists")
    args = parser.parse_args()
    results = {
        name: run_stage(name, cli, REPO / cli[cli.index("--out") + 1], args.reuse)
        for name, cli in stages(args.out).items()
    }
    (REPO / "bench" / "train_report.json").write_text(json.dumps(results, indent=2, default=float))
    write_report(results, REPO / "bench" / "train_report.md")
    print(f"wrote {REPO / 'bench' / 'train_report.md'} and train_report.json")


if __name__ == "__main__":
    main()
