"""``train`` command line: pretrain, fine-tune, evaluate, download data.

Every command reads a YAML config (a name in train/configs or a path) and applies the options given here on top.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import typer

from edge.config import Commands, error_line
from train import config

app = typer.Typer(
    help="Beat-SSL pretraining and fine-tuning (classification, wave segmentation).", no_args_is_help=True,
    cls=Commands,  # bad values and bad paths: one error line, no traceback
)
data_app = typer.Typer(help="Dataset download.", no_args_is_help=True)
app.add_typer(data_app, name="data")

#: PhysioNet database slugs of the downloadable datasets.
DATABASES: dict[str, str] = {"ptbxl": "ptb-xl", "ludb": "ludb"}


def _overrides(**dotted: Any) -> dict[str, Any]:
    """Nested override dict from ``section.key=value`` pairs whose value is not None."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is not None:
            config.set_dotted(out, key.replace("__", "."), value)
    return out


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one ``error:`` line and return the Exit to raise."""
    error_line(message)
    return typer.Exit(code)


def _load(config_name: str | None, overrides: dict[str, Any]) -> config.Config:
    """The config with its data folder and ``--init`` checkpoint checked (one error line when they are missing)."""
    try:
        cfg = config.load(config_name, overrides)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as exc:
        raise _fail(str(exc).strip("'\"")) from None
    root = cfg.data.root_path()
    if not root.is_dir():
        raise _fail(f"data folder {root} not found: give --data-root DIR (the folder holding ludb/, ptbxl/, mitdb/ …)")
    if cfg.run.init:
        _check_checkpoint(Path(cfg.run.init), "--init")
    return cfg


def _check_checkpoint(path: Path, what: str) -> None:
    """One error line unless ``path`` is a checkpoint written by pretrain / finetune."""
    import pickle
    import zipfile

    from train.checkpoint import read_checkpoint

    if not path.is_file():
        raise _fail(f"{what} {path}: no such file")
    try:
        read_checkpoint(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, KeyError,
            AttributeError) as exc:
        raise _fail(f"{what} {path} is not a checkpoint written by train pretrain / finetune "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None


def _run(cfg: config.Config) -> None:
    from train.loop import fit
    from train.tasks import make_task

    try:
        task = make_task(cfg)
    except (ValueError, FileNotFoundError) as exc:  # a setting the task refuses, a record missing
        raise _fail(str(exc).strip("'\"")) from None
    metrics = fit(cfg, task)
    if metrics:
        typer.echo(f"wrote {cfg.out_path() / 'model.pt'} and {cfg.out_path() / 'metrics.json'}")


ConfigOpt = typer.Option(
    ..., "--config", "-c", help="Config name in train/configs (e.g. cpu-small-pretrain) or YAML path."
)
OutOpt = typer.Option(None, help="Output folder for checkpoints and metrics (relative to the repository).")
DataOpt = typer.Option(None, help="Folder holding ludb/, ptbxl/, mitdb/ ... (default ../shared/data beside the repo).")
SeedOpt = typer.Option(None, help="Random seed (integer).")
EpochsOpt = typer.Option(None, help="Training epochs (passes over the training set).")
MinutesOpt = typer.Option(None, help="Wall-clock budget of the loop in minutes; stops cleanly when reached.")
BatchOpt = typer.Option(None, help="Batch size per process (items).")
LrOpt = typer.Option(None, help="Peak learning rate (AdamW).")
DeviceOpt = typer.Option(None, help="auto | cpu | cuda.")
ResumeOpt = typer.Option(None, "--resume/--no-resume", help="Continue from <out>/last.pt when it exists.")


@app.command()
def pretrain(
    config_name: str = ConfigOpt,
    out: str = OutOpt,
    data_root: str = DataOpt,
    seed: int = SeedOpt,
    epochs: int = EpochsOpt,
    max_minutes: float = MinutesOpt,
    batch_size: int = BatchOpt,
    lr: float = LrOpt,
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
    rhythm: str = typer.Option(None, help="Rhythm-level targets: hard | soft_1 | soft_2."),
    rhythm_exp: float = typer.Option(None, help="Exponent on the rhythm feature similarity (paper best: 50)."),
    beat: str = typer.Option(None, help="Beat-level targets: hard | soft_1 | soft_2 | none (no beat loss)."),
    beat_exp: float = typer.Option(None, help="Exponent on the beat similarity."),
    beat_weight: float = typer.Option(None, help="Lambda: total = rhythm + lambda * beat (dimensionless)."),
    temperature: float = typer.Option(None, help="Rhythm softmax temperature (dimensionless)."),
    view_leads: int = typer.Option(None, help="Leads drawn per augmented view (1..12)."),
) -> None:
    """Beat-SSL pretraining of the encoder on unlabelled 10 s windows."""
    cfg = _load(
        config_name,
        _overrides(
            run__out_dir=out, data__root=data_root, run__seed=seed, optim__epochs=epochs,
            optim__max_minutes=max_minutes, optim__batch_size=batch_size, optim__lr=lr, run__device=device,
            run__resume=resume, loss__rhythm=rhythm, loss__rhythm_exp=rhythm_exp, loss__beat=beat,
            loss__beat_exp=beat_exp, loss__beat_weight=beat_weight, loss__temperature=temperature,
            augment__view_leads=view_leads,
        ),
    )  # fmt: skip
    cfg.task = "pretrain"
    _run(cfg)


@app.command()
def finetune(
    task: str = typer.Option(
        ..., help="classify (PTB-XL superclasses) | segment (LUDB P/QRS/T) | beat-classify (MIT-BIH AAMI N/S/V/F/Q)."
    ),
    config_name: str = ConfigOpt,
    init: str = typer.Option(None, help="Checkpoint whose encoder initialises the model ('' = from scratch)."),
    label_fraction: float = typer.Option(None, help="Fraction of labelled training records (beats) used (0-1]."),
    beat_r_peaks: str = typer.Option(
        None, help="beat-classify: train and select on the reference (.atr) R peaks | the edge's detected ones "
        "(labelled from the matched reference beat; a detection matching none is trained as Q)."
    ),
    out: str = OutOpt,
    data_root: str = DataOpt,
    seed: int = SeedOpt,
    epochs: int = EpochsOpt,
    max_minutes: float = MinutesOpt,
    batch_size: int = BatchOpt,
    lr: float = LrOpt,
    freeze_encoder: bool = typer.Option(
        None, "--freeze-encoder/--train-encoder", help="Train only the new head / decoder (encoder weights fixed)."
    ),
    encoder_frozen_epochs: int = typer.Option(
        None, help="LP-FT: a pretrained encoder stays fixed for this many first epochs, then fine-tunes (0 = off)."
    ),
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
) -> None:
    """Fine-tune an encoder (pretrained with --init, or from scratch) for classification or segmentation."""
    cfg = _load(
        config_name,
        _overrides(
            task=task, run__init=init, data__label_fraction=label_fraction, data__beat_r_peaks=beat_r_peaks,
            run__out_dir=out, data__root=data_root,
            run__seed=seed, optim__epochs=epochs, optim__max_minutes=max_minutes, optim__batch_size=batch_size,
            optim__lr=lr, optim__freeze_encoder=freeze_encoder, optim__encoder_frozen_epochs=encoder_frozen_epochs,
            run__device=device, run__resume=resume,
        ),
    )  # fmt: skip
    if cfg.task not in ("classify", "segment", "beat-classify"):
        raise typer.BadParameter(f"--task must be classify, segment or beat-classify, not {cfg.task!r}")
    _run(cfg)


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="model.pt written by pretrain/finetune."),
    part: str = typer.Option("test", help="Split part: val | test."),
    data_root: str = DataOpt,
    out: Path = typer.Option(None, help="Write the metrics JSON here (default: print)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="With --out, also write PNGs next to the JSON: "
                               "loss curves, true vs predicted segmentation of 3 records or a confusion summary."),
) -> None:
    """Evaluate a fine-tuned checkpoint on its task's val or test part, with its stored config."""
    from train.checkpoint import load_checkpoint
    from train.tasks import make_task

    _check_checkpoint(checkpoint, "checkpoint")
    model, meta = load_checkpoint(checkpoint)
    cfg = config.load(None, meta["config"])
    if data_root:
        cfg.data.root = data_root
    cfg.run.init = ""
    task = make_task(cfg)
    if meta["task"] in ("classify", "beat-classify"):
        task.thresholds = [float(t) for t in meta["thresholds"]]
    metrics = task.evaluate(model, part)
    text = json.dumps(metrics, indent=2, default=float)
    if out:
        out.write_text(text)
        typer.echo(f"wrote {out}")
        if plots:
            for png in _evaluation_plots(task, model, meta["task"], part, checkpoint, out):
                typer.echo(f"wrote {png}")
    else:
        typer.echo(text)


