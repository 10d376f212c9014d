"""`vae info`: show what a checkpoint holds, without loading its weights."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any, Optional

import typer

from vaecli.commands.common import model_path
from vaecli.commands.options import JsonOption
from vaecli.console import printable, term

HISTORY_COLUMNS = ("epoch", "train", "test", "recon", "KL", "s", "img/s", "")
# Recorded `vae eval` runs, the headline first: the whole test split at K = 1000, then the quick check
# that tests re-run (see scripts/export_pretrained.py).
EVALUATION_KEYS = ("full_evaluation", "evaluation")
MISSING = "—"


def info_command(
    checkpoint: Annotated[
        Optional[str],
        typer.Argument(help="Checkpoint path or bundled name (default: as for -m).", show_default=False),
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="List every epoch, not only the best and the last.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Print a checkpoint's metadata: a summary with the best and last epochs, or JSON with --json.

    Example: vae info vae.safetensors --json | jq .history[-1].test
    """
    from vaecli.checkpoint import read_metadata

    path = model_path(checkpoint)
    meta = read_metadata(path)
    if json_out:
        term.emit(json.dumps(meta, indent=2, sort_keys=True))  # the file's own object, every key as it is
        return
    from vaecli.metadata import CheckpointMeta

    typed = CheckpointMeta.from_dict(meta)
    rows = _summary_rows(str(path), typed)
    title, table = _history_table(typed.history or [], every=history)
    # Off a terminal every value is written whole; on one, long values wrap at its width.
    text = _rich_text(rows, title, table) if sys.stdout.isatty() else _plain_text(rows, title, table)
    term.emit(text)


def _summary_rows(path: str, meta: Any) -> list[tuple[str, str]]:
    """(name, value) pairs describing the model, its test loss, its evaluations and its recipe."""
    config, model = meta.config, meta.config.model
    rows = [
        ("file", path),
        ("format", f"{meta.format} v{meta.format_version} (vaecli {meta.vaecli_version})"),
        ("architecture", f"{model.arch} (hidden {model.hidden})"),
        ("latent dim", str(model.latent_dim)),
        ("image shape", " x ".join(str(v) for v in model.image_shape)),
        ("likelihood", _likelihood(model)),
        ("prior", _prior_line(model.prior_components or 0, meta.prior)),
        ("dataset", str(config.dataset)),
        ("epochs done", f"{meta.epochs_done} of {config.epochs}"),
        ("seed", str(config.seed)),
    ]
    if meta.history:
        test = meta.history[-1].test
        rows.append(("test loss", _test_loss(meta, test)))
        if test is not None and test.active_units is not None:
            rows.append(("active units", f"{test.active_units} of {model.latent_dim} (KL > 0.01 nats)"))
    for key in EVALUATION_KEYS:
        rows += _evaluation_rows(meta.extra.get(key))
    if meta.recipe:
        rows += [(f"recipe step {i}", str(step)) for i, step in enumerate(meta.recipe, 1)]
    elif meta.command:
        rows.append(("command", meta.command))
    return rows


def _likelihood(model: Any) -> str:
    """p(x|z) by name; a logistic mixture with its number of components."""
    mixtures = getattr(model, "mixtures", 1)
    if model.likelihood == "logistic" and mixtures > 1:
        return f"logistic (discretized, mixture of {mixtures})"
    return "logistic (discretized, 8-bit)" if model.likelihood == "logistic" else str(model.likelihood)


def _test_loss(meta: Any, test: Any) -> str:
    """The last epoch's test -ELBO, or, for a prior fitted after it, the -ELBO under that prior."""
    loss, recon, kl = (_number(None if test is None else getattr(test, key)) for key in ("loss", "recon", "kl"))
    trained = f"{loss} nats (recon {recon}, KL {kl})"
    fit, recipe = meta.prior, meta.recipe
    # The prior was fitted after the last epoch when the fit is the recipe's last step.
    if not (isinstance(fit, dict) and recipe and fit.get("command") == recipe[-1]):
        return trained
    kl_fitted, recon_value = fit.get("test_kl_mixture"), None if test is None else test.recon
    same_images = fit.get("test_images") == (meta.dataset_info.n_test if meta.dataset_info else None)
    if not (_is_number(kl_fitted) and _is_number(recon_value) and same_images):
        return f"{trained} before the prior was fitted"
    # The fit keeps the encoder and decoder, so only the KL term changes (see vae fit-prior).
    return (f"{recon_value + kl_fitted:.2f} nats (recon {recon}, KL {kl_fitted:.2f} to the fitted prior); "
            f"{loss} before the fit")


