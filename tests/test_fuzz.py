"""Untrusted files: nothing executes code, metadata is bounded and checked field by field, and thousands of
mutated checkpoints and PNGs (fixed seeds) either load or fail with a VaeError, quickly and without a traceback.
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

import vaecli
from vaecli.errors import CheckpointError, VaeError

from tests.helpers.safetensors_bytes import join_safetensors, split_safetensors

PACKAGE = Path(vaecli.__file__).parent
# A crafted file must not hang a loader. A hang guard, not a speed bound: a case takes milliseconds, and
# this leaves room for a machine loaded many times over.
CASE_BUDGET_S = 30.0

# --- nothing in the package can execute a file's contents ---------------------------------------------

UNSAFE = {
    "torch.load (unpickles)": re.compile(r"\btorch\.load\b"),
    "pickle": re.compile(r"\b(c?pickle|dill|shelve|marshal)\b|allow_pickle\s*=\s*True"),
    "eval(": re.compile(r"(?<![\w.])eval\s*\("),  # a module's .eval() method is fine
    "exec(": re.compile(r"(?<![\w.])exec\s*\("),
}


def unsafe_uses(text: str) -> list[str]:
    return [what for line in text.splitlines() for what, pattern in UNSAFE.items() if pattern.search(line)]


def test_the_scan_tells_calls_from_methods():
    assert unsafe_uses("x = eval(text)") == ["eval("]
    assert unsafe_uses("state = torch.load(path)") == ["torch.load (unpickles)"]
    assert unsafe_uses("import pickle") == ["pickle"]
    assert unsafe_uses("np.load(f, allow_pickle=True)") == ["pickle"]
    assert unsafe_uses("model.eval()\nnp.load(f, allow_pickle=False)\nevaluate(model)\nmodel = place(m).eval()") == []


# CIFAR ships its batches as pickles: one module reads them through an unpickler that builds numpy arrays
# only (test_hostile_cache checks that a batch naming a function is refused before it runs). There, and
# only there, these lines may name pickle; a plain pickle.load anywhere is still found.
RESTRICTED_UNPICKLER = ("data/torchvision_sets.py", re.compile(
    r"^\s*#|^import pickle$|pickle\.(Unpickler|UnpicklingError)\b|_ArraysOnly\(handle"))


def test_package_never_unpickles_or_evaluates():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10  # the scan did see the package
    found = [f"{path.relative_to(PACKAGE)}: {what}" for path in files for what in unsafe_uses(_scanned(path))]
    assert found == []


def _scanned(path: Path) -> str:
    name, allowed = RESTRICTED_UNPICKLER
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines if path != PACKAGE / name or not allowed.search(line))


def test_the_restricted_unpickler_is_the_only_pickle_reader():
    text = (PACKAGE / RESTRICTED_UNPICKLER[0]).read_text()
    assert "def find_class" in text and "pickle.load(" not in text and "pickle.loads(" not in text


# --- metadata: bounded, then validated field by field --------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> bytes:
    """A real checkpoint of a small MLP (about 300 kB with its Adam state), cheap to mutate and load."""
    from typer.testing import CliRunner

    from vaecli.cli import app

    out = tmp_path_factory.mktemp("fuzz") / "mlp.safetensors"
    args = ["train", "--dataset", "digits", "--arch", "mlp", "--hidden", "16", "--latent-dim", "2", "--limit", "64",
            "--epochs", "1", "--device", "cpu", "--no-report", "-q", "-o", str(out)]
    result = CliRunner().invoke(app, args, env={"VAE_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_header_over_the_size_limit_is_refused_unread(small_checkpoint, tmp_path, monkeypatch):
    from vaecli.store import checkpoint, safetensors_file

    path = tmp_path / "m.safetensors"
    path.write_bytes(small_checkpoint)
    (length,) = struct.unpack("<Q", small_checkpoint[:8])
    monkeypatch.setattr(safetensors_file, "MAX_HEADER_BYTES", length - 1)
    with pytest.raises(CheckpointError, match="too large"):
        checkpoint.read_metadata(path)
    monkeypatch.setattr(safetensors_file, "MAX_HEADER_BYTES", length)
    assert checkpoint.read_metadata(path)["format"] == "vaecli-checkpoint"
    # A length prefix of 2**63 with a file (sparse) long enough to hold it: refused from the prefix alone.
    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as handle:
        handle.write(struct.pack("<Q", safetensors_file.MAX_HEADER_BYTES + 1))
        handle.truncate(safetensors_file.MAX_HEADER_BYTES + 64)
    with pytest.raises(CheckpointError, match="too large"):
        checkpoint.read_metadata(huge)


# (where in the stored config, a value of the wrong type or range)
BAD_FIELDS = [
    ("model.latent_dim", "4"), ("model.latent_dim", 4.0), ("model.latent_dim", True), ("model.latent_dim", None),
    ("model.latent_dim", 0), ("model.arch", 7), ("model.arch", "mlp; rm -rf /"), ("model.channels", 2),
    ("model.height", -28), ("model.hidden", 10**9), ("model.likelihood", "poisson"), ("epochs", 0),
    ("batch_size", [64]), ("lr", "0.1"), ("lr", float("nan")), ("lr", 1e9), ("beta", float("inf")),
    ("beta", -1), ("binarize", 1), ("seed", "0"), ("limit", 0), ("lr_schedule", "linear"), ("dataset", 3),
]


@pytest.mark.parametrize(("where", "value"), BAD_FIELDS, ids=lambda v: str(v)[:20])
def test_every_config_field_is_checked(small_checkpoint, tmp_path, where, value):
    from vaecli.store.checkpoint import read_metadata
    from vaecli.store.metadata import train_config_from_dict

    header, data = split_safetensors(small_checkpoint)
    meta = json.loads(header["__metadata__"]["vaecli"])
    *parents, last = where.split(".")
    node = meta["config"]
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(CheckpointError) as caught:
        train_config_from_dict(meta["config"])
    assert last in caught.value.message or "must" in caught.value.message or "unknown" in caught.value.message
    header["__metadata__"]["vaecli"] = json.dumps(meta)
    (tmp_path / "m.safetensors").write_bytes(join_safetensors(header, data))
    with pytest.raises(CheckpointError, match="m.safetensors"):
        read_metadata(tmp_path / "m.safetensors")


# --- mutations -----------------------------------------------------------------------------------------

ODD_VALUES = [None, True, False, -1, 0, 1, 3, 2**31, 2**63, 10**400, -(10**9), 0.5, float("nan"), float("inf"),
              "", "x" * 10_000, "mlp", "cnn", [], [1, 2], [[[[]]]], {}, {"a": {"b": 1}}]


def _paths(node, path=()):
    """Every (path, value) in a JSON tree, containers included."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:8]):
            yield from _paths(value, (*path, index))


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def mutate_checkpoint(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random damage of a checkpoint: (what was done, the bytes)."""
    header, data = split_safetensors(raw)
    start = len(raw) - len(data)
    kind = rng.choice(["flip_header", "flip_data", "truncate", "meta_value", "meta_value", "meta_value",
                       "tensor_table", "tensor_table", "meta_text", "length_prefix", "drop_key"])
    out = bytearray(raw)
    if kind == "flip_header":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(start)] ^= 1 << rng.randrange(8)
    elif kind == "flip_data":
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(start, len(raw))] = rng.randrange(256)
    elif kind == "truncate":
        return kind, raw[: rng.randrange(len(raw))]
    elif kind == "meta_value":
        meta = json.loads(header["__metadata__"]["vaecli"])
        path = rng.choice([p for p in _paths(meta) if p])
        _set(meta, path, rng.choice(ODD_VALUES))
        header["__metadata__"]["vaecli"] = json.dumps(meta)
        return f"{kind} {'.'.join(map(str, path))}", join_safetensors(header, data)
    elif kind == "tensor_table":
        name = rng.choice([k for k in header if k != "__metadata__"])
        field = rng.choice(["shape", "dtype", "data_offsets"])
        entry = header[name]
        if field == "dtype":
            entry["dtype"] = rng.choice(["F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "X9", 3, None])
        elif entry[field] and rng.random() < 0.7:
            entry[field][rng.randrange(len(entry[field]))] = rng.choice([0, 1, 7, 2**40, -3, 2**64, 1.5])
        else:
            entry[field] = rng.choice(ODD_VALUES)
        return f"{kind} {name}.{field}", join_safetensors(header, data)
    elif kind == "meta_text":
        text = header["__metadata__"]["vaecli"]
        header["__metadata__"]["vaecli"] = rng.choice(
            ["", "{", "[]", "null", "7", '"text"', "[" * 50_000, "{" * 50_000, '{"format_version": 1e999}',
             '{"format_version": 1, "config": "x"}', text[: rng.randrange(len(text))], text + "}", text * 2]
        )
        return kind, join_safetensors(header, data)
    elif kind == "length_prefix":
        (length,) = struct.unpack("<Q", raw[:8])
        out[:8] = struct.pack("<Q", rng.choice([0, 1, 2, length - 1, length + 1, len(raw), 2**32, 2**64 - 1]))
    else:  # drop_key: a missing tensor, missing metadata, or an extra tensor name
        choice = rng.choice([k for k in header] + ["extra"])
        if choice == "extra":
            header["model.extra.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        else:
            del header[choice]
        return f"{kind} {choice}", join_safetensors(header, data)
    return kind, bytes(out)


def small_png(rng: random.Random) -> bytes:
    """A little PNG in a random mode: grey, RGB, alpha, palette, 1-bit or 16-bit."""
    size = (rng.randint(1, 40), rng.randint(1, 40))
    image = Image.frombytes("L", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1])))
    mode = rng.choice(["L", "RGB", "RGBA", "P", "1", "LA", "I;16"])
    image = image.convert("I").point(lambda v: v * 257).convert("I;16") if mode == "I;16" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mutate_png(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["flip", "truncate", "ihdr", "chunk_length", "chunk_type"])
    out = bytearray(raw)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        return kind, raw[: rng.randrange(len(raw))]
    elif kind == "ihdr":  # width, height, depth, colour type... (bytes 16-28), CRC left stale or not
        position = rng.randrange(16, 29)
        out[position] = rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 0x7F, 0xFF])
        if rng.random() < 0.5:
            import zlib

            out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif kind == "chunk_length":
        out[8:12] = struct.pack(">I", rng.choice([0, 1, 12, 2**31 - 1, 2**32 - 1, 10**6]))
    else:  # a chunk type renamed, critical or not
        out[37:41] = rng.choice([b"IDAT", b"IEND", b"zzzz", b"PLTE", b"tRNS", b"\0\0\0\0"])
    return kind, bytes(out)


class _OverBudget(Exception):
    pass


@contextmanager
def time_budget(seconds: float):
    """Interrupt a case that runs longer than `seconds` (a hang becomes a failure, not a stuck test)."""

    def alarm(signum, frame):
        raise _OverBudget()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_vae_error(call, case: str) -> bool:
    """True when call() succeeds, False on a VaeError; anything else, or running over budget, fails the test."""
    try:
        with time_budget(CASE_BUDGET_S):
            call()
        return True
    except VaeError as exc:
        assert "\n" not in exc.message, f"{case}: a multi-line message: {exc.message!r}"
        return False
    except _OverBudget:
        raise AssertionError(f"{case}: over the {CASE_BUDGET_S} s budget") from None
    except Exception as exc:  # noqa: BLE001 - this is the assertion
        raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc


@pytest.mark.slow
def test_fuzzed_checkpoints_load_or_fail_cleanly(small_checkpoint, tmp_path):
    import torch

    from vaecli.store.checkpoint import load_checkpoint, read_metadata

    rng = random.Random(1729)
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"read_metadata": [0, 0], "load_checkpoint": [0, 0]}

    def load() -> None:
        checkpoint = load_checkpoint(path, training_state=True)
        with torch.no_grad():  # what loads is usable
            z = torch.zeros(1, checkpoint.config.model.latent_dim)
            assert checkpoint.model.decode(z).shape[1:] == checkpoint.config.model.image_shape

    # Every case goes to the metadata reader; one in four also to the full loader (the slow part).
    for case in range(2400):
        what, data = mutate_checkpoint(small_checkpoint, rng)
        path.write_bytes(data)
        name = f"checkpoint case {case} ({what})"
        outcomes["read_metadata"][loads_or_vae_error(lambda: read_metadata(path), name)] += 1
        if case % 4 == 0:
            outcomes["load_checkpoint"][loads_or_vae_error(load, name)] += 1
    # Both outcomes happen for both loaders: the mutations are neither all harmless nor all fatal.
    assert all(refused and loaded for refused, loaded in outcomes.values()), outcomes


@pytest.mark.slow
def test_fuzzed_pngs_open_or_fail_cleanly(tmp_path):
    from vaecli.data.images import image_to_tensor, open_image

    rng = random.Random(4242)
    path = tmp_path / "fuzz.png"
    outcomes = [0, 0]
    for case in range(1500):
        what, data = mutate_png(small_png(rng), rng)
        path.write_bytes(data)
        channels = rng.choice([1, 3])

        def decode(channels: int = channels) -> None:
            pixels = image_to_tensor(open_image(path), channels, 28, 28)
            assert tuple(pixels.shape) == (channels, 28, 28) and str(pixels.dtype) == "torch.uint8"

        outcomes[loads_or_vae_error(decode, f"png case {case} ({what})")] += 1
    assert all(outcomes), outcomes


def test_fuzzed_checkpoints_through_vae_info(cli, small_checkpoint, tmp_path):
    rng = random.Random(99)
    codes = {0: 0, 2: 0}
    for case in range(50):
        what, data = mutate_checkpoint(small_checkpoint, rng)
        Path("m.safetensors").write_bytes(data)
        args = ["info", "m.safetensors"] + (["--json"] if case % 2 else [])
        where = f"case {case} ({what}): vae {' '.join(args)}"
        with time_budget(CASE_BUDGET_S * 2):
            result = cli(*args)
        assert result.exit_code in codes, f"{where}: {result.stderr}"
        assert "Traceback" not in result.stderr, f"{where}: {result.stderr}"
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: m.safetensors"), f"{where}: {result.stderr}"
            assert result.stdout == ""
        else:
            assert result.stdout and result.stderr == "", where
            if "--json" in args:
                assert json.loads(result.stdout)["format"] == "vaecli-checkpoint", where
        codes[result.exit_code] += 1
    assert codes[0] and codes[2], codes