def _evaluation_plots(task, model, kind: str, part: str, checkpoint: Path, out: Path) -> list[Path]:  # noqa: ANN001
    """PNGs next to ``out``: the run's loss curves (when its metrics.json has a history) and, for segment, true vs
    predicted labels of lead II of the first 3 records of ``part``; for classify, the per-class confusion summary."""
    from sklearn.metrics import multilabel_confusion_matrix

    from edge.ecg import INTERNAL_FS_HZ, LEADS_12, PTBXL_SUPERCLASSES
    from offline.plots import plot_confusion, plot_loss_curves, plot_segmentation

    written: list[Path] = []
    stem = out.with_suffix("")
    history_file = Path(checkpoint).parent / "metrics.json"
    history = json.loads(history_file.read_text()).get("history", []) if history_file.is_file() else []
    if history:
        curves = {"train_loss": [h["train_loss"] for h in history]}
        written.append(plot_loss_curves(curves, f"{stem}_loss.png", title=f"{kind}: training loss per epoch"))
    if kind == "segment":
        lead = LEADS_12.index("II")
        for name in task.parts[part][:3]:
            rec = task.records[name]
            pred = task.predict(model, rec.signal_mv[lead : lead + 1])[0]
            written.append(plot_segmentation(rec.signal_mv[lead], INTERNAL_FS_HZ, rec.labels[lead], pred,
                                             f"{stem}_segment_{name}.png", title=f"LUDB {name}, lead II ({part})"))
    elif kind == "classify" and len(task.sets[part]):
        y, scores = task.scores(model, part)
        pred = (scores >= np.asarray(task.thresholds)[None, :]).astype(int)
        matrices = multilabel_confusion_matrix(y.astype(int), pred, labels=list(range(len(PTBXL_SUPERCLASSES))))
        written.append(plot_confusion(matrices, PTBXL_SUPERCLASSES, f"{stem}_confusion.png",
                                      title=f"confusion per class ({part})"))
    return written


