"""`vae explore`: serve one local page to explore a model by dragging, clicking and drawing."""

from __future__ import annotations

import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaecli.commands.common import model_path, test_split
from vaecli.commands.options import (
    KL_IMAGES,
    DataRootOption,
    DeviceOption,
    ModelDatasetOption,
    ModelOption,
    QuietOption,
    limit_option,
)
from vaecli.explore.app import Explorer
from vaecli.explore.facts import ModelFacts, read_facts
from vaecli.explore.server import ExploreServer, open_server
from vaecli.runtime import signals
from vaecli.terminal.console import Terminal

if TYPE_CHECKING:
    from vaecli.data.datasets import ImageSet
    from vaecli.explore.state import Session

DEFAULT_PORT = 8765
DEFAULT_HOST = "127.0.0.1"
MAP_IMAGES = 2000  # test images on the map: enough to see the classes' shapes, encoded in seconds on a CPU
HOSTS = (DEFAULT_HOST, "localhost", "0.0.0.0")  # what TAB offers for --host: this machine, or every address


def complete_host(incomplete: str) -> list[str]:
    return [host for host in HOSTS if host.startswith(incomplete)]


def explore_command(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port to serve on; 0 picks any free one."),
    ] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", autocompletion=complete_host,
                          help="Address to serve on; another than this machine's own (127.0.0.1) lets others on "
                          "that network use the page."),
    ] = DEFAULT_HOST,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default web browser."),
    ] = False,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    dataset: ModelDatasetOption = None,
    data_root: DataRootOption = None,
    limit: Annotated[
        int, limit_option("Test images placed on the map (the first N of the split).", show_default=True),
    ] = MAP_IMAGES,
    quiet: QuietOption = False,
) -> None:
    """Serve a page to explore a model: a slider per latent coordinate, the latent map, drawing, interpolation
    and samples. Prints the page's URL on stdout and serves until Ctrl-C.

    Every picture on the page is the one the commands make for the same code and settings (decode, sample,
    reconstruct, interpolate); the map places the test images as vae project does.

    \b
    Example: vae explore -m mnist --open
    """
    term = Terminal(quiet=quiet)
    path = model_path(term, model)
    facts = read_facts(path)  # a file that is no checkpoint is refused here, before any server
    explorer = Explorer(facts, _session_loader(path, device, facts),
                        _test_set_loader(term, dataset, data_root, limit), min(KL_IMAGES, limit))
    server = open_server(host, port, explorer)
    try:
        _announce(term, server, explorer, host, open_browser)
        server.serve_forever()  # until Ctrl-C, or until the model fails to load (explorer.failure)
    except KeyboardInterrupt as exc:  # the way out, not an error: no line, the signal's status
        raise typer.Exit(signals.exit_code(exc)) from None
    finally:
        server.server_close()
    if explorer.failure is not None:
        raise explorer.failure


def _announce(term: Terminal, server: ExploreServer, explorer: Explorer, host: str, open_browser: bool) -> None:
    """Start loading the model, then say where the page is (and open it when asked)."""
    if not server.loopback:
        term.warn(f"serving on {host}: anyone who can reach this machine there can use the page and the model; "
                  "leave out --host to serve this machine alone")
    explorer.start(on_failure=lambda _: server.shutdown())
    term.emit(server.url)
    term.note(f"exploring {_describe(explorer.facts)}; Ctrl-C stops")
    if open_browser:
        webbrowser.open(server.url)


def _session_loader(path: Path, device: str, facts: ModelFacts) -> Callable[[], Session]:
    def load() -> Session:
        # Imported on the loading thread: torch takes longer to import than the page may take to appear.
        from vaecli.analysis.latent import load_model
        from vaecli.explore.state import Session

        return Session(load_model(path, device), facts)

    return load


def _test_set_loader(term: Terminal, dataset: str | None, data_root: Path | None,
                     limit: int) -> Callable[[Session], ImageSet]:
    def load(session: Session) -> ImageSet:
        return test_split(term, session.checkpoint, dataset, data_root, limit)[1]

    return load


def _describe(facts: ModelFacts) -> str:
    kind = f"{facts.arch}, latent {facts.latent_dim}" + (f", {facts.layers} layers" if facts.layers > 1 else "")
    return f"{facts.name} ({kind})"
