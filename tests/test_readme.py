"""The README's and docs/*.md's shell examples run as a user runs them, their links resolve, and the docs
figures match what `vae tour` draws."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

import vaecli
from vaecli.cli import app
from vaecli.store.checkpoint import read_metadata

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
DEVELOPMENT = DOCS / "development.md"
DOCS_MODEL = DOCS / "quickstart.safetensors"
FIGURES = ("latent.png", "reconstructions.png", "interpolation.png", "samples.png")
# Grey levels a pixel of a fresh figure may differ by. Another torch build rounds the encoder's outputs in
# their last bits, which moves the 10,000 translucent points of latent.png by a fraction of a pixel: weights
# changed by 1e-7 (relative) already change 2,000 of its pixels by up to 2 levels, 1e-5 by up to 11.
# A stale figure differs by far more: other samples or another title change pixels by up to 255.
PIXEL_TOLERANCE = 16
QUICK_START_TRAIN = "vae train --arch cnn"  # how the quick start trains; the docs model must be trained so


class Shrunk(NamedTuple):
    """A documented command run with less work: each (page text, text run instead) edit, and why."""

    edits: tuple[tuple[str, str], ...]
    why: str


# Every command in the README and docs/*.md falls in exactly one of these three; a new one fails the test
# until it is placed. The README's quick start runs first; then each `## ` section of each page runs its
# commands in page order in a copy of the folder the quick start left, as a reader who turns to that
# section would run them.
RUN_AS_WRITTEN = (
    "vae info vae.safetensors",
    "vae info vae.safetensors --history",
    "vae sample -n 16 --temperature 0.8 --grid samples-cold.png",
    "vae encode a.png b.png -o z.npy",
    "vae decode z.npy --grid z.png",
    "vae project --dataset digits -o latent.png",
    "vae tour --dataset digits -o tour/",
    "vae ood --known mnist --unusual digits --limit 100 -k 4 -s nll,complexity",
    "vae completion zsh > _vae",
    "vae info vae.safetensors --json | jq .config",
    'vae sample -n 8 -o out/ | while read f; do convert "$f" "${f%.png}.jpg"; done',
    "vae reconstruct drawing.png --compare - > compare.png",
    "vae interpolate a.png b.png --steps 5 --gif morph.gif",
    "vae encode a.png b.png | vae decode -o out/",
    "vae encode a.png b.png -o z.npy && python -c \"import numpy; numpy.save('mid.npy', "
    "numpy.load('z.npy').mean(0, keepdims=True))\" && vae decode mid.npy --grid mid.png",
    "vae info --json | jq .history[-1].test.loss",
    'vae sample -m "$(vae fit-prior -m vae.safetensors)" -n 16 --grid s.png',
    "vae fit-prior -m resnet.safetensors -o resnet-mixture.safetensors",
    "vae fit-prior -m resnet-ft.safetensors -o mnist.safetensors",
    "vae fit-prior -m vae.safetensors -o vae-mixture.safetensors",
    "vae score a.png b.png drawing.png --sort | tail -2",
    "vae traverse -n 3 --seed 1 -o - > three.png",
    "vae manifold --size 10 -o - > plane.png",
    "vae manifold -m digits2d.safetensors --with-codes -o manifold.png",
    "vae sample -m digits-cond.safetensors --label all -n 8 --seed 1 --grid digits-every-class.png",
    "vae traverse -m mnist --active-only --limit 200 -o - | python -c \"import sys; from PIL import Image; "
    "print(Image.open(sys.stdin.buffer).size)\"",
    "vae manifold -m mnist --size 15 --limit 200 -o - > plane.png",
    "vae sample -m mnist-conditional --label all -n 8 --seed 1 --grid every-class.png",
    "vae encode a.png -m mnist-conditional --label 3 | vae decode -m mnist-conditional --label 8 -o out/",
    "vae export mnist -o mnist.onnx",
    "vae export mnist-conditional --part both -o digits-both.onnx",
    "python -c \"from PIL import Image; [Image.new('L', (28, 28), v).save(f'blank-{v:03d}.png') for v in range(256)]\"",
    "mkdir -p ~/.local/share/bash-completion/completions && vae completion bash > "
    "~/.local/share/bash-completion/completions/vae",
    "mkdir -p ~/.zfunc && vae completion zsh > ~/.zfunc/_vae",
    "mkdir -p ~/.config/fish/completions && vae completion fish > ~/.config/fish/completions/vae.fish",
)
FEW_EPOCHS = "--epochs 1 --limit 200"  # one pass over 200 images: a checkpoint of the same kind in seconds
SMALL_EVAL = "--limit 50 -k 5"  # 50 test images, 5 importance samples: the same report in a second
EXPORT_SCRIPT = ("scripts/export_images.py", str(REPO / "scripts" / "export_images.py"))
SHRUNK = {
    "python scripts/export_images.py a.png b.png": Shrunk(
        (EXPORT_SCRIPT,), "the checkout's scripts/ is not in the folder the commands run in"),
    "python scripts/export_images.py --first 2 --invert --scale 4 drawing.png": Shrunk(
        (EXPORT_SCRIPT,), "the checkout's scripts/ is not in the folder the commands run in"),
    "pip install . && vae sample -n 16 --grid samples.png && vae train --arch cnn": Shrunk(
        (("pip install .", "vae --version"), ("--arch cnn", f"--arch cnn {FEW_EPOCHS}")),
        "this checkout's vae is already on PATH; 20 MNIST epochs take minutes",
    ),
    "vae train --arch cnn --dataset mnist --epochs 20 -o mnist-cnn.safetensors": Shrunk(
        (("--epochs 20", FEW_EPOCHS),), "20 MNIST epochs take minutes"),
    "vae train --arch mlp --dataset digits --epochs 5 -o digits.safetensors": Shrunk(
        (("--epochs 5", "--epochs 5 --limit 200"),), "5 epochs of 1,437 images take 10 s on 2 cores"),
    "python scripts/photo_crops.py photos/": Shrunk(
        (("scripts/photo_crops.py", str(REPO / "scripts" / "photo_crops.py")), ("photos/", "photos/ --per-photo 3")),
        "the checkout's scripts/ is not in the folder the commands run in; 30 crops make the same kind of folder"),
    "vae train --dataset photos/ -o photos.safetensors": Shrunk(
        (("-o", "--epochs 1 -o"),), "20 epochs of 3,600 crops take 5 minutes on 2 cores"),
    "vae train --json --epochs 3 -o short.safetensors | jq .test.loss": Shrunk(
        (("--epochs 3", "--epochs 3 --limit 200"),), "3 MNIST epochs take a minute"),
    "vae train --resume vae.safetensors --epochs 30": Shrunk(
        (("--epochs 30", "--epochs 2"),), "resumes the 1-epoch quick-start model: one more epoch shows it"),
    "vae traverse drawing.png --active-only --steps 7 -o traverse.png --gif traverse.gif --scale 3": Shrunk(
        (("--active-only ", ""),),
        "the test's few-epoch model has no active dimension yet, which --active-only rightly refuses"),
    "export VAE_DATA_ROOT=/path/to/data": Shrunk(
        (("/path/to/data", '"$VAE_DATA_ROOT"'),), "a placeholder: the test's copy of MNIST"),
    "vae train --dataset mnist -o local.safetensors": Shrunk(
        (("--dataset mnist", f"--dataset mnist {FEW_EPOCHS}"),), "20 MNIST epochs take minutes"),
    "vae project --points pts.csv > /dev/null && cut -d, -f3-5 pts.csv | head": Shrunk(
        (("vae project", "vae project --limit 1000"),), "encodes and draws all 10,000 MNIST test images"),
    "vae tour -m mnist -o tour/ | xargs -n1 echo wrote": Shrunk(
        (("-m mnist", "-m mnist --dataset digits"),),
        "the bundled ResNet takes 10 s for the 10,000 MNIST test images; the digits test set has 360"),
    "vae train --dataset digits --latent-dim 2 --epochs 100 --batch-size 32 -o digits2d.safetensors": Shrunk(
        (("--epochs 100", "--epochs 2"),), "100 epochs of 1,437 images take a minute on 2 cores"),
    "vae train --arch hvae --dataset mnist --binarize --groups 3 --free-bits 0.25 --grad-clip 200 --warmup 5 "
    "-o hvae.safetensors": Shrunk((("--warmup 5", f"--warmup 5 {FEW_EPOCHS}"),), "20 epochs take 20 minutes"),
    "vae train --dataset digits --conditional --epochs 100 --batch-size 32 -o digits-cond.safetensors": Shrunk(
        (("--epochs 100", "--epochs 2"),), "100 epochs of 1,437 images take a minute on 2 cores"),
    "vae tour -m mnist --html -o page/ | tail -1": Shrunk(
        (("-m mnist", "-m mnist --dataset digits"),), "as `vae tour` above: the digits test set is quicker"),
    "vae eval -m mnist --binarize": Shrunk(
        (("--binarize", f"--binarize {SMALL_EVAL}"),), "K = 1000 on 10,000 images takes 17 minutes"),
    "vae eval -m vae.safetensors --limit 1000 -k 100 --json | jq .nll": Shrunk(
        (("--limit 1000 -k 100", SMALL_EVAL),), "K = 100 on 1,000 images takes a minute"),
    "vae eval -m mnist --binarize --limit 1000 -k 100 --codecs": Shrunk(
        (("--limit 1000 -k 100", SMALL_EVAL),), "K = 100 on 1,000 images takes 40 s for the bundled hvae"),
    "vae train --arch resnet --dataset mnist --latent-dim 32 --hidden 32 --epochs 120 --binarize "
    "-o resnet.safetensors": Shrunk((("--epochs 120", FEW_EPOCHS),), "120 epochs take 88 minutes"),
    "vae train --resume resnet-mixture.safetensors --epochs 180 -o resnet-ft.safetensors": Shrunk(
        (("--epochs 180", "--epochs 2"),), "resumes the shrunk 1-epoch ResNet: one more epoch shows it"),
    "vae eval -m vae-mixture.safetensors --binarize": Shrunk(
        (("--binarize", f"--binarize {SMALL_EVAL}"),), "K = 1000 on 10,000 images takes minutes"),
    "vae score -m mnist-resnet --dataset mnist --limit 1000 -s nll,regret --format csv > scores.csv": Shrunk(
        (("--limit 1000", "--limit 20"),), "regret on 1,000 images takes minutes"),
    "mkdir -p blank && mv blank-*.png blank/ && vae ood --known mnist --unusual blank/ -s nll,complexity --json "
    "| jq .scores": Shrunk((("--known mnist", "--known mnist --limit 50 -k 4"),),
                           "K = 100 on 10,000 MNIST test images takes minutes"),
    "torchrun --standalone --nproc-per-node 2 -m vaecli train --dataset digits --device cpu -o ddp.safetensors":
        Shrunk((("--device cpu", "--device cpu --epochs 1 --limit 200"),), "20 epochs in two processes"),
    "vae train --arch cnn -o runs/cnn.safetensors --tensorboard tb": Shrunk(
        (("--arch cnn", f"--arch cnn {FEW_EPOCHS}"),), "20 MNIST epochs take minutes"),
    "vae train --arch mlp -o runs/mlp.safetensors --tensorboard tb": Shrunk(
        (("--arch mlp", f"--arch mlp {FEW_EPOCHS}"),), "20 MNIST epochs take minutes"),
    "vae train --resume vae.safetensors --epochs 30 --tensorboard tb": Shrunk(
        (("--epochs 30", "--epochs 2"),), "resumes the 1-epoch quick-start model: one more epoch shows it"),
}
SKIPPED = {
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu && pip install .":
        "installs packages from the network",
    "pip install '.[test]' && python -m pytest": "installs packages and runs the suite this test is part of",
    "pip install 'vaecli[onnx]'": "installs packages from the network; tests/test_export.py needs them installed",
    "torchrun --standalone --nproc-per-node 4 -m vaecli train --arch cnn --device cuda --batch-size 512 "
    "-o gpu4.safetensors": "needs 4 CUDA GPUs",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host1:29400 --rdzv-id vae1 "
    "-m vaecli train --arch resnet --device cuda -o nodes.safetensors": "needs two machines with 8 GPUs each",
    "vae ood -m fashion-mnist --known fashion-mnist --unusual mnist --limit 2000 -k 16 -o roc.png":
        "needs Fashion-MNIST (this test copies MNIST only) and takes 18 minutes on 2 shared CPU cores",
    "vae tour -m mnist --html -o page/ | tail -1 | xargs -I{} python scripts/screenshot_html.py {} page.png":
        "needs Chromium and the checkout's scripts/; tests/test_tour_html.py runs it when Chromium is on PATH",
    "python scripts/screenshot_html.py page/tour.html page.png":
        "needs Chromium and the checkout's scripts/; tests/test_tour_html.py runs it when Chromium is on PATH",
    "vae explore -m mnist --open": "serves until Ctrl-C and opens a browser; tests/test_explore*.py run the server",
    "vae explore": "serves until Ctrl-C; tests/test_explore*.py run the server",
    "vae explore -m mnist-resnet --open": "serves until Ctrl-C and opens a browser; tests/test_explore*.py run it",
    "vae explore -m vae.safetensors --port 0": "serves until Ctrl-C; tests/test_explore*.py run the server",
    "pip install -e '.[test]'": "installs packages",
    "pip install 'vaecli[tensorboard]'": "installs packages from the network",
    "tensorboard --logdir tb": "serves until Ctrl-C; scripts/tensorboard_screenshots.py runs it for the docs' pictures",
    "python -m pytest": "runs the suite this test is part of",
    'python -m pytest -m "not slow"': "runs the suite this test is part of",
    "bash .ci/run": "makes a fresh venv and installs torch into it (about 6 GB)",
    "echo 'source ~/.local/share/bash-completion/completions/vae' >> ~/.bashrc": "edits the shell's startup file",
    "echo 'fpath+=(~/.zfunc); autoload -U compinit && compinit' >> ~/.zshrc": "edits the shell's startup file",
}
# Programs some examples pipe into, with the option that shows they work (a stand-in may only exist).
TOOLS = {"jq": "--version", "convert": "-version"}
# Commands that need an optional extra, by a regex that finds them: where its packages are missing, they are
# reported as not run (CI installs the extras; `pip install '.[test]'` alone does not).
EXTRAS = {r"\bvae export\b": ("onnx", ("onnx", "onnxscript", "onnxruntime")),
          r"--tensorboard\b": ("tensorboard", ("tensorboard",))}
OPTION = r"(?<![\w-])--?[a-z][\w-]*"  # an option's name in prose: -o, --out, not recon-NAME
# A pipeline into `head` ends its writer early: SIGPIPE (141) there is how the documented pipelines work.
SIGPIPE_OK = ("| head",)


def _without_comment(line: str) -> str:
    """The line up to its shell comment: an unquoted `#` that starts a word."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells, `\\|` kept inside its cell."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def _unquote_cell(cell: str) -> str:
    return cell.strip("`").replace("\\|", "|")


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def pages() -> list[Path]:
    """The README, then every docs page in name order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _shown(page: Path) -> str:
    return str(page.relative_to(REPO))


# A table of commands whose last column holds a command to run: the README's examples, usage.md's pipelines.
COMMAND_TABLE = r"^\| command \|[^\n]*\| (a pipeline|example) \|$"


def page_commands(text: str) -> list[str]:
    """Every command in a page's ```sh blocks and its command tables' example column, in page order."""
    found = []
    for match in re.finditer(rf"^```sh\n(.*?)^```$|{COMMAND_TABLE}", text, re.S | re.M):
        if match.group(1) is not None:
            block = re.sub(r"\s*\\\n\s*", " ", match.group(1))  # continued lines are one command
            found += [cmd for cmd in map(_without_comment, block.splitlines()) if cmd]
        else:
            column = _cells(match.group(0)).index(match.group(2))
            found += [_unquote_cell(row[column]) for row in _table(text[match.start():], "| command |")]
    return found


def all_commands() -> list[str]:
    return [command for page in pages() for command in page_commands(page.read_text())]


def _command_to_run(command: str) -> str:
    """The command with its SHRUNK edits made."""
    shrunk = SHRUNK.get(command)
    for old, new in shrunk.edits if shrunk else ():
        command = command.replace(old, new, 1)
    return command


def cli_options() -> dict[str, set[str]]:
    """Each subcommand's options as `vae SUB --help` lists them ('' for `vae` itself)."""
    import typer.main

    group = typer.main.get_command(app)
    options = {"": {opt for param in group.params for opt in param.opts + param.secondary_opts} | {"-h", "--help"}}
    for name, command in group.commands.items():
        options[name] = {"-h", "--help"} | {
            opt for param in command.params if not getattr(param, "hidden", False)
            for opt in param.opts + param.secondary_opts if opt.startswith("-")
        }
    return options


