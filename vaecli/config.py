"""Model and training settings as dataclasses, stored as JSON in checkpoint metadata.

store/schema.py reads and writes them: each field is checked by its type; field metadata says what a field
missing from an older file stands for (`absent`) and which must be present (`required`).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from vaecli.errors import SettingError

FORMAT_VERSION = 1  # bump when the checkpoint layout changes incompatibly
MAX_LATENT_DIM = 4096
MAX_IMAGE_SIDE = 1024
MAX_HIDDEN = 16384
MAX_PRIOR_COMPONENTS = 4096
MAX_SEED = 2**64 - 1  # torch.manual_seed takes 64 bits, read as unsigned ...
MIN_SEED = -(2**63)  # ... or as signed
MAX_MIXTURES = 64
MAX_CONDITIONAL_CLASSES = 1000  # classes a conditional model takes its one-hot label over
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32
MAX_BETA = 1e6  # a KL weight past this leaves only the KL; beyond float32's range it would overflow the loss
# p(x|z): Bernoulli on [0, 1] pixels, a Gaussian with learned variance, or the discretized logistic
# (mixture) on the 256 levels of each 8-bit subpixel (Kingma et al. 2016; Salimans et al. 2017).
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
SCHEDULES = ("constant", "cosine")
# The per-image scores of `vae score` and `vae ood` (analysis/scores.py computes them), named here so that
# help and completion list them without importing torch.
SCORE_NAMES = ("nll", "elbo", "recon", "kl", "complexity", "regret")
# Arithmetic of the training steps: fp32, or bf16 autocast (fast on GPUs and CPUs with AMX or
# AVX-512 BF16; weights, optimizer and loss sums stay fp32).
PRECISIONS = ("fp32", "bf16")
# How a convolutional decoder doubles its maps (blocks.upsampler): a nearest resize and a convolution, or a
# 3x3 stride-2 transposed convolution. Measured (benchmarks/README.md): on RGB photographs the transpose left
# a lattice and a worse bound per epoch; on grey digits it shows no lattice, trains 1.9x faster and reaches a
# better bound per epoch. So the default follows the channels, as `hidden`'s does.
UPSAMPLINGS = ("resize", "transpose")
DEFAULT_UPSAMPLING = {1: "transpose", 3: "resize"}
# The architectures' names; models.BUILDERS maps each to its builder (a test checks they agree).
# The names live here, not in models.py, so help and completion list them without importing torch.
ARCHITECTURES = ("mlp", "cnn", "resnet", "hvae")
# What `device` accepts (runtime/device.py resolves it): here so that help and completion list it without torch.
# cuda also takes an index, cuda:N.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# Architectures with several stochastic layers (hierarchical.py); the others have one latent vector.
HIERARCHICAL = ("hvae",)
DEFAULT_GROUPS, DEFAULT_GROUP_CHANNELS = 3, 8  # an hvae's stochastic layers, and channels per lower layer
MAX_GROUPS = 64
MAX_MAP_DIVISOR = 64  # an hvae's coarsest latent map: a 64th of the image's side
# What a new colour run gets where its settings leave them out, measured on 32x32 photograph crops
# (benchmarks/colour_study.md): an hvae whose latent maps live at 4x4 to 32x32 (divisors of the side, top
# first) with 4 channels each, and a 5-way logistic mixture coupling each pixel's R, G and B. It beat PNG
# where the one-vector cnn and the quarter-resolution hvae did not.
COLOUR_DEFAULTS = {"arch": "hvae", "likelihood": "logistic", "map_scales": "8,4,2,1", "group_channels": 4,
                   "mixtures": 5, "rgb_coupling": True}
GREY_DEFAULTS = {"arch": "cnn", "likelihood": "bernoulli", "map_scales": "", "group_channels": 0,
                 "mixtures": 1, "rgb_coupling": False}
# Config field -> the `vae train` flag that sets it: for the recorded command line and the options a resumed
# run may not change. The recorded command gives the first ones always, in this order, then those in
# OMITTED_AT_DEFAULT that differ from their default.
TRAIN_FLAGS = {
    "arch": "--arch", "dataset": "--dataset", "latent_dim": "--latent-dim", "hidden": "--hidden",
    "channels": "--channels", "height": "--image-size", "width": "--image-size", "likelihood": "--likelihood",
    "mixtures": "--mixtures", "upsampling": "--upsampling",
    "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "lr_schedule": "--lr-schedule",
    "beta": "--beta", "warmup": "--warmup", "binarize": "--binarize", "seed": "--seed", "limit": "--limit",
    "precision": "--precision", "classes": "--conditional", "groups": "--groups",
    "group_channels": "--group-channels", "free_bits": "--free-bits", "grad_clip": "--grad-clip",
    "ema": "--ema", "weight_decay": "--weight-decay", "map_scales": "--map-scales", "rgb_coupling": "--rgb-coupling",
    "prior_components": "--components",  # set by `vae fit-prior`, never by `vae train`
}
# Setting -> the flag that gives it on the command line: the one table between the library and the CLI.
# Library messages name a setting as `name` or `name=value` (the Python API's keyword and value); the
# terminal shows it as the flag, `--name value` (terminal.console.as_flags). A name not listed stays as written.
SETTING_FLAGS = {
    **TRAIN_FLAGS, "classes": "--conditional", "conditional": "--conditional", "image_size": "--image-size",
    "components": "--components", "model": "-m", "out": "-o", "n": "-n", "force": "--force",
    "resume": "--resume", "device": "--device", "data_root": "--data-root", "split": "--split",
    "temperature": "--temperature", "label": "--label", "steps": "--steps", "method": "--method",
    "range": "--range", "units": "--units", "points": "--points", "invert": "--invert", "scale": "--scale",
    "nrow": "--nrow", "grid": "--grid", "iw_samples": "--iw-samples", "decode_rows": "--decode-rows",
    "scores": "--score", "regret_steps": "--regret-steps", "known": "--known", "unusual": "--unusual",
    "report": "--report", "snapshots": "--snapshots", "compile": "--compile", "keep_best": "--keep-best",
    "frames": "--frames", "size": "--size", "sample_pixels": "--sample-pixels", "port": "--port", "host": "--host",
    "tensorboard": "--tensorboard", "part": "--part",
}
# Flags that turn off a setting some runs have on by default (rgb_coupling for RGB): recorded when off there.
OFF_FLAGS = {"rgb_coupling": "--no-rgb-coupling"}
OMITTED_AT_DEFAULT = {"mixtures": 1, "binarize": False, "limit": None, "precision": "fp32",
                      "classes": 0, "groups": 0, "group_channels": 0, "free_bits": 0.0, "grad_clip": 0.0, "ema": 0.0,
                      "weight_decay": 0.0, "map_scales": "", "rgb_coupling": False}
# Fields the command line sets with a bare flag although they hold a number: `conditional` takes the
# number of classes from the dataset.
FLAG_ONLY = ("classes",)
# Fields the command line does not give: width repeats height's `image_size`; the prior comes from fit-prior.
NOT_IN_COMMAND = ("width", "prior_components")
# Width used when `hidden` is 0: mlp's first hidden layer, or the first convolution's channels.
DEFAULT_HIDDEN = {"mlp": 512, "cnn": 16, "resnet": 32, "hvae": 32}
# RGB images carry three times the information per pixel: the convolutions start twice as wide.
DEFAULT_HIDDEN_RGB = {"mlp": 512, "cnn": 32, "resnet": 64, "hvae": 64}


def default_hidden(arch: str, channels: int) -> int:
    """The width `hidden=0` stands for, by architecture and channels."""
    return (DEFAULT_HIDDEN_RGB if channels == 3 else DEFAULT_HIDDEN).get(arch, 0)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture."""

    arch: str = "cnn"  # one of ARCHITECTURES
    latent_dim: int = 10  # size of z
    channels: int = 1  # 1 grey, 3 RGB
    height: int = 28  # input height in pixels
    width: int = 28  # input width in pixels
    hidden: int = 0  # network width (see DEFAULT_HIDDEN); 0 is replaced by the architecture's default
    likelihood: str = "bernoulli"  # p(x|z): one of LIKELIHOODS
    mixtures: int = 1  # logistics per subpixel for the logistic likelihood (absent in older files: 1)
    prior_components: int = 0  # p(z): 0 for N(0, I), else a Gaussian mixture fitted by `vae fit-prior`
    classes: int = 0  # 0: p(x|z); K: conditional on a one-hot label of K classes, q(z|x,y) and p(x|z,y)
    groups: int = 0  # hvae: stochastic layers, the top one (latent_dim) included; 0 for the other architectures
    group_channels: int = 0  # hvae: channels of each lower layer's latent map
    # decoders' doubling, one of UPSAMPLINGS; "": DEFAULT_UPSAMPLING; files written before it: transpose
    upsampling: str = field(default="", metadata={"absent": "transpose"})
    # hvae: the lower latent maps' sides as divisors of the image's, top first ("8,4,2,1": 4x4 to 32x32 for a
    # 32x32 image; hierarchical.MultiScaleHVAE); "": every lower map at a quarter of the image (HVAE).
    map_scales: str = ""
    # logistic on RGB: each pixel's R, G, B drawn jointly, G's mean moving with R and B's with G (PixelCNN++)
    rgb_coupling: bool = False

    def __post_init__(self) -> None:
        # Store the width actually used, so a later change of default cannot change a saved model.
        if self.hidden == 0:
            self.hidden = default_hidden(self.arch, self.channels)
        self.upsampling = self.upsampling or DEFAULT_UPSAMPLING.get(self.channels, "resize")
        if self.arch in HIERARCHICAL:
            self.groups = self.groups or (self.map_scales.count(",") + 2 if self.map_scales else DEFAULT_GROUPS)
            self.group_channels = self.group_channels or DEFAULT_GROUP_CHANNELS

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def map_divisors(self) -> list[int]:
        """Each lower latent map's side as a divisor of the image's, top first: map_scales, or 4 for each."""
        if self.map_scales:
            return [int(part) for part in self.map_scales.split(",")]
        return [4] * (self.groups - 1)

    @property
    def map_shapes(self) -> list[tuple[int, int, int]]:
        """An hvae's lower latent maps, top first: group_channels at the image halved log2(divisor) times
        (rounding up)."""
        return [(self.group_channels, *halved_sizes(self.height, self.width, divisor.bit_length() - 1)[-1])
                for divisor in self.map_divisors]

    @property
    def output_params(self) -> int:
        """Decoder outputs per subpixel: 1 (logit or mean); logistic: mean and log-scale, plus a logit if mixed
        (coupled RGB: the logit slots of G and B hold their coefficients, logistic.py)."""
        if self.likelihood != "logistic":
            return 1
        return 2 if self.mixtures == 1 and not self.rgb_coupling else 3 * self.mixtures

    def validate(self) -> None:
        """Refuse impossible or absurd sizes before anything is allocated."""
        if self.arch not in ARCHITECTURES:
            raise SettingError(
                f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        _check_range("latent dimension", self.latent_dim, 1, MAX_LATENT_DIM, "latent_dim")
        if self.channels not in (1, 3):
            raise SettingError(f"channels must be 1 or 3, not {self.channels} (`channels`)")
        _check_range("image height", self.height, 4, MAX_IMAGE_SIDE, "height")
        _check_range("image width", self.width, 4, MAX_IMAGE_SIDE, "width")
        _check_range("hidden width", self.hidden, 0, MAX_HIDDEN, "hidden")
        _check_range("prior components", self.prior_components, 0, MAX_PRIOR_COMPONENTS, "prior_components")
        if self.likelihood not in LIKELIHOODS:
            raise SettingError(
                f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}"
            )
        _check_range("mixtures", self.mixtures, 1, MAX_MIXTURES, "mixtures")
        if self.mixtures != 1 and self.likelihood != "logistic":
            raise SettingError("`mixtures` applies only to `likelihood=logistic`")
        if self.rgb_coupling and (self.likelihood != "logistic" or self.channels != 3):
            raise SettingError("`rgb_coupling` applies only to `likelihood=logistic` on RGB images (`channels=3`)")
        if self.upsampling not in UPSAMPLINGS:
            raise SettingError(f"unknown upsampling {self.upsampling!r}; choose one of {', '.join(UPSAMPLINGS)} "
                               "(`upsampling`)")
        self._validate_layers()
        if self.classes == 1 or not 0 <= self.classes <= MAX_CONDITIONAL_CLASSES:
            raise SettingError(
                f"a conditional model needs 2 to {MAX_CONDITIONAL_CLASSES} classes, not {self.classes} "
                "(`conditional`)"
            )


    def _validate_layers(self) -> None:
        if self.arch not in HIERARCHICAL:
            for name in ("groups", "group_channels", "map_scales"):
                if getattr(self, name):
                    raise SettingError(f"`{name}` applies only to `arch={' or '.join(HIERARCHICAL)}`")
            return
        _check_range("stochastic layers", self.groups, 2, MAX_GROUPS, "groups")
        _check_range("channels per layer", self.group_channels, 1, 512, "group_channels")
        if self.map_scales:
            self._validate_map_scales()
        if self.classes:
            raise SettingError(f"`conditional` is not available with `arch={self.arch}`; use mlp, cnn or resnet")

    def _validate_map_scales(self) -> None:
        parts = self.map_scales.split(",")
        shown = self.map_scales[:40]
        if not all(part.isdigit() and len(part) <= 3 for part in parts):
            raise SettingError(f"`map_scales` is a list of divisors of the image's side such as 8,4,2,1, not {shown!r}")
        divisors = [int(part) for part in parts]
        if any(d < 1 or d > MAX_MAP_DIVISOR or d & (d - 1) for d in divisors):
            raise SettingError(f"each of `map_scales` must be a power of two from 1 to {MAX_MAP_DIVISOR}, "
                               f"not {shown!r}")
        if divisors != sorted(divisors, reverse=True):
            raise SettingError(f"`map_scales` lists the maps top first, coarse to fine (such as 8,4,2,1), "
                               f"not {shown!r}")
        if len(divisors) != self.groups - 1:
            raise SettingError(f"`map_scales` names {len(divisors)} maps but `groups={self.groups}` has "
                               f"{self.groups - 1} below the top; give {len(divisors) + 1} groups")
        if divisors[0] > min(self.height, self.width):
            raise SettingError(f"`map_scales` divisor {divisors[0]} leaves no pixel of a "
                               f"{self.height}x{self.width} image; use {min(self.height, self.width)} or less")


MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
# Model fields whose value in files written before the field existed differs from today's default.
BEFORE_THE_FIELD = {f.name: f.metadata["absent"] for f in dataclasses.fields(ModelConfig) if "absent" in f.metadata}


@dataclass
class TrainConfig:
    """The full recipe of a training run; stored with the weights so it can be repeated."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"required": True})
    dataset: str = "mnist"  # mnist, fashion-mnist, kmnist, digits, or an image folder
    epochs: int = 20  # total epochs, counting those of a resumed run
    batch_size: int = 128  # images per optimizer step
    lr: float = 2e-3  # Adam learning rate (peak, when a schedule is used)
    lr_schedule: str = "cosine"  # constant, or cosine decay to lr/10 over the run
    beta: float = 1.0  # weight of the KL term (1 gives the ELBO)
    warmup: int = 0  # epochs over which beta ramps linearly from 0 (KL warm-up)
    binarize: bool = False  # dynamic binarization: a fresh Bernoulli draw per pixel per batch
    seed: int = 0  # seeds weights, shuffling and noise
    limit: int | None = None  # use only the first N training (and test) images
    precision: str = "fp32"  # fp32, or bf16 autocast for the forward pass (PRECISIONS)
    free_bits: float = 0.0  # nats per stochastic layer below which its KL is not pushed down (Kingma et al. 2016)
    grad_clip: float = 0.0  # clip the gradient's norm to this; 0: no clipping
    ema: float = 0.0  # decay of the weights' moving average, which is tested and saved; 0: the weights as trained
    weight_decay: float = 0.0  # AdamW's decoupled decay of the weights (not biases) per unit of lr; 0: plain Adam

    def validate(self) -> None:
        self.model.validate()
        _check_range("epochs", self.epochs, 1, 100_000, "epochs")
        _check_range("batch size", self.batch_size, 1, 1_000_000, "batch_size")
        # The steps compute in float32: a rate below its smallest normal number would round to nothing.
        if not (FLOAT32_TINY <= self.lr < 10):
            raise SettingError(f"learning rate must be in (0, 10), not {self.lr} (`lr`)")
        if not 0 <= self.beta <= MAX_BETA:
            raise SettingError(f"beta must be a finite number from 0 to {MAX_BETA:g}, not {self.beta} (`beta`)")
        if self.lr_schedule not in SCHEDULES:
            raise SettingError(f"unknown `lr_schedule` {self.lr_schedule!r}; use {' or '.join(SCHEDULES)}")
        _check_range("warm-up epochs", self.warmup, 0, 100_000, "warmup")
        _check_range("seed", self.seed, MIN_SEED, MAX_SEED, "seed")
        if self.precision not in PRECISIONS:
            raise SettingError(f"unknown `precision` {self.precision!r}; use {' or '.join(PRECISIONS)}")
        if self.limit is not None:
            _check_range("limit", self.limit, 1, 10**9, "limit")
        for name in ("free_bits", "grad_clip"):
            value = getattr(self, name)
            if not 0 <= value < 1e6:
                raise SettingError(f"`{name}` must be a finite number, 0 or more, not {value}")
        if not 0 <= self.ema < 1:
            raise SettingError(f"`ema` must be 0 (off) or a decay in (0, 1) such as 0.999, not {self.ema}")
        # Each step multiplies a weight by 1 - lr * weight_decay: past 1 it would flip the weights' sign.
        if not (self.weight_decay >= 0 and self.lr * self.weight_decay < 1):
            raise SettingError(f"`weight_decay` must be 0 (off) or a positive number under 1 / lr "
                               f"({1 / self.lr:g}) such as 0.01, not {self.weight_decay}")


def run_defaults(channels: int, given: dict[str, Any], conditional: bool = False) -> dict[str, Any]:
    """What a new run's left-out settings stand for, given those set (None: left out): GREY_DEFAULTS, or for RGB
    the COLOUR_DEFAULTS that fit the rest (a conditional model is a cnn, as an hvae cannot be one)."""
    table = COLOUR_DEFAULTS if channels == 3 else GREY_DEFAULTS
    arch = given.get("arch") or ("cnn" if conditional else table["arch"])
    likelihood = given.get("likelihood") or table["likelihood"]
    rgb_logistic = channels == 3 and likelihood == "logistic"
    multi_scale = channels == 3 and arch in HIERARCHICAL
    groups = given.get("groups") or 0
    return {
        "arch": arch, "likelihood": likelihood,
        "mixtures": table["mixtures"] if rgb_logistic else 1,
        "rgb_coupling": table["rgb_coupling"] if rgb_logistic else False,
        "map_scales": (colour_map_scales(groups - 1) if groups else table["map_scales"]) if multi_scale else "",
        "group_channels": table["group_channels"] if multi_scale else 0,
    }


def colour_map_scales(maps: int) -> str:
    """A colour hvae's layout for `maps` lower maps: COLOUR_DEFAULTS' for four; fewer start at a quarter of the
    image (8x8 and 16x16 was the best pair measured), more repeat the half-size level."""
    divisors = [4, 2, 1][:maps] if maps < 4 else [8, 4, *[2] * (maps - 3), 1]
    return ",".join(map(str, divisors))


def halved_sizes(height: int, width: int, times: int) -> list[tuple[int, int]]:
    """The image's size, then its size after each of `times` stride-2 halvings (rounding up)."""
    sizes = [(height, width)]
    for _ in range(times):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def describe_prior(components: int) -> str:
    """p(z) in words, for reports: N(0, I), or the fitted mixture."""
    return f"mixture of {components} full-covariance Gaussians" if components else "N(0, I)"


