"""The terminal: `vae train` as a user sees it (a real pty, tmux, its screen read while the run goes on), and each
invocation's own Terminal, which nothing keeps between calls."""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

TMUX = shutil.which("tmux")

WIDTH, HEIGHT = 100, 30  # wide enough for an epoch line: one that wraps here was glued to something
DEADLINE_S = 180
# The live bar: "epoch 2/3 ━━━━╸━━━   256/600     412 img/s loss   356.12  0:00:01".
BAR = re.compile(r"^epoch (\d+)/3 \S+\s+(\d+)/(\d+)\s+(\S+) img/s loss\s+(\S+)\s+(\S+)$")
EPOCH_LINE = re.compile(
    r"^epoch +(\d+)/3  train [\d.]+  test [\d.]+ \(recon [\d.]+, KL [\d.]+\)  [\d.]+ s  \d+ img/s(  \d+ s left)?$"
)
CLOCK = re.compile(r"^\d+:\d\d:\d\d$")


def test_the_bar_estimates_from_this_epoch_and_the_last():
    from rich.console import Console
    from rich.progress import Progress as Bar

    from vaecli.terminal.console import Terminal
    from vaecli.terminal.progress import TrainingDisplay
    from vaecli.training.loop import Progress

    bar = Bar(console=Console(file=io.StringIO()))
    display = TrainingDisplay(Terminal(), bar, epochs=3, first_epoch=1, images=600)

    def shown() -> tuple:
        fields = bar.tasks[0].fields
        return fields["epoch"], fields["rate"], fields["loss"], fields["eta"]

    assert shown() == (1, "—", "—", "-:--:--")  # nothing measured yet
    display.on_progress(Progress(1, 3, 300, 600, 420.0, 3.0))
    assert shown() == (1, "100", "420.00", "0:00:03")
    display.on_progress(Progress(1, 3, 600, 600, 400.0, 6.0))
    assert shown()[3] == "testing"
    display.epoch_line("epoch   1/3  train 400.00")
    assert shown() == (2, "—", "—", "0:00:06")  # the last epoch's 100 img/s, before any batch of this one
    display.on_progress(Progress(2, 3, 300, 600, 350.0, 1.0))
    assert shown()[3] == "0:00:03"  # both epochs pooled: 300 images left at 900 images in 7 s
    display.on_progress(Progress(2, 3, 599, 600, 350.0, 2.0))
    assert shown()[3] == "0:00:01"  # rounded up while a batch remains


def test_a_quiet_call_leaves_the_next_calls_in_the_same_process_their_notes(cli, tiny_model):
    quiet = cli("sample", "-m", tiny_model, "-n", "1", "-o", "a", "--device", "cpu", "-q")
    # `vae info` has no -q of its own to set: a -q kept from the call before would silence its note.
    info = cli("info")
    loud = cli("sample", "-m", tiny_model, "-n", "1", "-o", "b", "--device", "cpu")
    assert quiet.exit_code == info.exit_code == loud.exit_code == 0, quiet.stderr + info.stderr + loud.stderr
    assert quiet.stderr == ""
    assert info.stderr == "no -m given and no ./vae.safetensors: using the bundled MNIST model\n"
    seed = re.fullmatch(r"seed (\d+) \(pass --seed (\d+) to draw the same images again\)\n", loud.stderr)
    assert seed is not None and seed[1] == seed[2], loud.stderr


def test_no_module_keeps_a_terminal_at_module_level():
    # A Terminal held by a module would carry one call's -q or --debug into the next call in the same process.
    import vaecli
    from vaecli.terminal.console import Terminal

    held = []
    for module in pkgutil.walk_packages(vaecli.__path__, "vaecli."):
        names = vars(importlib.import_module(module.name))
        held += [f"{module.name}.{name}" for name, value in names.items() if isinstance(value, Terminal)]
    assert held == []


