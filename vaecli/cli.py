"""The `vae` typer app: names the commands, loads only the one that runs, and turns every error into one line
and an exit code."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo

from vaecli import __version__
from vaecli.errors import ExitCode, Interrupted, OutputError, ReaderGone, VaeError
from vaecli.runtime import signals
from vaecli.terminal.console import Terminal, debug_from_env

# One line each for `vae --help` (click would cut the docstrings' first sentences with "..."), in help order.
SUMMARIES = {
    "train": "Train a VAE; a checkpoint after every epoch.",
    "info": "Show what a checkpoint holds.",
    "completion": "Print the completion script for bash, zsh or fish.",
    "sample": "Decode draws from the prior into images.",
    "reconstruct": "Encode images and decode them again.",
    "interpolate": "Decode the path between two images' codes.",
    "encode": "Images to their posterior means (.npy).",
    "decode": "Codes (.npy) back to images.",
    "export": "The decoder and encoder as an ONNX file, for onnxruntime.",
    "eval": "-log p(x) and the negative ELBO of a split.",
    "score": "Per-image likelihood and unusualness scores.",
    "ood": "How well each score tells two image sets apart.",
    "fit-prior": "Fit a Gaussian-mixture prior to the training codes.",
    "project": "Scatter of the latent space, coloured by class.",
    "tour": "Latent map, reconstructions, interpolation and samples.",
    "traverse": "Sweep one latent coordinate at a time, by KL.",
    "manifold": "Decode a grid over a plane of the latent space.",
    "explore": "Explore a model in the browser: sliders, map, drawing.",
}


def _command_function(name: str) -> Callable[..., Any]:
    """The function behind `vae NAME`: vaecli.commands.<name>.<name>_command, with fit-prior as fit_prior."""
    stem = name.replace("-", "_")
    return getattr(importlib.import_module(f"vaecli.commands.{stem}"), f"{stem}_command")


class LazyCommands(MutableMapping):
    """The commands by name, each module imported when its command is first asked for: `vae --help` and
    `vae info` do not pay for the other fifteen commands' imports."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in SUMMARIES:
                raise KeyError(name)
            info = CommandInfo(name, cls=VaeCommand, callback=_command_function(name), short_help=SUMMARIES[name])
            self._loaded[name] = typer.main.get_command_from_info(
                info, pretty_exceptions_short=True, rich_markup_mode=None)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*SUMMARIES, *self._loaded]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*SUMMARIES, *self._loaded]))

    def __contains__(self, name: object) -> bool:
        return name in SUMMARIES or name in self._loaded


class VaeGroup(TyperGroup):
    """Runs click in non-standalone mode so that errors are reported here, in one place."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.commands = LazyCommands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # From the table, so that help imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)])

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        # Each invocation has its own terminal for its errors; --debug (the root callback) sets it through obj.
        term = Terminal()
        files = sys.modules.get("vaecli.store.files")  # an earlier invocation in this process named folders
        if files is not None:
            files.forget_folder_names()
        # SIGTERM and SIGHUP unwind like Ctrl-C, so every command's clean-up runs (temporary files).
        with signals.raised_as_interrupts():
            code = run_safely(
                lambda: super(VaeGroup, self).main(
                    args=args, prog_name=prog_name or "vae", complete_var=complete_var,
                    standalone_mode=False, obj=term, **extra,
                ),
                term,
            )
        distributed = sys.modules.get("vaecli.training.distributed")  # loaded only by a command that may join a group
        if distributed is not None and distributed.launched_by_torchrun():
            distributed.exit_at_once(code)
        sys.exit(code)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # Typer would turn it into a silent exit 130; the one line is said in run_safely.
            raise Interrupted(signals.message(exc), signals.exit_code(exc)) from None


class VaeCommand(TyperCommand):
    """A command that accepts its options' renamed spellings (options.RENAMED) with a warning, and notes which
    paths were given with a trailing slash (`-o NAME/`): named as folders."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from vaecli.commands.options import renamed_words
        from vaecli.store.files import note_folder_name

        args, warnings = renamed_words(ctx.info_name or self.name or "", list(args), self._value_counts())
        words = list(args)  # parsing consumes the list
        rest = super().parse_args(ctx, args)
        if not ctx.params.get("quiet"):
            for line in warnings:  # after parsing: a command line that does not parse gets its one error line only
                Terminal().warn(line)
        raw, _, _ = self.make_parser(ctx).parse_args(args=words)  # the values as typed, before conversion
        for name, given in raw.items():
            value = ctx.params.get(name)
            for word, path in zip(*_as_lists(given, value), strict=True):
                if isinstance(word, str) and word.endswith("/") and isinstance(path, os.PathLike):
                    note_folder_name(path)
        return rest

    def _value_counts(self) -> dict[str, int]:
        """How many words each option name takes (0 for a flag), for reading a command line before click does."""
        return {name: 0 if param.is_flag or param.count else param.nargs
                for param in self.params if param.param_type_name == "option"
                for name in (*param.opts, *param.secondary_opts)}


