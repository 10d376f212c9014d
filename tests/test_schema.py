"""The checkpoint schema, declared once: `vae info --json` of every shipped file stays byte for byte, each record
class reads back what it writes, each field is checked, and a bad field is refused in one line that names it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import vaecli
from vaecli.config import BEFORE_THE_FIELD, ModelConfig, TrainConfig
from vaecli.errors import CheckpointError
from vaecli.store import schema
from vaecli.store.bundled import BUNDLED_MODELS, PRETRAINED_DIR
from vaecli.store.checkpoint import read_metadata
from vaecli.store.metadata import (
    CheckpointMeta,
    DatasetInfo,
    EpochRecord,
    FittedPrior,
    Losses,
    model_config_from_dict,
    train_config_from_dict,
)

from tests.helpers.cli_checks import one_error_line
from tests.helpers.safetensors_bytes import edit_metadata

INFO = Path(__file__).parent / "data" / "info"  # `vae info NAME --json` of each file, saved before the schema
QUICKSTART = Path(vaecli.__file__).parent.parent / "docs" / "quickstart.safetensors"
SHIPPED = {**{name: name for name in BUNDLED_MODELS}, "quickstart": str(QUICKSTART)}
RECORDS = (ModelConfig, TrainConfig, Losses, EpochRecord, DatasetInfo, FittedPrior, CheckpointMeta)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_info_json_of_every_shipped_checkpoint_is_unchanged(cli, name):
    result = cli("info", SHIPPED[name], "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (INFO / f"{name}.json").read_bytes()


# --- round trips ----------------------------------------------------------------------------------------


def _examples() -> dict[type, object]:
    """One instance of each record class with every field set (a fitted prior is kept as its JSON object)."""
    model = ModelConfig(arch="cnn", latent_dim=6, classes=10, likelihood="logistic", mixtures=3, upsampling="resize")
    config = TrainConfig(model=model, dataset="digits", lr=0.01, limit=100, binarize=True, seed=-5, ema=0.5)
    test = Losses(90.5, 20.25, 110.75, kl_per_dim=[1.5, 0.0, 2], active_units=2, kl_per_layer=[20.25])
    record = EpochRecord(3, 1.5, 800.0, 0.002, 1.0, "cpu: a, 2 threads", Losses(91.0, 19.0, 110.0), test)
    info = DatasetInfo(1437, 360, [str(digit) for digit in range(10)])
    prior = FittedPrior(4, 1437, 2.5, 2.5, 360, 20.25, 18.0, 0, "vae fit-prior -c 4")
    meta = CheckpointMeta(config, 3, [EpochRecord(1), EpochRecord(2), record], info, "vae train", "2.4.0",
                          prior.to_dict(), ["vae train", "vae fit-prior -c 4"], False,
                          extra={"evaluation": {"nll": 80.5}})
    return {ModelConfig: model, TrainConfig: config, Losses: test, EpochRecord: record, DatasetInfo: info,
            FittedPrior: prior, CheckpointMeta: meta}


@pytest.mark.parametrize("cls", RECORDS, ids=lambda cls: cls.__name__)
def test_each_record_reads_back_what_it_writes(cls):
    example = _examples()[cls]
    data = json.loads(json.dumps(schema.to_dict(example)))  # through JSON text, as a file holds it
    again = schema.from_dict(cls, data, "")
    assert again == example
    assert schema.to_dict(again) == data


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_metadata_reads_back_as_stored(name):
    path = QUICKSTART if name == "quickstart" else PRETRAINED_DIR / f"{name}.safetensors"
    stored = read_metadata(path)
    written = CheckpointMeta.from_dict(stored).to_dict()
    # Config fields added since the file was written appear, at the value they stood for then.
    defaults = {**dataclasses.asdict(TrainConfig()), **dataclasses.asdict(ModelConfig()), **BEFORE_THE_FIELD}
    config, stored_config = written["config"], stored["config"]
    for ours, theirs in ((config["model"], stored_config["model"]), (config, stored_config)):
        added = {key: ours.pop(key) for key in set(ours) - set(theirs)}
        assert added == {key: defaults[key] for key in added}
    assert written == stored


def test_a_field_missing_from_an_older_file_takes_its_old_value_or_its_default():
    older = model_config_from_dict({"arch": "cnn", "latent_dim": 4, "channels": 3, "height": 32, "width": 32})
    assert older.upsampling == BEFORE_THE_FIELD["upsampling"] == "transpose"  # today's default for RGB: resize
    assert ModelConfig(channels=3).upsampling == "resize"
    assert (older.mixtures, older.classes, older.groups) == (1, 0, 0)
    assert train_config_from_dict({"model": {"arch": "mlp"}}).weight_decay == 0.0


# --- every field is declared once, with its check --------------------------------------------------------


@pytest.mark.parametrize("cls", RECORDS, ids=lambda cls: cls.__name__)
def test_every_written_key_is_a_checked_field(cls):
    fields = {field.name for field in dataclasses.fields(cls) if field.name != "extra"}
    data = schema.to_dict(_examples()[cls])
    extra = set(getattr(_examples()[cls], "extra", {}))
    assert set(data) - extra == fields | set(schema.derived_keys(cls)) == schema.known_keys(cls)
    for key in set(data) - extra:
        damaged = {**data, key: [["not", "this"]]}
        with pytest.raises(CheckpointError) as caught:
            _read(cls, damaged)
        assert key in caught.value.message and "\n" not in caught.value.message, (key, caught.value.message)


def _read(cls: type, data: dict) -> object:
    """Read as a file's reader does: the configs are validated after their fields."""
    readers = {TrainConfig: train_config_from_dict, ModelConfig: model_config_from_dict}
    return readers[cls](data) if cls in readers else schema.from_dict(cls, data, "")