@data_app.command("download")
def download(
    dataset: str = typer.Argument(..., help="ptbxl | ludb."),
    dest: Path = typer.Option(None, help="Target folder (default <data root>/<dataset>)."),
) -> None:
    """Download a PhysioNet database with wfdb.dl_database (needs network access)."""
    import wfdb

    if dataset not in DATABASES:
        typer.echo(f"error: unknown dataset {dataset!r}; choose one of {sorted(DATABASES)}", err=True)
        raise typer.Exit(2)
    target = dest or config.DataConfig().root_path() / dataset
    target.mkdir(parents=True, exist_ok=True)
    try:
        wfdb.dl_database(DATABASES[dataset], dl_dir=str(target))
    except (OSError, ConnectionError) as exc:  # requests' errors derive from OSError
        typer.echo(f"error: cannot download {DATABASES[dataset]} from PhysioNet (offline?): {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"downloaded {DATABASES[dataset]} to {target}")


from train.engine_build import build_engine_command, quantize_engine_command  # noqa: E402


def _checked_build(command: Callable[..., None]) -> Callable[..., None]:
    """``build-engine`` that first checks its checkpoint (one error line for a file that is not one)."""

    @functools.wraps(command)
    def build(*args: Any, **kwargs: Any) -> None:
        _check_checkpoint(Path(kwargs["checkpoint"]), "checkpoint")
        command(*args, **kwargs)

    return build


app.command("build-engine")(_checked_build(build_engine_command))
app.command("quantize-engine")(quantize_engine_command)

if __name__ == "__main__":
    app()
