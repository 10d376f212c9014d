"""`vae info`: show what a checkpoint holds, without loading its weights."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from vaecli.commands.options import JsonOption
from vaecli.console import term


def info_command(
    checkpoint: Annotated[
        Optional[str],
        typer.Argument(help="Checkpoint path or bundled name (default: as for -m).", show_default=False),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Print a checkpoint's metadata: a table on a terminal, JSON with --json.

    Example: vae info vae.safetensors --json | jq .history[-1].test
    """
    from vaecli.checkpoint import read_metadata, resolve_model

    path, note = resolve_model(checkpoint)
    if note:
        term.note(note)
    meta = read_metadata(path)
    if json_out:
        term.emit(json.dumps(meta, indent=2, sort_keys=True))
        return
    _print_table(str(path), meta)


def _print_table(path: str, meta: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from vaecli.console import printable

    config = meta.get("config", {})
    model = config.get("model", {})
    history = meta.get("history") or []
    last = history[-1] if history else {}
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("file", path),
        ("format", f"{meta.get('format')} v{meta.get('format_version')} (vaecli {meta.get('vaecli_version')})"),
        ("architecture", f"{model.get('arch')} (hidden {model.get('hidden')})"),
        ("latent dim", str(model.get("latent_dim"))),
        ("image shape", " x ".join(str(v) for v in meta.get("image_shape", []))),
        ("likelihood", str(model.get("likelihood"))),
        ("prior", _prior_line(model.get("prior_components") or 0, meta.get("prior"))),
        ("dataset", str(config.get("dataset"))),
        ("epochs done", f"{meta.get('epochs_done')} of {config.get('epochs')}"),
        ("seed", str(config.get("seed"))),
    ]
    if last:
        test = last.get("test", {})
        nan = float("nan")
        rows.append(("test loss", f"{test.get('loss', nan):.2f} nats "
                                  f"(recon {test.get('recon', nan):.2f}, KL {test.get('kl', nan):.2f})"))
        if "active_units" in test:
            rows.append(("active units", f"{test['active_units']} of {model.get('latent_dim')} (KL > 0.01 nats)"))
    recipe = meta.get("recipe")
    if isinstance(recipe, list) and recipe:
        rows += [(f"recipe step {i}", str(step)) for i, step in enumerate(recipe, 1)]
    elif meta.get("command"):
        rows.append(("command", meta["command"]))
    for key, value in rows:
        # Text, not str: metadata is shown as written, never read as markup, emoji codes or escapes.
        summary.add_row(key, Text(printable(value)))
    console = _table_console()
    console.print(summary)
    if history:
        table = Table(title="history (test split)", title_justify="left")
        for column in ("epoch", "train", "test", "recon", "KL", "s", "img/s"):
            table.add_column(column, justify="right")
        for record in history:
            test = record.get("test", {})
            table.add_row(
                str(record.get("epoch")), f"{record.get('train', {}).get('loss', 0):.2f}",
                f"{test.get('loss', 0):.2f}", f"{test.get('recon', 0):.2f}", f"{test.get('kl', 0):.2f}",
                f"{record.get('elapsed_s', 0):.1f}", f"{record.get('images_per_s', 0):.0f}",
            )
        console.print(table)
    term.emit(console.file.getvalue().rstrip("\n"))


def _table_console():
    """A console that renders into a string, sized and styled for where stdout goes."""
    import io
    import shutil

    from rich.console import Console

    to_terminal = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if to_terminal else None
    return Console(file=io.StringIO(), force_terminal=to_terminal, width=width, highlight=False,
                   emoji=False, markup=False, soft_wrap=True)


def _prior_line(components: int, fit: object) -> str:
    from vaecli.config import describe_prior

    if not components:
        return describe_prior(0)
    line = f"{describe_prior(components)}, fitted to the training codes"
    if isinstance(fit, dict) and isinstance(fit.get("test_kl_mixture"), (int, float)):
        line += f" (test KL {fit['test_kl_mixture']:.2f} nats, {fit.get('test_kl_standard', 0):.2f} with N(0, I))"
    return line
