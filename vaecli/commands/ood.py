"""`vae ood`: each score as an out-of-distribution detector between two image sets."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import (
    compute_scores,
    has_single_latent,
    open_model,
    parse_scores,
    refuse_conditional,
    refuse_hierarchical,
    settings,
)
from vaecli.commands.options import (
    FIGURE_SUFFIX,
    SCORE_NAMES,
    BinarizeOption,
    DataRootOption,
    DecodeRowsOption,
    DeviceOption,
    IwSamplesOption,
    JsonOption,
    ModelOption,
    QuietOption,
    RegretStepsOption,
    ScoreSeedOption,
    complete_dataset,
    limit_option,
    out_option,
    scores_option,
)
from vaecli.errors import SettingError, UsageError
from vaecli.store.bundled import model_name
from vaecli.store.files import check_output_file, write_atomic
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    import torch

    from vaecli.store.checkpoint import Checkpoint

SET_HELP = ("A dataset name such as cifar10 or torchvision:NAME (its test split), or a folder of PNG/JPEG "
            "images (all of them, in name order).")


def ood_command(
    known: Annotated[
        str, typer.Option("--known", help=f"The images the model should know (its own data). {SET_HELP}",
                          autocompletion=complete_dataset)
    ],
    unusual: Annotated[
        str, typer.Option("--unusual", help=f"The images to flag as unusual (the positives). {SET_HELP}",
                          autocompletion=complete_dataset)
    ],
    model: ModelOption = None,
    scores: Annotated[
        list[str] | None,
        scores_option(f"Scores to compare [default: all of {', '.join(SCORE_NAMES)}; regret only on a one-layer "
                      "model]"),
    ] = None,
    limit: Annotated[int | None, limit_option("Use only the first N images of each set.")] = None,
    iw_samples: IwSamplesOption = 100,
    regret_steps: RegretStepsOption = 50,
    binarize: BinarizeOption = False,
    roc: Annotated[
        Path | None, out_option(f"the ROC curves as a PNG file (FILE{FIGURE_SUFFIX}) [default: no figure]",
                                   show_default=False),
    ] = None,
    json_out: JsonOption = False,
    decode_rows: DecodeRowsOption = None,
    data_root: DataRootOption = None,
    seed: ScoreSeedOption = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """AUROC, AUPRC and FPR at 95% TPR of each score, the --unusual images being the positives.

    Each score flags an image when it is high. The table goes to stderr; --json writes it to stdout.

    \b
    Example: vae ood -m fashion-mnist --known fashion-mnist --unusual mnist --limit 2000 -o roc.png

    The old names work until the next release, with a warning: --in (now --known), --roc (now -o/--out) and
    --out DATASET (now --unusual). An --out is read the old way when --unusual is absent and its value does
    not end in .png; --out FILE.png without --unusual is refused as ambiguous.
    """
    term = Terminal(quiet=quiet)
    names = parse_scores(scores or [",".join(SCORE_NAMES)])
    if roc is not None:
        check_output_file(roc, "--out")
    checkpoint = open_model(term, model, device)
    refuse_conditional(checkpoint, model_name(checkpoint.path), "ood")
    names = _supported_defaults(term, checkpoint, names) if scores is None else names
    if "regret" in names:
        refuse_hierarchical(checkpoint, model_name(checkpoint.path), "--score regret")
    from vaecli.analysis.scores import check_scoring_fits

    check_scoring_fits(checkpoint.config.model, next(checkpoint.model.parameters()).device, names, iw_samples,
                       decode_rows, limit)
    started = time.perf_counter()
    score_settings = settings(iw_samples, regret_steps, seed, decode_rows)
    # The report keeps the detection literature's roles, in and out (of distribution), as its JSON always has.
    specs = {"in": known, "out": unusual}
    options = {"in": "--known", "out": "--unusual"}
    images = {role: read_set(checkpoint, spec, options[role], data_root, limit) for role, spec in specs.items()}
    sets, seconds = {}, {}
    for role, spec in specs.items():  # both sets are read before either is scored: errors come first
        term.note(f"scoring {len(images[role])} {spec} images ({options[role]}): {', '.join(names)}")
        sets[role], spent = compute_scores(term, checkpoint, images[role], names, score_settings, binarize,
                                           label=role)
        seconds.update({k: seconds.get(k, 0.0) + v for k, v in spent.items()})
    results = _measure(sets, names)
    report = {
        "model": model_name(checkpoint.path), "in": known, "out": unusual,
        "images_in": len(sets["in"][names[0]]), "images_out": len(sets["out"][names[0]]),
        "iw_samples": iw_samples, "regret_steps": regret_steps, "binarized": binarize, "seed": seed,
        "scores": results, "score_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    _print_table(term, report, names)
    if roc is not None:
        written = _write_roc(roc, sets, results, f"{report['model']}: {known} (in) vs {unusual} (out)")
        report["roc"] = str(written)
        if not json_out:
            term.emit(str(written))
    if json_out:
        term.emit(json.dumps(report))


def _supported_defaults(term: Terminal, checkpoint: Checkpoint, names: tuple[str, ...]) -> tuple[str, ...]:
    """The default scores the model supports: regret refits a single latent, which a hierarchical model lacks."""
    if has_single_latent(checkpoint) or "regret" not in names:
        return names
    arch = checkpoint.config.model.arch
    kept = tuple(name for name in names if name != "regret")
    term.note(f"scores: {', '.join(kept)}; regret left out, as it refits the single latent of a one-layer model "
              f"and this is a hierarchical VAE (--arch {arch})")
    return kept


def read_set(checkpoint: Checkpoint, spec: str, option: str, data_root: Path | None,
             limit: int | None) -> torch.Tensor:
    """A dataset's test split, or every image of a folder in name order, as uint8 (N, C, H, W)."""
    import torch

    from vaecli.data.datasets import DATASET_NAMES, check_dataset_size, is_builtin, list_image_files, load_dataset
    from vaecli.data.images import load_image
    from vaecli.data.torchvision_sets import PREFIX

    shape = checkpoint.config.model.image_shape
    if is_builtin(spec):  # a name, torchvision:NAME included, as --dataset takes it elsewhere
        try:
            return load_dataset(spec, "test", data_root=data_root, shape=shape, limit=limit).images
        except SettingError as exc:  # name the option the user typed, not --dataset
            renamed = named_as(exc.message, option)
            if renamed == exc.message:
                raise
            raise type(exc)(renamed) from None
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{option} {spec}: not a dataset name or a folder; use one of "
                         f"{', '.join(DATASET_NAMES)}, {PREFIX}NAME, or the path of a folder of images")
    files = list_image_files(folder)[:limit]
    if not files:
        raise UsageError(f"{option} {spec}: no PNG or JPEG images found; check the folder")
    check_dataset_size(len(files), shape, f"{option} {spec}")
    return torch.stack([load_image(path, shape) for path in files])