def vae_calls(command: str) -> list[tuple[str, list[str]]]:
    """(subcommand, option words) of each `vae SUB ...` or `-m vaecli SUB ...` in a shell command."""
    calls = []
    for inner in re.findall(r"\$\(([^()]*)\)", command):  # command substitutions are commands too
        calls += vae_calls(inner)
    lexer = shlex.shlex(re.sub(r"\$\([^()]*\)", "SUBST", command), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    for i, word in enumerate(words):
        if not (word == "vae" or (word == "vaecli" and i > 0 and words[i - 1] == "-m")):
            continue
        rest = []
        for token in words[i + 1:]:
            if set(token) <= set("|&;<>()"):  # a pipe, list or redirection ends this call
                break
            rest.append(token)
        name = rest[0] if rest and not rest[0].startswith("-") else ""
        calls.append((name, [w.split("=")[0] for w in rest[1 if name else 0:] if w.startswith("-") and w != "-"]))
    return calls


def _unknown_options(command: str, known: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, options in vae_calls(command):
        if name.isupper():
            continue  # a placeholder: `vae COMMAND ...`
        if name not in known:
            problems.append(f"`vae {name}` is not a command")
            continue
        problems += [f"`vae {name}` has no option {opt}" for opt in options if opt not in known[name]]
    return problems


def test_every_documented_command_is_run_shrunk_or_skipped():
    commands = all_commands()
    listed = [*RUN_AS_WRITTEN, *SHRUNK, *SKIPPED]
    unknown = [cmd for cmd in commands if cmd not in listed]
    assert not unknown, "README or docs/ commands this test does not know: add each to RUN_AS_WRITTEN, SHRUNK " \
                        "or SKIPPED in tests/test_readme.py:\n" + "\n".join(unknown)
    gone = [cmd for cmd in listed if cmd not in commands]
    assert not gone, "no longer in the README or docs/: remove from tests/test_readme.py:\n" + "\n".join(gone)
    assert len(listed) == len(set(listed)), "a command is listed twice"
    for command, shrunk in SHRUNK.items():
        for old, _ in shrunk.edits:
            assert old in command, f"{command!r} has no {old!r} to replace"


def _page_option_problems(text: str, known: dict[str, set[str]]) -> list[str]:
    """Options a page uses or names that its command does not have."""
    problems = [p for cmd in page_commands(text) for p in _unknown_options(cmd, known)]
    # Inline code in the prose and tables (`vae train --resume`, `vae sample [-n 16]`), brackets dropped.
    for span in re.findall(r"`([^`]+)`", _prose(text)):
        if re.search(r"(^|[\s(])vae\s", span):
            problems += _unknown_options(re.sub(r"[][]", " ", span.replace("\\|", "|")), known)
    # In each table of commands, the first two columns name options of the commands in the first (one, or
    # several that share a row: `vae decode`, `vae encode`).
    for header in re.finditer(r"^\| command \|", text, re.M):
        for row in _table(text[header.start():], "| command |"):
            names = re.findall(r"`vae ([\w-]+)", row[0])
            assert names, f"a row of a table of commands names no command: {row[0]}"
            spans = " ".join(re.findall(r"`([^`]*)`", " ".join(row[:2])))
            problems += [f"`vae {name}` has no option {opt}" for name in names if name in known
                         for opt in re.findall(OPTION, spans) if opt not in known[name]]
            problems += [f"`vae {name}` is not a command" for name in names if name not in known]
    return problems


def test_documented_options_exist():
    """Every option the README and docs/ use or name is one that `vae SUB --help` lists, run or not."""
    known = cli_options()
    problems = [f"{_shown(page)}: {problem}" for page in pages()
                for problem in _page_option_problems(page.read_text(), known)]
    # The training table says it lists every option: both ways, then.
    with_table = [page for page in pages() if re.search(r"^\| option \|", page.read_text(), re.M)]
    assert len(with_table) == 1, f"one page should hold the table of training options, not {with_table}"
    table = {opt for row in _table(with_table[0].read_text(), "| option |") for opt in re.findall(OPTION, row[0])}
    problems += [f"`vae train` has no option {opt}" for opt in sorted(table - known["train"])]
    problems += [f"the training table lacks {opt}" for opt in sorted(known["train"] - table - {"-h", "--help"})]
    assert not problems, "\n".join(problems)


def _prose(text: str) -> str:
    """A page without its fenced blocks: what a reader sees as text, tables and inline code."""
    return re.sub(r"^```.*?^```$", "", text, flags=re.S | re.M)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text stays
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading's anchor gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.*)$", _prose(page.read_text()), re.M):
        anchor = base = github_anchor(heading)
        count = 0
        while anchor in found:
            count += 1
            anchor = f"{base}-{count}"
        found.add(anchor)
    return found


def links(text: str) -> list[str]:
    """The targets of a page's links and images outside code: [text](target), ![alt](target)."""
    prose = re.sub(r"`[^`\n]*`", "", _prose(text))
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def test_links_images_and_anchors_resolve():
    """Every relative link and image in the README and docs/ names a file, and every #anchor a heading."""
    problems = []
    for page in pages():
        for target in links(page.read_text()):
            if re.match(r"[a-z][\w+.-]*:", target):  # https:, mailto:: another site's
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                problems.append(f"{_shown(page)}: {target}: no such file")
            elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
                problems.append(f"{_shown(page)}: {target}: no heading with that anchor")
    assert not problems, "\n".join(problems)


def test_the_module_map_names_every_module():
    """docs/development.md's module map has a line for every module of the package."""
    package = Path(vaecli.__file__).parent
    text = DEVELOPMENT.read_text()
    missing = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if path.name != "__init__.py" or path.parent == package]
    missing = [name for name in missing if f"| `{name}` |" not in text]
    assert not missing, "add to the module map in docs/development.md: " + ", ".join(missing)


def _write_inputs(folder: Path, home: Path, mnist_root: Path) -> None:
    """The files the examples name and the docs do not make: a folder of 'cats'.

    a.png, b.png and drawing.png are the quick start's to write (scripts/export_images.py), as a reader's are."""
    import numpy as np

    from vaecli.data.datasets import load_dataset

    data = load_dataset("mnist", "test", data_root=mnist_root, limit=60)
    pixels = data.images[:, 0].numpy()
    for i in range(len(pixels)):  # RGB, 40x40: converted and resized by --channels 3 --image-size 32
        kind = home / "pictures" / "cats" / ("tabby" if i % 2 else "black")
        kind.mkdir(parents=True, exist_ok=True)
        rgb = np.stack([pixels[i], pixels[i] // 2, 255 - pixels[i]], axis=-1)
        Image.fromarray(rgb).resize((40, 40)).save(kind / f"cat-{i}.png")


def _works(tool: str, flag: str) -> bool:
    """Whether `tool flag` succeeds: the program is there and is the real one."""
    try:
        return subprocess.run([tool, flag], capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


def _tools(folder: Path) -> Path:
    """A bin folder where `vae`, `python` and `torchrun` are this checkout's, run by this interpreter."""
    folder.mkdir()
    python = shlex.quote(sys.executable)
    for name, program in (("vae", f"{python} -m vaecli"), ("python", python),
                          ("torchrun", f"{python} -m torch.distributed.run")):
        (folder / name).write_text(f'#!/bin/sh\nexec {program} "$@"\n')
        (folder / name).chmod(0o755)
    return folder


def page_sections(page: Path) -> list[tuple[str, list[str]]]:
    """(page: heading, commands) of each `## ` section of a page that has commands, in page order."""
    sections = []
    for chunk in re.split(r"^(?=## )", page.read_text(), flags=re.M):
        commands = page_commands(chunk)
        if commands:
            sections.append((f"{_shown(page)}: {chunk.splitlines()[0]}", commands))
    return sections


class Lane(NamedTuple):
    """A folder the documented commands run in, a home of its own, and the environment they see."""

    work: Path
    home: Path
    env: dict[str, str]

    def copy(self, to: Path) -> Lane:
        """A new lane that starts from this one's files, as a reader who turns to another section would."""
        work, home = to / "work", to / "home"
        shutil.copytree(self.work, work, symlinks=True)
        shutil.copytree(self.home, home, symlinks=True)
        return Lane(work, home, {**self.env, "HOME": str(home)})


def _missing(tools: dict[str, str]) -> dict[str, str]:
    """What cannot run here, as {regex that finds a command needing it: its name}: tools and optional extras."""
    import importlib.util

    missing = {rf"\b{tool}\b": tool for tool, flag in tools.items() if not _works(tool, flag)}
    for pattern, (extra, modules) in EXTRAS.items():
        if any(importlib.util.find_spec(module) is None for module in modules):
            missing[pattern] = f"the {extra} extra"
    return missing


def _run_commands(commands: list[str], lane: Lane, missing_tools: dict[str, str]) -> tuple[list[str], list[str]]:
    """Run each command in order in the lane: the failures (command, status, stderr) and those not run."""
    failures, not_run = [], []
    for command in commands:
        if command not in RUN_AS_WRITTEN and command not in SHRUNK:
            continue  # skipped with a reason, or unknown (and then the listing test fails): never run blind
        missing = [name for pattern, name in missing_tools.items() if re.search(pattern, command)]
        if missing:
            not_run.append(f"{command}  (needs {', '.join(missing)})")
            continue
        script = _command_to_run(command)
        done = subprocess.run(["bash", "-c", f"set -o pipefail\n{script}"], cwd=lane.work, env=lane.env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode == 0 or (done.returncode == 141 and any(end in command for end in SIGPIPE_OK)):
            continue
        # Later commands may fail only because this one did; all are reported, the first is the one to fix.
        failures.append(f"$ {script}\nexit {done.returncode}\n{_stderr_excerpt(done.stderr)}")
    return failures, not_run


def _stderr_excerpt(stderr: str) -> str:
    """The last 2000 characters, after any earlier line that names an error: under torchrun, a worker's own
    message comes before the launcher's long summary and would otherwise be cut."""
    text = stderr.strip()
    head = [line for line in text[:-2000].splitlines() if re.search(r"error|terminate|what\(\)|abort", line, re.I)]
    return "\n".join([*head[-10:], *(["..."] if head else []), text[-2000:]])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_documented_commands_run(mnist_root, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    work, home = tmp_path / "start" / "work", tmp_path / "start" / "home"
    work.mkdir(parents=True)
    _write_inputs(work, home, mnist_root)
    env = {key: value for key, value in os.environ.items() if key not in ("VAE_MODEL", "VAE_DEVICE")}
    env.update(
        PATH=f"{_tools(tmp_path / 'bin')}{os.pathsep}{env['PATH']}", HOME=str(home),
        VAE_DATA_ROOT=str(mnist_root), VAE_OFFLINE="1", NO_COLOR="1",
        # The checkout's package, also where it is installed elsewhere (CI installs a copy).
        PYTHONPATH=os.pathsep.join([str(Path(vaecli.__file__).parent.parent), *filter(None, [env.get("PYTHONPATH")])]),
    )
    start = Lane(work, home, env)
    missing_tools = _missing(TOOLS)
    (heading, first), *later = [section for page in pages() for section in page_sections(page)]
    assert heading.startswith("README.md: ## Quick start"), heading
    assert [cmd for _, commands in [(heading, first), *later] for cmd in commands] == all_commands()
    # The README's quick start first; then each section of each page, in order, in a copy of what the quick
    # start left, two at a time (most of a command's time is Python and torch starting, which one core does).
    results = [_run_commands(first, start, missing_tools)]
    lanes = [start.copy(tmp_path / f"section-{i}") for i in range(len(later))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results += pool.map(_run_commands, [commands for _, commands in later], lanes, [missing_tools] * len(lanes))
    headings = [heading, *(name for name, _ in later)]
    failures = [f"{name}\n{failure}" for name, (found, _) in zip(headings, results, strict=True) for failure in found]
    assert not failures, "documented commands that failed (each section runs in order, after the quick " \
                         "start):\n\n" + \
        "\n\n".join(failures)
    not_run = [line for _, missing in results for line in missing]
    if not_run:
        pytest.skip("documented commands not run, for want of a tool:\n" + "\n".join(not_run))


def test_docs_model_is_the_quick_start_model(cli, mnist_root, tmp_path, monkeypatch):
    """docs/quickstart.safetensors records the quick start's training command, and the README its numbers."""
    monkeypatch.setenv("VAE_DATA_ROOT", str(mnist_root))
    meta = read_metadata(DOCS_MODEL)
    # The command a fresh `vae train --arch cnn` records, its options all spelled out, from a 1-image run.
    args = shlex.split(QUICK_START_TRAIN)[1:]
    result = cli(*args, "--epochs", "1", "--limit", "1", "--no-report", "-q", "-o", tmp_path / "one.safetensors")
    assert result.exit_code == 0, result.stderr
    one = read_metadata(tmp_path / "one.safetensors")["command"]
    expected = re.sub(r" --limit 1\b", "", re.sub(r"--epochs 1\b", "--epochs 20", one))
    # The docs model predates --upsampling, and loads with the transposed convolution a grey model still gets.
    assert " --upsampling transpose" in expected
    expected = expected.replace(" --upsampling transpose", "")
    assert meta["command"] == expected, "docs/quickstart.safetensors was not trained as the quick start trains"
    caption = (f"(`{QUICK_START_TRAIN}`: CNN, latent {meta['latent_dim']}, {meta['epochs_done']} epochs, "
               f"test loss {meta['history'][-1]['test']['loss']:.1f} nats)")
    assert caption in " ".join(README.read_text().split()), f"the figures' caption in the README should read {caption}"


def _largest_difference(drawn: Path, kept: Path) -> int:
    """0 for the same bytes, else the largest difference in one channel of one pixel (256: another size)."""
    import numpy as np

    if drawn.read_bytes() == kept.read_bytes():
        return 0
    with Image.open(drawn) as first, Image.open(kept) as second:
        if first.size != second.size:
            return 256
        pixels = [np.asarray(image.convert("RGBA"), dtype=np.int16) for image in (first, second)]
    return int(np.abs(pixels[0] - pixels[1]).max())


@pytest.mark.slow
def test_docs_figures_are_fresh(cli, mnist_root, tmp_path, monkeypatch):
    """`vae tour` on the docs model draws docs/*.png again: the same pixels, to within rounding."""
    monkeypatch.setenv("VAE_DATA_ROOT", str(mnist_root))
    # CPU: a GPU's kernels would round differently; the figures were made on a CPU.
    result = cli("tour", "-m", DOCS_MODEL, "-o", tmp_path / "tour", "--seed", "0", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "instead" not in result.stderr, result.stderr  # no fallback to another dataset
    differences = {name: _largest_difference(tmp_path / "tour" / name, DOCS / name) for name in FIGURES}
    stale = [f"{name} (a pixel off by {levels})" for name, levels in differences.items() if levels > PIXEL_TOLERANCE]
    assert not stale, f"{', '.join(stale)} in docs/ differ from what `vae tour` draws: run scripts/make_docs_figures.sh"
