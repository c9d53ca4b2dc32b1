"""Acceptance run of train/: Beat-SSL pretraining (cpu-small), then LUDB segmentation fine-tuned from it versus
the same encoder from scratch (same config, same epochs, same run), and the PTB-XL classification smoke test.

Each fine-tuning pair (pretrained, scratch) runs for every ``--seeds`` seed (fine-tuning seed: batch order, head
initialisation, dropout; the record split stays fixed) and every ``--label-fractions`` fraction of the labelled
training records. The acceptance verdict uses the full-label runs averaged over seeds; the lower fractions show
where pretraining matters most (few labels). One more pair, first seed and all labels, keeps the encoder's weights
fixed (``--freeze-encoder``) and trains the decoder only: what the Beat-SSL features carry against random ones.

Runs the ``train`` CLI stage by stage (each a subprocess, timed), then writes ``bench/train_report.md`` and
``bench/train_report.json`` from the stages' ``metrics.json``. ``--reuse`` skips stages whose model.pt exists.

    .venv/bin/python bench/train_report.py [--out runs/report] [--reuse] [--seeds 0,1,2,3,4] [--label-fractions 1,0.25]
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

import numpy as np
import torch

from edge.ecg import PTBXL_SUPERCLASSES, WAVE_CLASSES
from train.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "train.cli"]


def seg_name(init: str, fraction: float, seed: int) -> str:
    """Stage name of one segmentation fine-tuning run (``init``: ``pretrained`` or ``scratch``)."""
    return f"segment_{init}_f{round(fraction * 100)}_s{seed}"


def frozen_name(init: str, seed: int) -> str:
    """Stage name of a full-label segmentation run whose encoder stays as initialised (``--freeze-encoder``)."""
    return f"segment_{init}_frozen_f100_s{seed}"


def stages(out: str, seeds: list[int], fractions: list[float]) -> dict[str, list[str]]:
    """Stage name -> CLI arguments (after ``train``)."""
    pre = f"{out}/pretrain/model.pt"

    def segment(name: str, init: str, seed: int, *extra: str) -> list[str]:
        return ["finetune", "--task", "segment", "-c", "cpu-small-finetune-segment",
                *(["--init", pre] if init == "pretrained" else []), "--seed", str(seed), *extra,
                "--out", f"{out}/{name.replace('_', '-')}", "--no-resume"]

    plan = {"pretrain": ["pretrain", "-c", "cpu-small-pretrain", "--out", f"{out}/pretrain", "--no-resume"]}
    for fraction in fractions:
        for seed in seeds:
            for init in ("pretrained", "scratch"):
                name = seg_name(init, fraction, seed)
                plan[name] = segment(name, init, seed, "--label-fraction", str(fraction))
    for init in ("pretrained", "scratch"):  # the encoder's features alone: decoder trained, encoder weights fixed
        name = frozen_name(init, seeds[0])
        plan[name] = segment(name, init, seeds[0], "--freeze-encoder")
    plan["classify"] = ["finetune", "--task", "classify", "-c", "cpu-small-finetune-classify", "--init", pre,
                        "--out", f"{out}/classify", "--no-resume"]
    return plan  # fmt: skip


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
    meta = read_checkpoint(folder / "model.pt")["meta"]
    metrics["optim"] = meta["config"]["optim"]
    split = meta.get("split")
    if split:  # segmentation: records per part (train after --label-fraction)
        metrics["split_records"] = {part: len(names) for part, names in split.items()}
    metrics.pop("history", None)
    return metrics


def seg_table(results: dict[str, dict], seed: int) -> list[str]:
    """Markdown rows: per class Dice, onset/offset F1 and error (mean ± sd ms), for the full-label runs of a seed."""
    lines = [
        "| run | wave | Dice | onset F1 | offset F1 | onset error ms (mean ± sd) | offset error ms (mean ± sd) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for init in ("pretrained", "scratch"):
        run = seg_name(init, 1.0, seed)
        test = results[run]["test"]
        for wave in WAVE_CLASSES[1:]:
            w = test[wave]
            lines.append(
                f"| {init} | {wave} | {w['dice']:.3f} | {w['onset']['f1']:.3f} | "
                f"{w['offset']['f1']:.3f} | {w['onset']['err_mean_ms']:+.1f} ± {w['onset']['err_sd_ms']:.1f} | "
                f"{w['offset']['err_mean_ms']:+.1f} ± {w['offset']['err_sd_ms']:.1f} |"
            )
        lines.append(
            f"| {init} | **mean** | **{test['mean_dice']:.3f}** | "
            f"boundary F1 {test['mean_boundary_f1']:.3f} | | | |"
        )
    return lines


def summary(results: dict[str, dict], init: str, fraction: float, seeds: list[int]) -> dict[str, np.ndarray]:
    """Per-seed test numbers of one (init, fraction) cell: mean Dice, mean boundary F1, min QRS on/off F1."""
    tests = [results[seg_name(init, fraction, seed)]["test"] for seed in seeds]
    return {
        "dice": np.array([t["mean_dice"] for t in tests]),
        "boundary_f1": np.array([t["mean_boundary_f1"] for t in tests]),
        "qrs_f1": np.array([min(t["QRS"]["onset"]["f1"], t["QRS"]["offset"]["f1"]) for t in tests]),
    }


def pm(values: np.ndarray, digits: int = 4) -> str:
    """``mean ± sd`` over seeds (sd with ddof=1; just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def fraction_table(results: dict[str, dict], seeds: list[int], fractions: list[float]) -> list[str]:
    """Markdown rows: each label fraction and init, its per-seed mean Dice and the mean ± sd of the main scores."""
    lines = [
        "| labelled train records | init | mean Dice per seed | mean Dice | boundary F1 | QRS on/off F1 (min) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fraction in fractions:
        n = results[seg_name("scratch", fraction, seeds[0])]["split_records"]["train"]
        for init in ("pretrained", "scratch"):
            s = summary(results, init, fraction, seeds)
            per_seed = ", ".join(f"{d:.4f}" for d in s["dice"])
            lines.append(f"| {fraction:.0%} ({n}) | {init} | {per_seed} | {pm(s['dice'])} | {pm(s['boundary_f1'])} | "
                         f"{pm(s['qrs_f1'], 3)} |")
    return lines


def frozen_table(results: dict[str, dict], seed: int) -> list[str]:
    """Markdown rows: frozen-encoder runs (pretrained vs random encoder), mean Dice and per-wave Dice."""
    lines = ["| encoder (weights fixed) | mean Dice | P | QRS | T | boundary F1 |", "| --- " * 6 + "|"]
    for init, label in (("pretrained", "Beat-SSL pretrained"), ("scratch", "random (scratch init)")):
        t = results[frozen_name(init, seed)]["test"]
        lines.append(f"| {label} | {t['mean_dice']:.4f} | {t['P']['dice']:.3f} | {t['QRS']['dice']:.3f} | "
                     f"{t['T']['dice']:.3f} | {t['mean_boundary_f1']:.4f} |")
    return lines


def verdict(results: dict[str, dict], seeds: list[int]) -> list[str]:
    """Acceptance targets on the full-label runs (mean over seeds), each marked met / not met."""
    pre, scr = summary(results, "pretrained", 1.0, seeds), summary(results, "scratch", 1.0, seeds)
    over = f"mean over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    checks = [
        (f"mean Dice >= 0.90 (pretrained, {over}: {pre['dice'].mean():.3f})", pre["dice"].mean() >= 0.90),
        (f"QRS onset and offset F1 >= 0.98 (pretrained, {over}: min {pre['qrs_f1'].mean():.3f})",
         pre["qrs_f1"].mean() >= 0.98),
        (
            f"pretrained >= scratch in mean Dice ({over}: {pre['dice'].mean():.4f} vs {scr['dice'].mean():.4f}; "
            f"boundary F1 {pre['boundary_f1'].mean():.4f} vs {scr['boundary_f1'].mean():.4f}; pretrained ahead in "
            f"{int((pre['dice'] >= scr['dice']).sum())} of {len(seeds)} seeds; per-seed difference "
            f"{(pre['dice'] - scr['dice']).min():+.4f} to {(pre['dice'] - scr['dice']).max():+.4f})",
            pre["dice"].mean() >= scr["dice"].mean(),
        ),
    ]
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def lp_ft_note(results: dict[str, dict], seeds: list[int]) -> str:
    """How the pretrained runs' fine-tuning differs, read from their checkpoint's config ('' when it does not)."""
    optim = results[seg_name("pretrained", 1.0, seeds[0])]["optim"]
    if not optim.get("encoder_frozen_epochs", 0):
        return ""
    return (f", except that a pretrained encoder is held fixed for the first {optim['encoder_frozen_epochs']} of "
            f"{optim['epochs']} epochs while the decoder learns, then trained with it (LP-FT, "
            "`optim.encoder_frozen_epochs`; the scratch encoder has nothing to preserve and trains throughout)")


def write_report(results: dict[str, dict], seeds: list[int], fractions: list[float], out_md: Path) -> None:
    pre, cls = results["pretrain"], results["classify"]
    seg = results[seg_name("pretrained", 1.0, seeds[0])]
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
        "boundaries. Same config, same epochs, same run for both inits; only the encoder initialisation differs"
        f"{lp_ft_note(results, seeds)}. Fine-tuning seeds {', '.join(map(str, seeds))} (the record split is the same "
        "for all).",
        "",
        "### Pretrained vs scratch, per label fraction (mean ± sd over seeds)",
        "",
        *fraction_table(results, seeds, fractions),
        "",
        f"### Per wave, all labels, seed {seeds[0]}",
        "",
        *seg_table(results, seeds[0]),
        "",
        f"### Frozen encoder: what the features alone carry (all labels, seed {seeds[0]})",
        "",
        "The same decoder trained on the same labels, on top of an encoder whose weights stay fixed "
        "(`--freeze-encoder`; batch-norm statistics still adapt): the Beat-SSL-pretrained one, or a random one.",
        "",
        *frozen_table(results, seeds[0]),
        "",
        "### Targets",
        "",
        *verdict(results, seeds),
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
    parser.add_argument("--seeds", default="0,1,2,3,4", help="fine-tuning seeds, comma-separated")
    parser.add_argument("--label-fractions", default="1,0.25",
                        help="fractions of the labelled training records, comma-separated (1 must be one of them)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = sorted({float(f) for f in args.label_fractions.split(",")}, reverse=True)
    if not seeds or fractions[0] != 1.0 or not all(0.0 < f <= 1.0 for f in fractions):
        parser.error("--seeds needs at least one seed and --label-fractions must include 1 (all in (0, 1])")
    results = {
        name: run_stage(name, cli, REPO / cli[cli.index("--out") + 1], args.reuse)
        for name, cli in stages(args.out, seeds, fractions).items()
    }
    settings = {"seeds": seeds, "label_fractions": fractions}
    (REPO / "bench" / "train_report.json").write_text(
        json.dumps({"settings": settings, **results}, indent=2, default=float))
    write_report(results, seeds, fractions, REPO / "bench" / "train_report.md")
    print(f"wrote {REPO / 'bench' / 'train_report.md'} and train_report.json")


if __name__ == "__main__":
    main()
