"""Regenerate completions/ from the CLI itself: python scripts/generate_completions.py"""

from pathlib import Path

from vaecli.cli import app
from vaecli.terminal.completion import write_all

if __name__ == "__main__":
    for path in write_all(Path(__file__).resolve().parent.parent / "completions", app):
        print(path)