def _evaluation_rows(record: Any) -> list[tuple[str, str]]:
    """A recorded `vae eval`: the importance-weighted -log p(x), its K and images, and the command."""
    if not isinstance(record, dict) or not _is_number(record.get("nll")):
        return []
    binarized = "binarized " if record.get("binarized") is True else ""
    images = f"{record.get('images')} {binarized}{record.get('dataset')} {record.get('split')} images"
    line = f"{record['nll']:.2f} nats (K = {record.get('iw_samples')}, {images})"
    elbo = record.get("neg_elbo", record.get("elbo"))  # `elbo` in files written before eval's JSON renamed it
    if isinstance(elbo, dict):
        line += (f"; -ELBO {_number(elbo.get('loss'))} (recon {_number(elbo.get('recon'))}, "
                 f"KL {_number(elbo.get('kl'))})")
    if _is_number(record.get("bits_per_dim")):
        line += f", {record['bits_per_dim']:.4f} bits/dim"
    rows = [("-log p(x)", line)]
    if record.get("command"):
        rows.append(("  measured by", str(record["command"])))
    return rows


def _history_table(history: list, every: bool) -> tuple[str, list[list[str]]]:
    """A title and one row per epoch shown: every epoch, or the best (lowest test loss) and the last."""
    if not history:
        return "", []
    scored = [record for record in history if record.test is not None and _is_number(record.test.loss)]
    best = min(scored, key=lambda record: record.test.loss) if scored else None
    last = history[-1]
    shown = history if every else [record for record in history if record is best or record is last]
    seconds = sum(r.elapsed_s for r in history if _is_number(r.elapsed_s))
    title = f"history (test split): {len(history)} epochs, {_duration(seconds)} of training"
    if not every and len(history) > len(shown):
        title += "; the best and the last (every epoch: --history)"
    rows = []
    for record in shown:
        test, train = record.test, record.train
        marks = [mark for mark, chosen in (("best", best), ("last", last)) if record is chosen]
        rows.append([
            str(record.epoch), _number(train and train.loss), _number(test and test.loss),
            _number(test and test.recon), _number(test and test.kl), _number(record.elapsed_s, 1),
            _number(record.images_per_s, 0), ", ".join(marks),
        ])
    return title, rows


def _plain_text(rows: list[tuple[str, str]], title: str, table: list[list[str]]) -> str:
    """Aligned columns with every value whole, for pipes and files."""
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {printable(value)}".rstrip() for key, value in rows]
    if table:
        lines += ["", title]
        cells = [list(HISTORY_COLUMNS), *table]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HISTORY_COLUMNS))]
        lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _rich_text(rows: list[tuple[str, str]], title: str, table: list[list[str]]) -> str:
    """The same as tables sized to the terminal: long values wrap onto more lines, never cut."""
    import io
    import shutil

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=io.StringIO(), force_terminal=True, width=shutil.get_terminal_size().columns,
                      highlight=False, emoji=False, markup=False)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    for key, value in rows:
        # Text, not str: metadata is shown as written, never read as markup, emoji codes or escapes.
        summary.add_row(key, Text(printable(value)))
    console.print(summary)
    if table:
        console.print()
        history = Table(title=title, title_justify="left")
        for column in HISTORY_COLUMNS:
            history.add_column(column, justify="right", overflow="fold")
        for row in table:
            history.add_row(*row)
        console.print(history)
    return console.file.getvalue().rstrip("\n")


def _prior_line(components: int, fit: object) -> str:
    from vaecli.config import describe_prior

    if not components:
        return describe_prior(0)
    line = f"{describe_prior(components)}, fitted to the training codes"
    if isinstance(fit, dict) and _is_number(fit.get("test_kl_mixture")):
        line += f" (test KL {fit['test_kl_mixture']:.2f} nats, {_number(fit.get('test_kl_standard'))} with N(0, I))"
    return line


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else MISSING


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