# The library's `dataset` setting, as `dataset` or `dataset=VALUE` (which the terminal would show as --dataset).
_DATASET_SETTING = re.compile(r"`dataset(?:=([^`]*))?`")


def named_as(message: str, option: str) -> str:
    """A message about the `dataset` setting that names `option` instead (--known or --unusual), since that is
    what the user typed; library messages still written with a leading --dataset are renamed too."""
    if message.startswith("--dataset "):
        return option + message[len("--dataset"):]
    return _DATASET_SETTING.sub(lambda match: option if match[1] is None else f"{option} {match[1]}", message)


def _measure(sets: dict[str, dict[str, list[float]]], names: tuple[str, ...]) -> dict[str, dict]:
    from dataclasses import asdict

    from vaecli.analysis.detection import detection_metrics

    return {name: {key: round(value, 6) for key, value in
                   asdict(detection_metrics(sets["in"][name], sets["out"][name], name)).items()}
            for name in names}


# The table's columns: heading and least width (the score's name is left-aligned, the numbers right-aligned).
TABLE_COLUMNS = (("score", 12), ("AUROC", 8), ("AUPRC", 8), ("FPR@95", 8), ("mean in", 11), ("mean out", 11),
                 ("seconds", 9))
# Means past this many nats are written in scientific notation: a model that blows up on a set (1e12 nats)
# then reads as such, and its digits cannot fill the column.
PLAIN_MEAN_LIMIT = 1e6


def _print_table(term: Terminal, report: dict, names: tuple[str, ...]) -> None:
    term.note(f"{report['images_in']} {report['in']} (in) vs {report['images_out']} {report['out']} (out, "
              f"the positive class); a high score flags an image")
    for line in table_lines(report, names):
        term.note(line)
    term.note(f"time {report['elapsed_s']:.1f} s in all")


def table_lines(report: dict, names: tuple[str, ...]) -> list[str]:
    """The heading and one line per score, each column as wide as its widest cell needs (at least its least width)."""
    rows = [tuple(heading for heading, _ in TABLE_COLUMNS), *(_table_cells(report, name) for name in names)]
    # A right-aligned cell keeps one space before it; the name column is followed by the next one's.
    widths = [max(least, *(len(row[i]) + (i > 0) for row in rows)) for i, (_, least) in enumerate(TABLE_COLUMNS)]
    return ["".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in
                    enumerate(zip(row, widths, strict=True))) for row in rows]


def _table_cells(report: dict, name: str) -> tuple[str, ...]:
    row = report["scores"][name]
    seconds = report["score_seconds"]
    spent = seconds.get("elbo" if name in ("recon", "kl") else name, 0.0)
    if name == "complexity":
        spent += seconds.get("nll", 0.0)
    return (name, f"{row['auroc']:.3f}", f"{row['auprc']:.3f}", f"{row['fpr_at_95_tpr']:.3f}",
            _mean_text(row["mean_in"]), _mean_text(row["mean_out"]), f"{spent:.1f}")


def _mean_text(value: float) -> str:
    return f"{value:.2f}" if abs(value) < PLAIN_MEAN_LIMIT else f"{value:.3e}"


def _write_roc(path: Path, sets: dict, results: dict, title: str) -> Path:
    from vaecli.analysis.detection import roc_points
    from vaecli.figures.plots import roc_curves_png

    curves = {name: (*roc_points(sets["in"][name], sets["out"][name], name), results[name]["auroc"])
              for name in results}
    return write_atomic(path, roc_curves_png(curves, title))
