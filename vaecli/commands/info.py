"""`vae info`: show what a checkpoint holds, without loading its weights."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from vaecli.commands.common import model_path
from vaecli.commands.options import JsonOption
from vaecli.store.summary import duration, is_number, number, summary_rows
from vaecli.terminal.console import Terminal, as_flags, printable

HISTORY_COLUMNS = ("epoch", "train", "test", "recon", "KL", "s", "img/s", "")


def info_command(
    checkpoint: Annotated[
        str | None,
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
    from vaecli.store.metadata import read_metadata  # the header alone, without torch

    term = Terminal()
    path = model_path(term, checkpoint)
    meta = read_metadata(path)
    if json_out:
        term.emit(json.dumps(meta, indent=2, sort_keys=True))  # the file's own object, every key as it is
        return
    from vaecli.store.metadata import CheckpointMeta

    typed = CheckpointMeta.from_dict(meta)
    rows = [(name, as_flags(value)) for name, value in summary_rows(str(path), typed)]  # settings as flags
    title, table = _history_table(typed.history or [], every=history)
    # Off a terminal every value is written whole; on one, long values wrap at its width.
    text = _rich_text(rows, title, table) if sys.stdout.isatty() else _plain_text(rows, title, table)
    term.emit(text)


def _history_table(history: list, every: bool) -> tuple[str, list[list[str]]]:
    """A title and one row per epoch shown: every epoch, or the best (lowest test loss) and the last."""
    if not history:
        return "", []
    scored = [record for record in history if record.test is not None and is_number(record.test.loss)]
    best = min(scored, key=lambda record: record.test.loss) if scored else None
    last = history[-1]
    shown = history if every else [record for record in history if record is best or record is last]
    seconds = sum(r.elapsed_s for r in history if is_number(r.elapsed_s))
    title = f"history (test split): {len(history)} epochs, {duration(seconds)} of training"
    if not every and len(history) > len(shown):
        title += "; the best and the last (every epoch: --history)"
    rows = []
    for record in shown:
        test, train = record.test, record.train
        marks = [mark for mark, chosen in (("best", best), ("last", last)) if record is chosen]
        rows.append([
            str(record.epoch), number(train and train.loss), number(test and test.loss),
            number(test and test.recon), number(test and test.kl), number(record.elapsed_s, 1),
            number(record.images_per_s, 0), ", ".join(marks),
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


