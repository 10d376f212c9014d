"""A checkpoint's facts as (name, value) rows, from its metadata alone: `vae info` and `vae tour`'s page show them.

Values name settings as `name` (`ema`), for the command that shows them to say as it speaks (a flag).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, TypeGuard

from vaecli.config import describe_prior

if TYPE_CHECKING:
    from vaecli.config import ModelConfig
    from vaecli.store.metadata import CheckpointMeta, EpochRecord, Losses

# Recorded `vae eval` runs, the headline first: the whole test split at K = 1000, then the quick check
# that tests re-run (see scripts/export_pretrained.py).
EVALUATION_KEYS = ("full_evaluation", "evaluation")
MISSING = "—"
UNIT_KINDS = ("CPU core", "GPU")  # compute counted in device-hours; other devices by wall time


def summary_rows(path: str, meta: CheckpointMeta) -> list[tuple[str, str]]:
    """(name, value) pairs describing the model, its test loss, its evaluations and its recipe."""
    config, model = meta.config, meta.config.model
    rows = [
        ("file", path),
        ("format", f"{meta.format} v{meta.format_version} (vaecli {meta.vaecli_version})"),
        ("architecture", f"{model.arch} (hidden {model.hidden})"),
        ("latent dim", str(model.latent_dim)),
        ("image shape", " x ".join(str(v) for v in model.image_shape)),
        ("likelihood", _likelihood(model)),
        *([("conditional", _classes_line(model.classes, meta))] if model.classes else []),
        *([("layers", _layers_line(model))] if model.groups else []),
        ("prior", _prior_line(model.prior_components or 0, meta.prior, bool(model.groups))),
        ("dataset", str(config.dataset)),
        ("epochs done", f"{meta.epochs_done} of {config.epochs}"),
        ("seed", str(config.seed)),
    ]
    if config.ema:
        rows.append(("weights", f"moving average of the weights, decay {config.ema} (`ema`); "
                                "`resume` goes on from the weights as trained"))
    if meta.tf32:
        rows.append(("precision", f"{config.precision}, float32 matmuls and convolutions in TF32 (CUDA)"))
    if meta.history:
        test = meta.history[-1].test
        rows.append(("test loss", _test_loss(meta, test)))
        if test is not None and test.kl_per_layer:
            rows.append(("KL per layer", ", ".join(f"{kl:.2f}" for kl in test.kl_per_layer) + " (top first)"))
        if test is not None and test.active_units is not None:
            rows.append(("active units", f"{test.active_units} of {model.latent_dim} (KL > 0.01 nats)"))
        if any(record.machine for record in meta.history):
            rows.append(("trained on", _machines_line(meta.history)))
            rows.append(("compute", compute_line(meta.history)))
    for key in EVALUATION_KEYS:
        rows += _evaluation_rows(meta.extra.get(key))
    if isinstance(meta.extra.get("dataset_command"), str):
        rows.append(("dataset from", meta.extra["dataset_command"]))  # a bundled model's folder, written by a script
    if meta.recipe:
        rows += [(f"recipe step {i}", str(step)) for i, step in enumerate(meta.recipe, 1)]
    elif meta.command:
        rows.append(("command", meta.command))
    return rows


def _layers_line(model: ModelConfig) -> str:
    shapes = [" x ".join(map(str, shape)) for shape in model.map_shapes]
    maps = f"{len(shapes)} maps of {shapes[0]}" if len(set(shapes)) == 1 else "maps of " + ", ".join(shapes)
    return f"{model.groups} stochastic: the top a {model.latent_dim}-d vector, then {maps}"


def _classes_line(classes: int, meta: CheckpointMeta) -> str:
    names = meta.dataset_info.class_names if meta.dataset_info is not None else []
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"on the class, one of {classes}" + (f": {shown} (`label`)" if names else " (`label`)")


def _likelihood(model: ModelConfig) -> str:
    """p(x|z) by name; a logistic mixture with its number of components."""
    mixtures = getattr(model, "mixtures", 1)
    coupled = ", R, G and B coupled" if model.rgb_coupling else ""
    if model.likelihood == "logistic" and (mixtures > 1 or coupled):
        return f"logistic (discretized, mixture of {mixtures}{coupled})"
    return "logistic (discretized, 8-bit)" if model.likelihood == "logistic" else str(model.likelihood)


def _test_loss(meta: CheckpointMeta, test: Losses | None) -> str:
    """The last epoch's test -ELBO, or, for a prior fitted after it, the -ELBO under that prior."""
    loss, recon, kl = (number(None if test is None else getattr(test, key)) for key in ("loss", "recon", "kl"))
    trained = f"{loss} nats (recon {recon}, KL {kl})"
    fit, recipe = meta.prior, meta.recipe
    # The prior was fitted after the last epoch when the fit is the recipe's last step.
    if not (isinstance(fit, dict) and recipe and fit.get("command") == recipe[-1]):
        return trained
    kl_fitted, recon_value = fit.get("test_kl_mixture"), None if test is None else test.recon
    same_images = fit.get("test_images") == (meta.dataset_info.n_test if meta.dataset_info else None)
    if test is None or not (is_number(kl_fitted) and is_number(recon_value) and same_images):
        return f"{trained} before the prior was fitted"
    # The fit keeps the encoder and decoder, so only the KL term changes (see vae fit-prior); in a
    # hierarchical model only its top layer's.
    if meta.config.model.groups:
        kl_total = test.kl - number_or_nan(fit.get("test_kl_standard")) + kl_fitted
        return (f"{recon_value + kl_total:.2f} nats (recon {recon}, KL {kl_total:.2f}, the top layer's "
                f"{kl_fitted:.2f} to the fitted prior); {loss} before the fit")
    return (f"{recon_value + kl_fitted:.2f} nats (recon {recon}, KL {kl_fitted:.2f} to the fitted prior); "
            f"{loss} before the fit")


