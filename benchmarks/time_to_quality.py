"""Time to quality: seconds from launching `vae train --arch cnn` (process start included) to
the end of the first epoch whose test loss is at most 119.6 nats (the original notebook's best
20-epoch figure, which took it about 5 to 6 minutes on this machine).

With --against REV, the same run of an earlier commit (checked out into a temporary worktree)
alternates with this checkout's, --rounds times each, and the ratio of the medians is printed:
CPU models differ between machines, so only a ratio measured in one run compares two versions.

Usage: python benchmarks/time_to_quality.py [--target 119.6] [--against REV --rounds 3] [-- extra vae train options]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, data_root

NOTEBOOK_SECONDS = 20 * 16.0  # the original MLP reached 119.6 after 20 epochs of about 16 s


def time_to_target(tree: Path, target: float, extra: list[str], label: str) -> float | None:
    """Launch `python -m vaecli train` from `tree`; seconds until an epoch's test loss is at most target."""
    workdir = Path(tempfile.mkdtemp(prefix="vae-ttq-"))
    env = dict(os.environ, VAE_DATA_ROOT=str(data_root()), VAE_OFFLINE="1", PYTHONPATH=str(tree))
    command = [sys.executable, "-m", "vaecli", "train", "--arch", "cnn", "--json", "--device", "cpu",
               "--no-report", "-o", str(workdir / "ttq.safetensors"), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                               cwd=workdir)
    reached = None
    for line in process.stdout:
        record = json.loads(line)
        elapsed = time.perf_counter() - start
        print(f"{label}: epoch {record['epoch']}: test loss {record['test']['loss']:.2f} at {elapsed:.1f} s",
              flush=True)
        if record["test"]["loss"] <= target:
            reached = elapsed
            break
    process.terminate()
    process.wait()
    shutil.rmtree(workdir, ignore_errors=True)
    return reached


def checkout(revision: str) -> Path:
    """A detached worktree of `revision` in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="vae-ttq-base-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--quiet", "--detach", str(folder), revision],
                   check=True)
    return folder


def compare(revision: str, rounds: int, target: float, extra: list[str]) -> None:
    baseline = checkout(revision)
    try:
        times: dict[str, list[float]] = {"this": [], revision: []}
        for _ in range(rounds):  # alternated, so a change in the machine's load hits both alike
            for label, tree in (("this", REPO), (revision, baseline)):
                reached = time_to_target(tree, target, extra, label)
                if reached is None:
                    raise SystemExit(f"{label} never reached {target} nats")
                times[label].append(reached)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)
    ours, theirs = statistics.median(times["this"]), statistics.median(times[revision])
    print(f"median time to {target} nats over {rounds} rounds: this checkout {ours:.1f} s, "
          f"{revision} {theirs:.1f} s: {ours / theirs:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=119.6)
    parser.add_argument("--against", metavar="REV", help="also time this git revision, alternately")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more `vae train` options (after --)")
    args = parser.parse_args()
    if args.against:
        compare(args.against, args.rounds, args.target, args.extra)
        return
    reached = time_to_target(REPO, args.target, args.extra, "this")
    if reached is None:
        raise SystemExit(f"never reached {args.target} nats")
    print(f"time to {args.target} nats: {reached:.1f} s (goal 15 s: {reached / 15:.2f}x of the budget; "
          f"the original notebook code: about {NOTEBOOK_SECONDS:.0f} s, {NOTEBOOK_SECONDS / reached:.0f}x slower)")


if __name__ == "__main__":
    main()