def train_command_line(config: TrainConfig) -> str:
    """The full `vae train` command that reproduces this config from scratch."""
    parts = ["vae", "train"]
    model = config.model
    # The defaults that depend on the colour are the ones a command without these flags gets today.
    defaults = {**OMITTED_AT_DEFAULT, **run_defaults(model.channels, {"arch": model.arch, "groups": model.groups,
                                                                      "likelihood": model.likelihood})}
    defaults.pop("group_channels")  # an hvae's is always written
    always = [name for name in TRAIN_FLAGS if name not in OMITTED_AT_DEFAULT and name not in NOT_IN_COMMAND]
    for name in [*always, *OMITTED_AT_DEFAULT]:
        value = config_field(config, name)
        if name in OMITTED_AT_DEFAULT and value == defaults.get(name, OMITTED_AT_DEFAULT[name]):
            continue
        if value is False:
            parts.append(OFF_FLAGS[name])  # on by default for this run, turned off
        elif isinstance(value, bool) or name in FLAG_ONLY:
            parts.append(TRAIN_FLAGS[name])
        else:
            # repr keeps a float's every digit: the command must give back this very config.
            parts += [TRAIN_FLAGS[name], repr(value) if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def config_field(config: TrainConfig, name: str) -> Any:
    """A field of the training config or of its model config, by name."""
    return getattr(config.model if name in MODEL_FIELDS else config, name)


def resume_fixed_flags() -> list[str]:
    """The `vae train` flags a resumed run may not change: the checkpoint fixes them (the dataset: see train)."""
    fixed = [flag for name, flag in TRAIN_FLAGS.items() if name not in ("epochs", "dataset", "prior_components")]
    return list(dict.fromkeys(fixed))


def _check_range(what: str, value: int, low: int, high: int, field: str) -> None:
    """Refuse a value outside [low, high], naming the config field as a setting."""
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}... ({len(str(value))} digits)"
        raise SettingError(f"{what} must be between {low} and {high}, not {shown} (`{field}`)")