def test_a_field_without_a_check_is_refused_when_its_record_is_first_used():
    @dataclasses.dataclass
    class Unchecked:
        seed: int = 0
        notes: dict = dataclasses.field(default_factory=dict)  # no check, and no type that carries one

    with pytest.raises(TypeError, match=r"Unchecked\.notes"):
        schema.from_dict(Unchecked, {"seed": 1}, "")


# --- one line naming the field -------------------------------------------------------------------------


def _set(where: str, value: object):
    """An edit for edit_metadata: set (or with DELETE, remove) the field at a dotted path; digits index lists."""

    def edit(meta: dict) -> None:
        *parents, last = where.split(".")
        node = meta
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return edit


DELETE = object()
PRIOR = {"components": 2, "codes": 1437, "test_kl_mixture": 20.5, "test_kl_standard": 22.0, "command": "vae fit-prior"}
# (class, fault): (edits, the refusal's words). Each class gets a wrong type, an out-of-range value and a
# missing required field (DatasetInfo and FittedPrior have none: a value that is no object stands for it).
REFUSALS = {
    ("ModelConfig", "type"): ([_set("config.model.latent_dim", "4")],
                              "field config.model.latent_dim has a bad value '4'; the file is damaged"),
    # validate()'s own words: only the start is the schema's
    ("ModelConfig", "range"): ([_set("config.model.latent_dim", 0)], "stored config is invalid: latent"),
    ("ModelConfig", "missing"): ([_set("config.model", DELETE)], "config.model is not an object"),
    ("TrainConfig", "type"): ([_set("config.lr", "0.1")], "field config.lr has a bad value '0.1'"),
    ("TrainConfig", "range"): ([_set("config.epochs", 0)], "stored config is invalid: epochs"),
    ("TrainConfig", "missing"): ([_set("config", DELETE)], "its metadata is damaged (config is not an object)"),
    ("Losses", "type"): ([_set("history.1.test.kl", "4.5")], "(history[1].test.kl is not a number)"),
    ("Losses", "range"): ([_set("history.1.test.kl_per_dim", [0.5] * 4097)],
                          "(history[1].test.kl_per_dim is not a list of numbers, one per latent dimension)"),
    ("Losses", "missing"): ([_set("history.0.train.loss", DELETE)], "(history[0].train.loss is not a number)"),
    ("EpochRecord", "type"): ([_set("history.0.lr", True)], "(history[0].lr is not a number)"),
    ("EpochRecord", "range"): ([_set("history.0.epoch", 0)], "(history[0].epoch is not a whole number from 1 to"),
    ("EpochRecord", "missing"): ([_set("history.1.epoch", DELETE)], "(history[1].epoch is not a whole number from 1"),
    ("DatasetInfo", "type"): ([_set("dataset_info.class_names", "0 1 2")], "(dataset_info.class_names is not a list"),
    ("DatasetInfo", "range"): ([_set("dataset_info.n_test", -1)], "(dataset_info.n_test is not a whole number of"),
    ("DatasetInfo", "missing"): ([_set("dataset_info", [])], "(dataset_info is not an object)"),
    ("FittedPrior", "type"): ([_set("prior", PRIOR), _set("prior.test_kl_mixture", "20.5")],
                              "(prior.test_kl_mixture is not a number)"),
    ("FittedPrior", "range"): ([_set("prior", PRIOR), _set("prior.components", 5000)],
                               "(prior.components is not a whole number from 0 to 4096)"),
    ("FittedPrior", "missing"): ([_set("prior", "fitted")], "(prior is not an object)"),
    ("CheckpointMeta", "type"): ([_set("command", 5)], "(command is not a text of at most 65536 characters)"),
    ("CheckpointMeta", "range"): ([_set("epochs_done", 10**7)], "(epochs_done is not a whole number from 0 to 10"),
    ("CheckpointMeta", "missing"): ([_set("format_version", DELETE)], "its metadata has no format version"),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=lambda case: "-".join(case))
def test_a_bad_field_is_refused_in_one_line_naming_it(cli, tmp_path, case):
    edits, words = REFUSALS[case]
    path = tmp_path / "bad.safetensors"
    raw = QUICKSTART.read_bytes()
    for edit in edits:
        raw = edit_metadata(raw, edit)
    path.write_bytes(raw)
    result = cli("info", path)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(path) in line and words in line, line