def _evaluation_rows(record: Any) -> list[tuple[str, str]]:
    """A recorded `vae eval`: the importance-weighted -log p(x), its K and images, and the command."""
    if not isinstance(record, dict) or not is_number(record.get("nll")):
        return []
    binarized = "binarized " if record.get("binarized") is True else ""
    images = f"{record.get('images')} {binarized}{record.get('dataset')} {record.get('split')} images"
    line = f"{record['nll']:.2f} nats (K = {record.get('iw_samples')}, {images})"
    elbo = record.get("neg_elbo", record.get("elbo"))  # `elbo` in files written before eval's JSON renamed it
    if isinstance(elbo, dict):
        line += (f"; -ELBO {number(elbo.get('loss'))} (recon {number(elbo.get('recon'))}, "
                 f"KL {number(elbo.get('kl'))})")
    if is_number(record.get("bits_per_dim")):
        line += f", {record['bits_per_dim']:.4f} bits/dim"
    rows = [("-log p(x|y)" if record.get("conditional") is True else "-log p(x)", line)]
    if record.get("command"):
        rows.append(("  measured by", str(record["command"])))
    if is_number(record.get("elapsed_s")) and isinstance(record.get("machine"), str):
        rows.append(("  took", f"{duration(record['elapsed_s'])} on {record['machine']}"))
    return rows


def _machines_line(history: list[EpochRecord]) -> str:
    """The training time spent on each machine, the most first: a resumed run may have moved between them."""
    spent: dict[str, list[float]] = {}
    for record in history:
        where = record.machine or "a machine not recorded"
        seconds = record.elapsed_s if is_number(record.elapsed_s) else 0.0
        spent.setdefault(where, [0.0, 0])
        spent[where][0] += seconds
        spent[where][1] += 1
    parts = sorted(spent.items(), key=lambda item: -item[1][0])
    return "; ".join(f"{duration(seconds)} on {where} ({count} epoch{'s' if count != 1 else ''})"
                     for where, (seconds, count) in parts)


def compute_line(history: list[EpochRecord]) -> str:
    """Training compute as papers state it: CPU core-hours (wall time x threads), GPU-hours (x GPUs)."""
    spent: dict[str, float] = {}
    for record in history:
        seconds = record.elapsed_s if is_number(record.elapsed_s) else 0.0
        kind = _compute_kind(record.machine)
        units = _units(record.machine) if kind in UNIT_KINDS else 1
        spent[kind] = spent.get(kind, 0.0) + seconds * units
    parts = [_hours(spent[kind], kind) for kind in UNIT_KINDS if spent.get(kind)]
    parts += [f"plus {duration(seconds)} (wall time) on {kind}" for kind, seconds in spent.items()
              if kind not in UNIT_KINDS]
    return "; ".join(parts)


def _compute_kind(machine: str | None) -> str:
    """'CPU core' or 'GPU' for the devices whose units are counted; else the device, or that none was recorded."""
    if not machine:
        return "a machine not recorded"
    device = machine.split(": ")[0].split(" x ")[-1]
    return {"cpu": "CPU core", "cuda": "GPU"}.get(device, device)


def _units(machine: str | None) -> int:
    """Cores (threads) or GPUs an epoch held: '2 x cpu: A, 4 threads' holds 8, '4 x cuda: B' holds 4."""
    processes = re.match(r"(\d+) x ", machine or "")
    threads = re.search(r", (\d+) threads?$", machine or "")
    return (int(processes.group(1)) if processes else 1) * (int(threads.group(1)) if threads else 1)


def _hours(unit_seconds: float, kind: str) -> str:
    hours = unit_seconds / 3600
    return f"{hours:.1f} {kind}-hours" if hours >= 1 else f"{unit_seconds / 60:.0f} {kind}-minutes"


def duration(seconds: float) -> str:
    """Seconds as a reader takes them in: 45 s, 12 min, 2.4 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _prior_line(components: int, fit: object, hierarchical: bool) -> str:
    """p(z), of a hierarchical model's top layer: N(0, I), or a fitted mixture with the test KL it bought."""
    top = " at the top" if hierarchical else ""
    if not components:
        return describe_prior(0) + top
    codes = "the top layer's codes" if hierarchical else "the training codes"
    line = f"{describe_prior(components)}{top}, fitted to {codes}"
    if isinstance(fit, dict) and is_number(fit.get("test_kl_mixture")):
        line += f" (test KL {fit['test_kl_mixture']:.2f} nats, {number(fit.get('test_kl_standard'))} with N(0, I))"
    return line


def number_or_nan(value: Any) -> float:
    return float(value) if is_number(value) else math.nan


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if is_number(value) else MISSING