@pytest.mark.slow
@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_train_on_a_terminal_prints_clean_epoch_lines_and_an_honest_bar(tmp_path):
    # 150 small convolutional steps an epoch, about half a second: several progress reports per epoch even on
    # a fast idle CPU (75 MLP steps took under the 0.2 s between reports there, and no bar was ever drawn).
    train = [sys.executable, "-m", "vaecli", "train", "--dataset", "digits", "--epochs", "3", "--limit", "600",
             "--arch", "cnn", "--hidden", "8", "--batch-size", "4", "--device", "cpu", "--no-report",
             "-o", "t.safetensors"]
    shell = f"cd {shlex.quote(str(tmp_path))} && {shlex.join(train)}; echo EXIT=$?; sleep {DEADLINE_S}"
    tmux = [TMUX, "-L", f"vaecli-test-{os.getpid()}", "-f", "/dev/null"]
    # One torch thread: on a loaded machine (the other test worker, this loop's captures) two spinning OpenMP
    # threads on less than two free cores slowed this run to 8 images a second, past the deadline.
    env = {**os.environ, "TERM": "xterm-256color", "OMP_NUM_THREADS": "1"}
    env.pop("TMUX", None)  # a private server even when the suite itself runs inside tmux
    subprocess.run([*tmux, "new-session", "-d", "-s", "train", "-x", str(WIDTH), "-y", str(HEIGHT), shell],
                   check=True, env=env)
    try:
        screens = _screens_until_exit(tmux)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
    final = screens[-1]
    assert "EXIT=0" in final, "\n".join(final)

    # The bar is gone at the end, and each epoch's line stands alone: not glued to the bar, not wrapped.
    assert not any("━" in line for line in final), "\n".join(final)
    epoch_lines = [line for line in final if line.startswith("epoch")]
    assert [EPOCH_LINE.match(line) is not None for line in epoch_lines] == [True] * 3, "\n".join(final)
    assert [int(EPOCH_LINE.match(line)[1]) for line in epoch_lines] == [1, 2, 3]
    # The time the run still needs, at its epochs' pace, until the last epoch.
    assert [EPOCH_LINE.match(line)[2] is not None for line in epoch_lines] == [True, True, False]

    bars = [_bar_line(screen) for screen in screens]
    assert all(bar is not False for bar in bars), "more than one bar line on a screen"
    seen = [bar for bar in bars if bar]
    assert not any("nan" in line.lower() for screen in screens for line in screen)
    _check_bars(seen)


def _screens_until_exit(tmux: list[str]) -> list[list[str]]:
    """The pane's visible lines, captured every few milliseconds until the command has exited."""
    screens, started = [], time.monotonic()
    while time.monotonic() - started < DEADLINE_S:
        shot = subprocess.run([*tmux, "capture-pane", "-p", "-t", "train"], capture_output=True, text=True)
        screen = [line.rstrip() for line in shot.stdout.splitlines() if line.strip()]
        if screen and (not screens or screen != screens[-1]):
            screens.append(screen)
        if any(line.startswith("EXIT=") for line in screen):
            return screens
        time.sleep(0.03)
    pytest.fail(f"vae train did not finish in {DEADLINE_S} s:\n" + "\n".join(screens[-1] if screens else []))


def _bar_line(screen: list[str]) -> tuple | None | bool:
    """The bar's fields on this screen, None without a bar, False for two bars (a stale one left behind)."""
    lines = [line for line in screen if "━" in line or "╺" in line or "╸" in line]
    if len(lines) > 1:
        return False
    if not lines:
        return None
    match = BAR.match(lines[0])
    assert match, f"a bar line that is not the bar alone: {lines[0]!r}"
    epoch, done, total = (int(v) for v in match.group(1, 2, 3))
    return epoch, done, total, *match.group(4, 5, 6)


def _check_bars(bars: list[tuple]) -> None:
    """Before the first batch: no loss or rate yet. While batches remain: a real, nonzero ETA."""
    running = [bar for bar in bars if 0 < bar[1] < bar[2]]
    assert running, f"no screen caught an epoch half done; bars seen: {bars}"
    for epoch, done, total, rate, loss, eta in bars:
        where = f"epoch {epoch}, {done}/{total}: rate {rate}, loss {loss}, ETA {eta}"
        if done == 0:
            assert loss == "—" and rate == "—", where
            # From the second epoch on, the last epoch's rate gives an ETA before the first batch.
            assert (eta == "-:--:--") if epoch == 1 else (CLOCK.match(eta) and eta != "0:00:00"), where
        elif done < total:
            assert float(loss) > 0 and float(rate) > 0, where
            assert CLOCK.match(eta) and eta != "0:00:00", where
        else:
            assert eta == "testing", where