def _as_lists(given: Any, value: Any) -> tuple[list, list]:
    if isinstance(given, (list, tuple)) and isinstance(value, (list, tuple)) and len(given) == len(value):
        return list(given), list(value)
    return [given], [value]


def run_safely(invoke: Any, term: Terminal) -> int:
    """Call the CLI and map what it raises to an exit code and at most one line on stderr."""
    if sys.stdout is None:  # started with `>&-`: refuse before any work, not after it
        term.error("stdout is closed; give the command somewhere to write (`> /dev/null` discards it)")
        return ExitCode.USAGE
    try:
        result = invoke()
        sys.stdout.flush()  # a full disk or a closed pipe is reported here, not at interpreter exit
        return result if isinstance(result, int) else ExitCode.OK
    except (BrokenPipeError, ReaderGone):
        # The reader went away (`| head`): stop quietly with the status of a process killed by SIGPIPE.
        _silence_stdout()
        return ExitCode.BROKEN_PIPE
    except VaeError as exc:
        if term.debug:
            _print_traceback()
        if isinstance(exc, OutputError):
            _silence_stdout()  # what could not be written must not be retried at exit
        term.error(exc.message)
        return exc.exit_code
    except typer.Abort:
        term.error("interrupted")
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt as exc:  # a signal outside any command (while parsing the options)
        term.error(signals.message(exc))
        return signals.exit_code(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        return _report_unexpected(exc, term)


def _print_traceback() -> None:
    # traceback costs `vae --help` 4 ms, and only --debug needs it.
    import traceback

    traceback.print_exc()


def _report_unexpected(exc: Exception, term: Terminal) -> int:
    if _is_click_error(exc):
        return _report_click_error(exc, term)
    if term.debug:
        _print_traceback()
    if isinstance(exc, OSError) and exc.filename is not None:
        # A path the checks above did not foresee: still the user's file, still one line.
        from vaecli.store.files import describe_os_error

        term.error(f"{exc.filename}: {describe_os_error(exc)}; check the path")
        return ExitCode.USAGE
    if isinstance(exc, MemoryError):
        term.error("out of memory; use fewer or smaller images, a smaller model, or a smaller --batch-size (train) "
                   "or --decode-rows (eval, score, ood)")
        return ExitCode.ERROR
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    term.error(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)")
    return ExitCode.ERROR


def _is_click_error(exc: Exception) -> bool:
    # Typer vendors click in recent releases and uses click itself in older ones: match by shape.
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code") and hasattr(exc, "show")


def _report_click_error(exc: Any, term: Terminal) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # `vae` alone prints the help
        return ExitCode.USAGE
    command = exc.ctx.command_path if getattr(exc, "ctx", None) else "vae"
    term.error(f"{exc.format_message()} (see `{command} --help`)")
    return int(exc.exit_code)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


app = typer.Typer(
    cls=VaeGroup,
    name="vae",
    help="Train Variational Autoencoders on images and use them from the shell.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer costs ~60 ms of imports per call
    add_completion=False,  # static scripts instead: `vae completion SHELL` (no Python per TAB)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        Terminal().emit(f"vaecli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors (or set VAE_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train Variational Autoencoders on images and use them from the shell.

    Data goes to stdout (paths, PNG bytes, JSON); messages and progress go to stderr.
    """
    if isinstance(ctx.obj, Terminal):  # absent when a test builds the click group itself
        ctx.obj.debug = debug or debug_from_env()


def main() -> None:
    """Entry point of the `vae` script."""
    app(prog_name="vae")
