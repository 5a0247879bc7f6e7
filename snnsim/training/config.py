"""One flat training configuration: printed at start, saved as ``config.json``
in the run folder and inside every checkpoint.

Where a value comes from, lowest precedence first:

1. the defaults below (the Fashion-MNIST MLP of the paper, authors' setup);
2. a config file (``--config``, a path or the name of a shipped config in
   ``snnsim/configs/``): an authors' YAML (top-level ``Network:`` and ``Layers:``
   keys, read and checked by :mod:`snnsim.training.builder`; the ``Network:``
   settings that are fields here set them, the ``Layers:`` are the network), or
   a flat snnsim config (JSON or YAML, e.g. a run's ``config.json``);
3. command-line options and ``--key=value`` overrides, parsed to the field's type.

An unknown key is an error naming the key and listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from dataclasses import dataclass, field

from ..datasets.errors import DatasetError
from ..datasets.registry import DATASETS, canonical_name
from ..params import READINGS, RESETS, SENSITIVITY_BOUND, check_neuron
from ..presets import PRESETS
from ..variants import BACKWARDS, DEFAULT_BACKWARD
from .builder import (
    ConfigError,
    authors_settings,
    find_config_file,
    is_authors_yaml,
    names_config_file,
    read_config_file,
    short_repr,
)
from .optim import ADAMW_BETAS, ADAMW_EPS, ADAMW_WEIGHT_DECAY, WEIGHT_CLAMP

LOSSES = ("kernel", "count")
DTYPES = ("float32", "float64")
BACKENDS = ("numpy", "cupy", "torch")
DESIRED_TRAINS = ("paper", "authors")


#: Keys of a run's ``config.json`` that record what the run did, not how to run it
#: (``data_files``: the dataset files read, :mod:`snnsim.training.provenance`).
RECORD_KEYS = ("data_files",)


def _f(default, help: str):  # "help" reads best in the table below
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (see ``python3 -m snnsim.train --help``)."""

    # --- what to train -------------------------------------------------------
    network: str = _f("784-400-400-10",
                      "paper notation (e.g. 784-400-400-10, 32C5-P2-64C5-P2-1024-10) or the "
                      "path of an authors' YAML whose Layers: define the network")
    dataset: str = _f("fashion-mnist", " | ".join(DATASETS))
    data_dir: str | None = _f(None, "directory holding the dataset (None: the standard search "
                                    "path, see snnsim.datasets)")
    train_subset: int | None = _f(None, "use only the first N training samples (quick runs)")
    test_subset: int | None = _f(None, "use only the first N test samples (quick runs)")
    augment: bool = _f(True, "CIFAR-10 only: random crop of the 4-padded image and "
                             "horizontal flip, per epoch")
    nmnist_bin_us: int = _f(3000, "N-MNIST only: time bin width in microseconds")
    # --- neuron and gradient -------------------------------------------------
    n_steps: int = _f(5, "T, time steps per sample (1 ms each)")
    tau_m: float = _f(5.0, "membrane time constant (ms)")
    tau_s: float = _f(3.0, "synaptic time constant (ms)")
    v_th: float = _f(1.0, "firing threshold (layers of an authors' YAML may set their own)")
    preset: str = _f("authors", "authors | paper: reset, desired train, target filtering and "
                                "gradient reading as in the authors' code or the paper's text")
    reset: str | None = _f(None, "override the preset's reset: zero | subtract")
    reading: str | None = _f(None, "override the preset's gradient reading: authors | timing")
    desired_train: str | None = _f(None, "override the preset's desired spike train: "
                                         "authors | paper")
    target_filter_passes: int | None = _f(None, "override the preset's target filtering: 1 | 2")
    sensitivity_bound: float | None = _f(SENSITIVITY_BOUND, "bound on |dt/du| = 1/du "
                                                            "(None: unbounded)")
    warmup: bool = _f(True, "warm-up surrogate where a[t] < 1/(4 tau_s) (S 2.3)")
    backward: str = _f(DEFAULT_BACKWARD, "backward variant: tsslbp (the reading above) or a "
                                         "named variant that fixes reading, bound and warm-up "
                                         "itself (list under 'Backward variants')")
    # --- loss ----------------------------------------------------------------
    loss: str = _f("kernel", "kernel (van Rossum, eq. 7) | count (summed PSC)")
    desired_count: float = _f(15.0, "count loss: target summed PSC of the label neuron")
    undesired_count: float = _f(3.0, "count loss: target summed PSC of the other neurons")
    # --- optimisation --------------------------------------------------------
    epochs: int = _f(100, "number of epochs (authors' Fashion-MNIST MLP: 100)")
    batch_size: int = _f(100, "training batch size")
    lr: float = _f(5e-4, "AdamW learning rate")
    betas: tuple[float, float] = _f(ADAMW_BETAS, "AdamW (beta1, beta2), e.g. --betas=0.9,0.999")
    eps: float = _f(ADAMW_EPS, "AdamW epsilon")
    weight_decay: float = _f(ADAMW_WEIGHT_DECAY, "AdamW decoupled weight decay")
    grad_clip: float | None = _f(1.0, "global gradient-norm clip (0 or None: off)")
    weight_clamp: float | None = _f(WEIGHT_CLAMP, "clamp weights to [-c, c] after every step "
                                                  "(0 or None: off)")
    # --- machinery -----------------------------------------------------------
    backend: str = _f("numpy", "numpy | cupy | torch")
    dtype: str = _f("float32", "float32 | float64")
    fused: bool = _f(False, "cupy only: one CUDA kernel per LIF layer and pass (snnsim.kernels)")
    seed: int = _f(0, "seed of the initialisation, shuffling, dropout and augmentation")
    eval_batch_size: int = _f(1000, "batch size of the test-set evaluation")
    out: str | None = _f(None, "run folder (None: runs/<name>-<date>-<time>)")
    name: str = _f("", "run name, used for the default run folder (default: the config's "
                       "name or dataset_network)")
    progress: bool = _f(True, "show a tqdm progress bar")
    save_every_s: float | None = _f(600.0, "inside an epoch, keep the epoch so far in the run "
                                           "folder's interrupted.h5 every S seconds of "
                                           "training, so that a kill loses at most that much "
                                           "(0 or None: only when stopped by Ctrl-C or SIGTERM)")
    tensorboard: bool = _f(False, "write TensorBoard event files into the run folder's "
                                  "tensorboard/ after every epoch (needs tensorboardX)")

    def __post_init__(self):
        # 0 disables clipping/clamping, stored as None
        for key in ("grad_clip", "weight_clamp", "save_every_s"):
            if getattr(self, key) is not None and float(getattr(self, key)) == 0.0:
                object.__setattr__(self, key, None)
        object.__setattr__(self, "dataset", _canonical_dataset(self.dataset))
        _check_choice("preset", self.preset, tuple(PRESETS))
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("reset", self.reset, RESETS, optional=True)
        _check_choice("reading", self.reading, READINGS, optional=True)
        _check_choice("backward", self.backward, BACKWARDS)
        if self.backward != DEFAULT_BACKWARD and self.reading is not None:
            raise ConfigError(f"reading={self.reading} applies to backward={DEFAULT_BACKWARD} only; "
                              f"backward={self.backward} fixes its own reading")
        _check_choice("desired_train", self.desired_train, DESIRED_TRAINS, optional=True)
        _check_choice("target_filter_passes", self.target_filter_passes, (1, 2), optional=True)
        for key in ("n_steps", "epochs", "batch_size", "eval_batch_size", "nmnist_bin_us"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("train_subset", "test_subset"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1 or None, got {getattr(self, key)}")
        try:                # the neuron's own check (snnsim.params), one for every path
            check_neuron(self.tau_m, self.tau_s, self.v_th, self.resolved()["reset"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        for key in ("grad_clip", "weight_clamp", "sensitivity_bound", "save_every_s"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be positive or None, got {getattr(self, key)}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas}")
        _check_ranges(self)

    # --- conversions ----------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> TrainConfig:
        """Build from a flat dict (values already typed, or strings to parse); the
        records a run adds to its ``config.json`` (:data:`RECORD_KEYS`) are skipped."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a config must be a mapping of keys to values, got "
                              f"{type(d).__name__}")
        return cls().replace(source=source, **{k: v for k, v in d.items()
                                                if k not in RECORD_KEYS})

    def replace(self, source: str = "override", **changes) -> TrainConfig:
        """A copy with ``changes`` applied; string values are parsed to the field's type."""
        typed, given = {}, {}
        for raw, value in changes.items():
            if not isinstance(raw, str):
                raise ConfigError(f"{source}: config key {raw!r} is not a name "
                                  f"({type(raw).__name__})")
            key = normalize_key(raw)
            check_key(key, source)
            if key in given:         # train_subset and train-subset: one field, twice
                raise ConfigError(f"{source}: {given[key]!r} and {raw!r} both set {key}; "
                                  "give it once")
            given[key] = raw
            try:
                typed[key] = coerce(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        try:
            return dataclasses.replace(self, **typed)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def resolved(self) -> dict:
        """The preset's choices with this config's overrides applied."""
        preset = PRESETS[self.preset]
        return {
            "reset": self.reset or preset.reset,
            "reading": self.reading or preset.reading,
            "desired_train": self.desired_train or preset.desired_train,
            "target_filter_passes": self.target_filter_passes or preset.target_filter_passes,
        }

    def format(self) -> str:
        """Aligned ``key = value`` lines, with the preset's resolved choices."""
        d = self.to_dict()
        width = max(map(len, d))
        lines = [f"  {k:<{width}} = {v!r}" for k, v in d.items()]
        res = ", ".join(f"{k}={v}" for k, v in self.resolved().items())
        lines.append(f"  {'(resolved)':<{width}}   {res}")
        return "\n".join(lines)


# --- keys and values -------------------------------------------------------
def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def field_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}


@functools.lru_cache(maxsize=1)
def field_types() -> dict[str, object]:
    return typing.get_type_hints(TrainConfig)


def normalize_key(key: str) -> str:
    """``--batch-size`` and ``batch_size`` name the same field."""
    return key.strip().lstrip("-").replace("-", "_")


def check_key(key: str, source: str = "config") -> None:
    if key not in field_names():
        close = difflib.get_close_matches(key, field_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: unknown config key {key!r}{hint} (valid keys: "
                          + ", ".join(field_names()) + ")")


_NONE_WORDS = ("none", "null", "")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def coerce(key: str, value):
    """``value`` (a command-line string, or a config file's value) as the type of field
    ``key``; ConfigError naming the key otherwise. A config file's value must already
    be of the field's kind: a number is not a bool (``epochs: true``), a list is not a
    number (``lr: [1, 2]``), a mapping or list is not a string."""
    tp = field_types()[key]
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        if value is None:
            raise ConfigError(f"{key} may not be None")
    try:
        if typing.get_origin(base) is tuple:
            return _tuple(value, typing.get_args(base))
        return _scalar(base, value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"bad value {short_repr(value)} for {key} ({_type_name(tp)}): "
                          f"{exc}") from None


def _tuple(value, item_types) -> tuple:
    """A tuple field (``betas``): "a,b", "(a, b)" or a list of as many scalars."""
    if isinstance(value, str):
        value = [v for v in value.strip().strip("()[]").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected {len(item_types)} comma-separated values")
    if len(value) != len(item_types):
        raise ValueError(f"expected {len(item_types)} comma-separated values")
    return tuple(_scalar(t, v) for t, v in zip(item_types, value))


def _scalar(base, value):
    """``value`` as ``bool``, ``int``, ``float`` or ``str``; ValueError otherwise."""
    if not isinstance(value, (str, bool, int, float)):
        raise ValueError(f"expected a single {base.__name__}, got a {type(value).__name__}")
    if base is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError("expected true or false")
    if base is str:
        if isinstance(value, bool):
            raise ValueError("expected a string, got a boolean")
        return str(value)
    if isinstance(value, bool):
        raise ValueError(f"expected {'an integer' if base is int else 'a number'}, got a boolean")
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                value = int(value.strip()) if value.strip().lstrip("+-").isdigit() else float(value)
            except ValueError:
                raise ValueError("expected an integer") from None
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    if base is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    raise TypeError(f"no conversion to {base!r}")


def _type_name(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return "tuple of " + ", ".join(a.__name__ for a in args)
    if args:
        return " or ".join("None" if a is type(None) else _type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _canonical_dataset(name: str) -> str:
    try:
        return canonical_name(name)
    except DatasetError as exc:
        raise ConfigError(f"dataset: {exc}") from None


def _check_choice(key, value, choices, optional=False):
    if value is None and optional:
        return
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}"
                          + (" or None" if optional else "") + f", got {value!r}")


def _check_ranges(cfg: TrainConfig) -> None:
    """Values the types admit but the run cannot use: non-finite numbers, AdamW's
    eps <= 0, weight decay < 0, betas outside [0, 1), a negative seed, a fused
    network off CuPy, a run name that is not a plain folder name."""
    import math
    for key in ("lr", "eps", "weight_decay", "tau_m", "tau_s", "v_th", "desired_count",
                "undesired_count", "grad_clip", "weight_clamp", "sensitivity_bound"):
        value = getattr(cfg, key)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
    if not cfg.eps > 0:
        raise ConfigError(f"eps must be positive (AdamW divides by sqrt(v) + eps), got {cfg.eps}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not all(math.isfinite(b) and 0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas must both lie in [0, 1), got {tuple(cfg.betas)}")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0 (NumPy seeds are non-negative), got {cfg.seed}")
    if cfg.fused and cfg.backend != "cupy":
        raise ConfigError("fused needs --backend cupy (one CUDA kernel per LIF layer); "
                          f"backend is {cfg.backend!r}")
    if cfg.name and (cfg.name in (".", "..") or not all(c.isalnum() or c in "_.-"
                                                         for c in cfg.name)):
        raise ConfigError(f"name {cfg.name!r} must be a plain folder name (letters, digits, "
                          "'_', '.', '-'); use --out DIR for a folder elsewhere")


def describe_fields() -> str:
    """The table of every field, its type, default and meaning, for ``--help``."""
    defaults = TrainConfig().to_dict()
    types = field_types()
    rows = []
    for key, text in field_help().items():
        rows.append(f"  --{key.replace('_', '-')}=<{_type_name(types[key])}>  "
                    f"(default {defaults[key]!r})\n"
                    f"      {text}")
    return "\n".join(rows)


# --- config files -----------------------------------------------------------------
def authors_network_fields(network: dict, source: str) -> dict:
    """The fields an authors' ``Network:`` section sets: its settings
    (:func:`snnsim.training.builder.authors_settings`) that are fields here, and
    any field of this config written there too."""
    names = field_names()
    try:
        settings = authors_settings(network, extra_keys=names)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    fields = {k: v for k, v in settings.items() if k in names}
    fields.update({k: v for k, v in network.items() if k in names and k not in settings})
    return fields


def load_config_file(name_or_path: str, base: TrainConfig | None = None) -> TrainConfig:
    """Read a config file onto ``base`` (default: the defaults).

    An authors' YAML sets ``network`` to its own path (its ``Layers:`` are the
    network) and ``name`` to its stem; a flat file sets the fields it names,
    except ``out`` (a run's ``config.json`` reused for a new run must not point
    at the old run's folder).
    """
    path, doc = read_config_file(name_or_path)
    base = base or TrainConfig()
    source = str(path)
    if is_authors_yaml(doc):
        fields = authors_network_fields(doc["Network"] or {}, source)
        fields["network"] = str(path.resolve())
        if not base.name:
            fields["name"] = path.stem
        return base.replace(source=source, **fields)
    doc = {k: v for k, v in doc.items()    # a new run: a new folder, its own records
           if not (isinstance(k, str) and normalize_key(k) in ("out", *RECORD_KEYS))}
    return base.replace(source=source, **doc)


__all__ = ["ConfigError", "TrainConfig", "authors_network_fields", "check_key", "coerce",
           "describe_fields", "field_names", "find_config_file", "load_config_file",
           "names_config_file", "normalize_key"]
