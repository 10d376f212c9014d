"""Untrusted files: nothing executes code, metadata is bounded, and fuzzed inputs fail cleanly."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

import vaecli
from vaecli.errors import VaeError

PACKAGE = Path(vaecli.__file__).parent
UNSAFE = {
    "torch.load (unpickles)": re.compile(r"torch\.load\b"),
    "pickle": re.compile(r"\bpickle\b|allow_pickle\s*=\s*True"),
    "eval(": re.compile(r"(?<![\w.])eval\("),
    "exec(": re.compile(r"(?<![\w.])exec\("),
}
CASE_BUDGET_S = 2.0  # one load may not take longer than this, so a crafted file cannot hang us


def test_package_never_unpickles_or_evaluates():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in UNSAFE.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(PACKAGE)}:{number}: {what}: {line.strip()}")
    assert found == []
    assert len(list(PACKAGE.rglob("*.py"))) > 10  # the scan did look at the package


def test_metadata_over_the_size_limit_is_refused(tiny_model, tmp_path, monkeypatch):
    from vaecli import checkpoint
    from vaecli.errors import CheckpointError

    (length,) = struct.unpack("<Q", tiny_model.read_bytes()[:8])
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", length - 1)
    with pytest.raises(CheckpointError, match="too large"):
        checkpoint.read_header(tiny_model)
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", length)
    checkpoint.read_header(tiny_model)


def test_a_huge_declared_header_is_refused_without_reading_it(tmp_path):
    from vaecli.checkpoint import MAX_HEADER_BYTES, read_header
    from vaecli.errors import CheckpointError

    path = tmp_path / "big.safetensors"
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        handle.truncate(MAX_HEADER_BYTES + 100)  # sparse: the length fits in the file
    with pytest.raises(CheckpointError, match="too large"):
        read_header(path)


# --- mutations -----------------------------------------------------------------------------------------

ODD_VALUES = [None, -1, 0, 1, 2**63, 10**9, -(10**9), 1.5, float("inf"), True, "", "x" * 5000, "mlp", [], [1, 2],
              {}, {"a": 1}, [[[[[]]]]]]


def split(raw: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _leaves(node, path=()):
    """Every (path, value) in a JSON tree, containers included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))


def _replace(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def mutate_checkpoint(raw: bytes, rng: random.Random) -> bytes:
    header, data = split(raw)
    header_end = len(raw) - len(data)
    kind = rng.randrange(6)
    if kind == 0:  # flip bytes in the header
        out = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 1:  # flip bytes in the tensors
        out = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(header_end, len(raw))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:  # truncate anywhere
        return raw[: rng.randrange(len(raw))]
    if kind == 3:  # edit one value of the vaecli metadata
        meta = json.loads(header["__metadata__"]["vaecli"])
        paths = [p for p, _ in _leaves(meta) if p]
        _replace(meta, rng.choice(paths), rng.choice(ODD_VALUES))
        header["__metadata__"]["vaecli"] = json.dumps(meta)
        return join(header, data)
    if kind == 4:  # edit the tensor table: shapes, dtypes, offsets
        name = rng.choice([k for k in header if k != "__metadata__"])
        field = rng.choice(["shape", "dtype", "data_offsets"])
        entry = header[name]
        if field == "dtype":
            entry["dtype"] = rng.choice(["F16", "F64", "I64", "U8", "BOOL", "X9", 3])
        elif isinstance(entry[field], list) and entry[field] and rng.random() < 0.7:
            entry[field][rng.randrange(len(entry[field]))] = rng.choice([0, 1, 7, 2**40, -3, 2**64])
        else:
            entry[field] = rng.choice(ODD_VALUES)
        return join(header, data)
    # kind 5: edit the raw metadata text (broken JSON, deep nesting, odd types)
    header["__metadata__"]["vaecli"] = rng.choice(
        ["", "{", "[]", "null", "1", '"s"', "[" * 100_000, '{"format_version": 1e999}',
         header["__metadata__"]["vaecli"][: rng.randrange(200)]]
    )
    return join(header, data)


def small_png(rng: random.Random) -> bytes:
    mode = rng.choice(["L", "RGB", "RGBA", "P", "1", "LA", "I;16"])
    size = (rng.randint(1, 12), rng.randint(1, 12))
    image = Image.new("L", size)
    image.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
    image = image.convert("I;16") if mode == "I;16" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mutate_png(raw: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    out = bytearray(raw)
    if kind == 0:  # flip a few bytes anywhere
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        return raw[: rng.randrange(len(raw))]
    elif kind == 2:  # a huge or odd size, mode or depth in IHDR (bytes 16-28)
        position = rng.randrange(16, 29)
        out[position] = rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 0x7F, 0xFF])
    else:  # a chunk length set to something wild
        out[8:12] = struct.pack(">I", rng.choice([0, 1, 2**31 - 1, 2**32 - 1, 10**6]))
    return bytes(out)


def _load_or_vae_error(call, case: str) -> bool:
    """True when call() succeeded; a VaeError is fine; anything else fails the test with the case."""
    started = time.perf_counter()
    try:
        call()
        ok = True
    except VaeError:
        ok = False
    except Exception as exc:  # noqa: BLE001 - this is the assertion
        raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - started
    assert elapsed < CASE_BUDGET_S, f"{case}: took {elapsed:.1f} s"
    return ok


@pytest.fixture
def scratch(tmp_path):
    """A folder in memory when the system has one: rewriting a file 2000 times on disk costs seconds."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="vaecli-fuzz-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_fuzzed_checkpoints_load_or_fail_cleanly(tiny_model, scratch):
    from vaecli.checkpoint import load_checkpoint

    raw = tiny_model.read_bytes()
    rng = random.Random(20240607)
    path = scratch / "fuzz.safetensors"
    loaded = 0
    for case in range(2000):
        path.write_bytes(mutate_checkpoint(raw, rng))
        loaded += _load_or_vae_error(lambda: load_checkpoint(path, training_state=True), f"checkpoint case {case}")
    assert 0 < loaded < 2000  # both outcomes happen: the mutations are neither all harmless nor all fatal


def test_fuzzed_pngs_open_or_fail_cleanly(scratch):
    from vaecli.images import image_to_tensor, open_image

    rng = random.Random(99)
    path = scratch / "fuzz.png"
    opened = 0
    for case in range(1000):
        path.write_bytes(mutate_png(small_png(rng), rng))
        channels = rng.choice([1, 3])
        opened += _load_or_vae_error(
            lambda channels=channels: image_to_tensor(open_image(path), channels, 28, 28), f"png case {case}"
        )
    assert 0 < opened < 1000


def test_fuzzed_files_through_the_cli(cli, tiny_model, tmp_path):
    rng = random.Random(5)
    raw = tiny_model.read_bytes()
    codes = {0: 0, 2: 0}
    for case in range(40):
        if case % 3 == 2:
            Path("in.png").write_bytes(mutate_png(small_png(rng), rng))
            args = ["reconstruct", "in.png", "-m", str(tiny_model), "-o", "out"]
        else:
            Path("m.safetensors").write_bytes(mutate_checkpoint(raw, rng))
            args = ["info", "m.safetensors"] if case % 3 == 0 else ["sample", "-m", "m.safetensors", "-n", "2"]
        result = cli(*args)
        where = f"case {case}: {' '.join(args)}"
        assert result.exit_code in (0, 2), f"{where}: {result.stderr}"
        assert "Traceback" not in result.stderr, where
        if result.exit_code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {result.stderr}"
            assert result.stdout == ""
        codes[result.exit_code] += 1
    assert codes[0] and codes[2]
