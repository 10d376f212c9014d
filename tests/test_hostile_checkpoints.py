"""Hostile checkpoints: whatever validation lets through, every command can read; the rest is refused.

Each crafted file goes to every command that reads a checkpoint. A command either succeeds or exits 2
with one line naming the file: never a traceback, a hang, black samples or `inf nats`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers.cli_checks import one_error_line
from tests.helpers.probes import bytes_read_per_open, forbid, forbid_real_work
from tests.helpers.safetensors_bytes import edit_metadata, split_safetensors

BAD = "bad.safetensors"
TINY_EPOCHS = 2  # epochs of the session's tiny model (conftest): resuming asks for one more
# Every command that reads a checkpoint; {C} is the checkpoint, {E} one epoch more than it holds.
READERS = {
    "info": ["info", "{C}"],
    "sample": ["sample", "-m", "{C}", "-n", "4", "--grid", "g.png", "--device", "cpu"],
    "eval": ["eval", "-m", "{C}", "--dataset", "digits", "--limit", "8", "-k", "2", "--device", "cpu"],
    "train": ["train", "--resume", "{C}", "--epochs", "{E}", "-o", "resumed.safetensors", "--no-report", "-q",
              "--device", "cpu"],
    "fit-prior": ["fit-prior", "-m", "{C}", "--limit", "100", "-c", "2", "-o", "refit.safetensors", "-q",
                  "--device", "cpu"],
}


# --- helpers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a 2-Gaussian prior fitted by `vae fit-prior`: the prior's buffers to damage."""
    from vaecli.cli import app

    out = tmp_path_factory.mktemp("fitted") / "fitted.safetensors"
    args = ["fit-prior", "-m", str(tiny_model), "-o", str(out), "-c", "2", "--limit", "100", "--device", "cpu", "-q"]
    result = CliRunner().invoke(app, args, env={"VAE_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return out


def epochs_done(path: Path) -> int:
    header, _ = split_safetensors(path.read_bytes())
    return json.loads(header["__metadata__"]["vaecli"])["epochs_done"]


def with_tensors(raw: bytes, edit) -> bytes:
    """The checkpoint rebuilt with `edit(tensors)` applied to its tensors, the metadata unchanged."""
    from safetensors.torch import load, save

    tensors = load(raw)
    edit(tensors)
    return save(tensors, metadata=split_safetensors(raw)[0]["__metadata__"])


def run_readers(cli, path: Path, refusing: set[str]) -> dict[str, str]:
    """Run each reader on path: those in `refusing` must exit 2 with one line naming it, others succeed."""
    lines = {}
    for name in READERS:
        args = [a.replace("{C}", str(path)).replace("{E}", str(TINY_EPOCHS + 1)) for a in READERS[name]]
        result = cli(*args)
        assert "Traceback" not in result.stderr, (name, result.stderr)
        if name in refusing:
            assert result.exit_code == 2, (name, result.exit_code, result.stderr)
            lines[name] = one_error_line(result)
            assert str(path) in lines[name], (name, lines[name])
        else:
            assert result.exit_code == 0, (name, result.stderr)
    return lines


# --- 1. metadata that validation must refuse, because a reader would trip over it ------------------------


def _nest(meta: dict) -> None:
    deep: list = []
    for _ in range(200):
        deep = [deep]
    meta["notes"] = deep


def _huge_integer(meta: dict) -> str:
    # json.dumps itself refuses such integers: the number goes into the text.
    meta["history"][0]["test"]["loss"] = 4242.5
    return json.dumps(meta).replace("4242.5", "7" * 5000)


def _set(where: str, value):
    """An edit for edit_metadata: set a field given as a dotted path (digits index lists)."""

    def edit(meta: dict) -> None:
        *parents, last = where.split(".")
        node = meta
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return edit


_DELETE = object()
BAD_METADATA = {
    "test_null": _set("history.1.test", None),
    "train_text": _set("history.0.train", "low"),
    "loss_text": _set("history.1.test.loss", "12.5"),
    "loss_missing": _set("history.1.test.loss", _DELETE),
    "epoch_missing": _set("history.0.epoch", _DELETE),
    "elapsed_huge_int": _set("history.0.elapsed_s", 10**400),
    "machine_number": _set("history.0.machine", 2),
    "machine_huge": _set("history.1.machine", "x" * 100_000),
    "integer_of_5000_digits": _huge_integer,
    "kl_per_dim_text": _set("history.1.test.kl_per_dim", "0.1 0.2"),
    "epochs_done_absurd": _set("epochs_done", 10**12),
    "epochs_done_disagrees": _set("epochs_done", 7),
    "recipe_text": _set("recipe", "vae train"),
    "recipe_numbers": _set("recipe", [1, 2]),
    "recipe_step_huge": _set("recipe", ["x" * 100_000]),
    "prior_text": _set("prior", "fitted"),
    "prior_kl_text": _set("prior", {"components": 2, "test_kl_mixture": 20.5, "test_kl_standard": "25"}),
    "dataset_info_text": _set("dataset_info", "digits"),
    "class_names_numbers": _set("dataset_info", {"n_train": 10, "class_names": [1, 2]}),
    "seed_over_64_bits": _set("seed", 2**70),
    "config_seed_over_64_bits": _set("config.seed", 2**70),
    "config_dataset_nul": _set("config.dataset", "dig\0its"),
    "command_number": _set("command", 5),
    "nested_200_deep": _nest,
}


@pytest.mark.parametrize("fault", list(BAD_METADATA))
def test_metadata_a_reader_would_trip_over_is_refused_by_every_reader(cli, tiny_model, tmp_path, monkeypatch, fault):
    path = tmp_path / BAD
    path.write_bytes(edit_metadata(tiny_model.read_bytes(), BAD_METADATA[fault]))
    # Refused from the metadata: before any model is built, any data read or any step taken.
    forbid(monkeypatch, "vaecli.model.networks.build_model", "built a model of refused metadata")
    forbid_real_work(monkeypatch)
    lines = run_readers(cli, path, refusing=set(READERS))
    assert all("metadata" in line or "field" in line or "seed" in line for line in lines.values()), lines


def test_header_integer_past_pythons_digit_limit_is_refused(cli, tiny_model, tmp_path):
    """json.loads raises ValueError, not JSONDecodeError, for an integer of more than 4,300 digits."""
    header, data = split_safetensors(tiny_model.read_bytes())
    name = next(key for key in header if key != "__metadata__")
    header[name]["shape"] = [424242]
    text = json.dumps(header).replace("424242", "9" * 5000).encode()
    path = tmp_path / BAD
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    lines = run_readers(cli, path, refusing=set(READERS))
    assert all("not valid JSON" in line for line in lines.values()), lines


# Values vae can write (a diverged test loss, a record without a test part, no prior yet): all readers work.
READABLE_METADATA = {
    "nan_and_inf_losses": lambda meta: meta["history"][-1]["test"].update(loss=math.nan, kl=math.inf),
    "no_test_part": _set("history.0.test", _DELETE),
    "null_prior_and_recipe": lambda meta: meta.update(prior=None, recipe=None),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(READABLE_METADATA))
def test_metadata_every_reader_can_format_loads(cli, tiny_model, tmp_path, case):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(edit_metadata(tiny_model.read_bytes(), READABLE_METADATA[case]))
    run_readers(cli, path, refusing=set())
    assert cli("info", path, "--json").exit_code == 0


def test_seed_past_64_bits_is_refused_in_one_line(cli, tmp_path):
    from vaecli.config import TrainConfig
    from vaecli.errors import SettingError

    with pytest.raises(SettingError, match="`seed`"):
        TrainConfig(seed=2**70).validate()
    out = tmp_path / "s.safetensors"
    result = cli("train", "--dataset", "digits", "--seed", str(2**70), "--epochs", "1", "-o", out)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--seed" in result.stderr, result.stderr
    assert not out.exists()


# --- 2. damaged training state or fitted prior: refused on load, naming the file --------------------------


def _corrupt_rng(tensors: dict) -> None:
    # Bytes 8-24 of a CPU generator's state hold the Mersenne Twister's position: out of range here.
    state = tensors["rng.train"].clone()
    state[8:24] = 255
    tensors["rng.train"] = state


def _first(tensors: dict, suffix: str) -> str:
    return sorted(k for k in tensors if k.startswith("optimizer.") and k.endswith(suffix))[0]


def _fill(suffix: str, value: float, index: int = 0):
    def edit(tensors: dict) -> None:
        tensor = tensors[_first(tensors, suffix)]
        tensor.view(-1)[index] = value

    return edit


def _prior_entry(buffer: str, index: tuple, value: float):
    """An edit that sets one entry of a buffer of the fitted prior."""

    def edit(tensors: dict) -> None:
        tensors[f"model.prior.{buffer}"][index] = value

    return edit


def _weights_times_e(tensors: dict) -> None:
    tensors["model.prior.log_weights"].add_(1.0)


# (model, damage, readers that must refuse); the rest must succeed.
TRAINING_STATE = {"train", "fit-prior"}
LOADERS = {"sample", "eval", "train", "fit-prior"}
BAD_TENSORS = {
    "exp_avg_nan": ("tiny", _fill(".exp_avg", math.nan), TRAINING_STATE),
    "exp_avg_sq_negative": ("tiny", _fill(".exp_avg_sq", -1.0), TRAINING_STATE),
    "exp_avg_sq_inf": ("tiny", _fill(".exp_avg_sq", math.inf), TRAINING_STATE),
    "step_nan": ("tiny", _fill(".step", math.nan), TRAINING_STATE),
    "step_negative": ("tiny", _fill(".step", -3.0), TRAINING_STATE),
    "step_missing": ("tiny", lambda t: t.pop(_first(t, ".step")), TRAINING_STATE),
    # Only the generator a state goes into can judge its length (a GPU's is 16 bytes): fit-prior carries
    # the state along, resuming on the CPU refuses it.
    "rng_short": ("tiny", lambda t: t.update({"rng.train": t["rng.train"][:100].clone()}), {"train"}),
    "rng_invalid": ("tiny", _corrupt_rng, TRAINING_STATE),
    "prior_zero_diagonal": ("fitted", _prior_entry("precision_cholesky", (0, 1, 1), 0.0), LOADERS),
    "prior_negative_diagonal": ("fitted", _prior_entry("precision_cholesky", (1, 0, 0), -0.5), LOADERS),
    "prior_inf_diagonal": ("fitted", _prior_entry("precision_cholesky", (0, 2, 2), math.inf), LOADERS),
    "prior_not_triangular": ("fitted", _prior_entry("precision_cholesky", (0, 2, 0), 5.0), LOADERS),
    "prior_means_nan": ("fitted", _prior_entry("means", (0, 0), math.nan), LOADERS),
    "prior_weights_sum_to_e": ("fitted", _weights_times_e, LOADERS),
}


@pytest.mark.parametrize("fault", list(BAD_TENSORS))
def test_damaged_training_state_or_prior_is_refused_naming_the_file(cli, tiny_model, fitted_model, tmp_path, fault):
    which, damage, refusing = BAD_TENSORS[fault]
    path = tmp_path / BAD
    path.write_bytes(with_tensors((tiny_model if which == "tiny" else fitted_model).read_bytes(), damage))
    lines = run_readers(cli, path, refusing)
    assert not (tmp_path / "refit.safetensors").exists() or "fit-prior" not in refusing
    for line in lines.values():
        assert "damaged" in line or "NaN" in line or "incomplete" in line or "does not fit" in line, line


def test_random_state_of_another_device_seeds_the_stream_and_one_of_no_device_is_refused(tiny_model):
    """A state as long as a CUDA generator's (seed, offset) seeds a CPU generator repeatably; any other is damage."""
    from vaecli.errors import CheckpointError
    from vaecli.store.checkpoint import load_checkpoint, restore_generator

    checkpoint = load_checkpoint(tiny_model, training_state=True)
    checkpoint.rng_state = checkpoint.rng_state[:16].clone()
    first, second = torch.Generator(), torch.Generator()
    assert restore_generator(first, checkpoint) is False and restore_generator(second, checkpoint) is False
    assert torch.equal(first.get_state(), second.get_state())
    assert not torch.equal(first.get_state(), torch.Generator().manual_seed(0).get_state())
    checkpoint.rng_state = checkpoint.rng_state[:15].clone()
    with pytest.raises(CheckpointError, match="fits neither a CPU nor a CUDA generator") as caught:
        restore_generator(torch.Generator(), checkpoint)
    assert str(tiny_model) in caught.value.message and "\n" not in caught.value.message


# --- 3. checkpoints from pipes and devices --------------------------------------------------------------


def feed(fifo: Path, data: bytes, seconds: float = 20.0) -> threading.Thread:
    """A thread that writes data into the FIFO once a reader opens it (and gives up after `seconds`)."""

    def write() -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        try:
            _write_all(fd, data)
        except BrokenPipeError:
            pass  # the reader refused the stream and went away
        finally:
            os.close(fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_checkpoint_from_a_fifo_loads(cli, tiny_model, tmp_path):
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    raw = tiny_model.read_bytes()
    writer = feed(fifo, raw)
    result = cli("info", fifo, "--json")
    writer.join(5)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["epochs_done"] == epochs_done(tiny_model)
    writer = feed(fifo, raw)
    result = cli("sample", "-m", fifo, "-n", "4", "--grid", tmp_path / "g.png", "--device", "cpu")
    writer.join(5)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


class Clock:
    """A stand-in for the time module of vaecli.store.files: sleep() moves the clock on without waiting."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_fifo_with_no_writer_fails_fast(cli, tmp_path, monkeypatch):
    """A FIFO no program writes to is polled for PIPE_WRITER_WAIT_S, then refused: never read forever."""
    import vaecli.store.files

    fifo = tmp_path / "idle.fifo"
    os.mkfifo(fifo)
    for args in (["info", fifo], ["sample", "-m", fifo, "--grid", tmp_path / "g.png", "--device", "cpu"]):
        clock = Clock()
        monkeypatch.setattr(vaecli.store.files, "time", clock)
        result = cli(*args)
        assert result.exit_code == 2 and str(fifo) in one_error_line(result)
        # It gave up once its allowance had passed on its clock, and not before.
        allowance = vaecli.store.files.PIPE_WRITER_WAIT_S
        assert allowance < clock.now <= allowance + 1, clock.now
        assert f"waited {allowance:g} s" in one_error_line(result)


# Streams that are not a whole checkpoint: (bytes from the good ones, words the error must hold).
BAD_STREAMS = {
    "truncated": (lambda raw: raw[: len(raw) - 100], "truncated"),
    "trailing_bytes": (lambda raw: raw + b"\0" * 10_000, "after its last tensor"),
    "header_only": (lambda raw: raw[: 8 + int.from_bytes(raw[:8], "little")], "truncated"),
    "bad_metadata": (lambda raw: edit_metadata(raw, _set("history.1.test", None)), "metadata"),
}


@pytest.mark.parametrize("fault", list(BAD_STREAMS))
def test_damaged_checkpoint_from_a_fifo_is_refused(cli, tiny_model, tmp_path, fault):
    make, words = BAD_STREAMS[fault]
    fifo = tmp_path / "bad.fifo"
    os.mkfifo(fifo)
    for args in (["info", fifo], ["sample", "-m", fifo, "--grid", tmp_path / "g.png", "--device", "cpu"]):
        writer = feed(fifo, make(tiny_model.read_bytes()))
        result = cli(*args)
        writer.join(5)
        assert result.exit_code == 2, result.stderr
        line = one_error_line(result)
        assert str(fifo) in line and words in line, line


def test_stream_declaring_too_much_data_is_refused_unread(cli, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("vaecli.store.safetensors_file.MAX_CHECKPOINT_BYTES", 1000)
    fifo = tmp_path / "big.fifo"
    os.mkfifo(fifo)
    writer = feed(fifo, tiny_model.read_bytes())
    result = cli("info", fifo)
    writer.join(5)
    assert result.exit_code == 2 and "more than" in one_error_line(result)


def test_info_reads_only_the_header_of_a_regular_file(cli, tiny_model, monkeypatch):
    import vaecli.store.safetensors_file

    requested = []
    real = vaecli.store.safetensors_file.read_exactly

    def counting(handle, count, name):
        requested.append(count)
        return real(handle, count, name)

    monkeypatch.setattr(vaecli.store.safetensors_file, "read_exactly", counting)
    assert cli("info", tiny_model).exit_code == 0
    header_bytes = 8 + int.from_bytes(tiny_model.read_bytes()[:8], "little")
    assert sum(requested) == header_bytes < tiny_model.stat().st_size // 10


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
@pytest.mark.parametrize("command", ["info", "sample", "train"])
def test_devices_given_as_checkpoints_fail_fast(cli, monkeypatch, device, command):
    """An endless device is refused from its first 8 bytes (the header's length), never read on."""
    import vaecli.store.safetensors_file

    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    read = bytes_read_per_open(monkeypatch, vaecli.store.safetensors_file)
    args = [a.replace("{C}", device).replace("{E}", "3") for a in READERS[command]]
    result = cli(*args)
    assert result.exit_code == 2 and device in one_error_line(result)
    assert read and all(count <= 8 for count in read), read
