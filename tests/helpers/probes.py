"""Probes of work that was not done (nothing built, nothing read, nothing trained), in place of wall-clock bounds.

A refusal that comes "fast" on one machine comes slowly on a loaded one; a refusal that comes before the work
is the same everywhere. Each probe fails the test when the work it forbids is started, or reports what was done.
"""

from __future__ import annotations

import pytest


def forbid(monkeypatch: pytest.MonkeyPatch, target: str, what: str) -> None:
    """Replace the function at `target` ("package.module.name") with one that fails the test saying `what`."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(what)

    monkeypatch.setattr(target, refuse)


def forbid_real_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal checked before the work: no dataset read, no training step taken."""
    forbid(monkeypatch, "vaecli.data.datasets.load_dataset", "read a dataset before refusing the input")
    forbid(monkeypatch, "vaecli.training.loop.fit", "started training before refusing the input")


def model_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the device of every model built from here on: `meta` allocates nothing, any other does.

    The registry's builders are wrapped, so every build_model is seen, whichever module imported it."""
    import torch

    from vaecli.model.networks import MODELS

    devices: list[str] = []

    def recording(build):
        def build_and_record(config):
            devices.append(torch.empty(0).device.type)  # the default device, where the model's weights would live
            return build(config)

        return build_and_record

    for arch, build in list(MODELS.items()):
        monkeypatch.setitem(MODELS, arch, recording(build))
    return devices


class _Counting:
    """A binary handle that counts the bytes read through it."""

    def __init__(self, handle, counts: list[int]):
        self._handle, self._counts, self._index = handle, counts, len(counts)
        counts.append(0)

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._counts[self._index] += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def bytes_read_per_open(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    """Bytes read from each input that `module` opens with open_input, in order of opening."""
    real, counts = module.open_input, []

    def counting(source, what):
        handle, name = real(source, what)
        return _Counting(handle, counts), name

    monkeypatch.setattr(module, "open_input", counting)
    return counts
