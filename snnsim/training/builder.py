"""Network builders: the paper's notation and the authors' YAML configuration files.

Two ways to describe a network:

- the paper's notation, e.g. ``"15C5-P2-40C5-P2-300-10"`` (:func:`parse_paper_notation`);
- the authors' configuration files, a ``Network:`` section of run settings and a
  ``Layers:`` section of layers in order (:func:`load_authors_yaml`,
  :func:`layers_from_authors_config`). The shipped configs in ``snnsim/configs/``
  are in this format, one per experiment of the table in docs/authors_code.md;
  files from the authors' repository load unchanged.

This module is the one reader of that dialect: finding a config file
(:func:`find_config_file`), reading it (:func:`read_config_file`, once per
process), checking its ``Network:`` section (:func:`authors_settings`, used by
:mod:`snnsim.training.config` too) and its ``Layers:``.
:func:`build_network` turns either description into a :class:`~snnsim.network.Network`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import re
from importlib import resources
from pathlib import Path

import yaml

from ..conv import Conv2d
from ..datasets.errors import DatasetError
from ..datasets.registry import authors_dataset, get_spec
from ..dropout import Dropout
from ..layers import Dense, Layer
from ..network import Network
from ..params import NeuronParams
from ..pool import POOL_GAIN, Pool2d
from . import yamlstrict

# =============================================================================
# The paper's notation
# =============================================================================
_DENSE_RE = re.compile(r"\d+")
_CONV_RE = re.compile(r"(\d+)[Cc](\d+)(.*)")
_POOL_RE = re.compile(r"[Pp](\d+)")
_DROP_RE = re.compile(r"[Dd](\d*\.?\d+(?:[eE][-+]?\d+)?)")
_CONV_SHORT_OPTS_RE = re.compile(r"(?:p(\d+))?(?:s(\d+))?")
_CONV_PAREN_OPTS_RE = re.compile(r"\((.*)\)")
_CONV_OPT_RE = re.compile(r"(pad|padding|stride)\s*[=: ]\s*(\d+)")
_SHAPE_PREFIX_RE = re.compile(r"\d+(?:\s*[x×*]\s*\d+)*")


def _parse_conv_options(token: str, suffix: str, padding: int) -> tuple[int, int]:
    """(padding, stride) from a conv token's suffix: "", "p2", "p2s2", "s2",
    "(pad 2)", "(pad 2, stride 2)", "(padding=2)"."""
    suffix = suffix.strip()
    stride = 1
    if not suffix:
        return padding, stride
    short = _CONV_SHORT_OPTS_RE.fullmatch(suffix)
    if short:
        if short.group(1) is not None:
            padding = int(short.group(1))
        if short.group(2) is not None:
            stride = int(short.group(2))
        return padding, stride
    paren = _CONV_PAREN_OPTS_RE.fullmatch(suffix)
    if not paren:
        raise ValueError(f"bad conv options {suffix!r} in token {token!r}: "
                         "use e.g. '32C5p2', '32C5(pad 2)' or '32C5(pad 2, stride 2)'")
    for part in paren.group(1).split(","):
        opt = _CONV_OPT_RE.fullmatch(part.strip())
        if not opt:
            raise ValueError(f"bad conv option {part.strip()!r} in token {token!r}: "
                             "expected 'pad N' or 'stride N'")
        if opt.group(1) == "stride":
            stride = int(opt.group(2))
        else:
            padding = int(opt.group(2))
    return padding, stride


def _parse_shape_prefix(text: str) -> tuple:
    text = text.strip()
    if not _SHAPE_PREFIX_RE.fullmatch(text):
        raise ValueError(f"bad input shape {text!r} before ':'; write e.g. '2x34x34' or '784'")
    return tuple(int(n) for n in re.split(r"\s*[x×*]\s*", text))


def parse_paper_notation(spec: str, input_shape=None, *, conv_padding: int = 0,
                         conv_weight_scale: float = 1.0, dense_weight_scale: float = 1.0,
                         neuron: NeuronParams | None = None) -> list[Layer]:
    """Layers from the paper's notation, checked against ``input_shape``.

    Grammar (tokens separated by ``-``; spaces around tokens and the paper's
    ``−`` are allowed)::

        spec    := [shape ":"] token ("-" token)*
        shape   := N ("x" N)*                 e.g. "2x34x34" or "2×34×34"; must equal input_shape
        token   := N                          dense layer of N neurons           e.g. "400"
                 | N "C" K [options]          conv, N maps of K×K kernels         e.g. "32C5"
                 | "P" K                      K×K pooling, stride K ("p" too)     e.g. "P2"
                 | "D" F                      dropout with p = F                  e.g. "D0.2"
        options := "p" PAD ["s" STRIDE] | "s" STRIDE
                 | "(" opt ("," opt)* ")"     opt := ("pad" | "padding" | "stride") [" " | "=" | ":"] N
                                              e.g. "32C5p2", "32C5(pad 2)", "32C5(pad 2, stride 2)"

    A first token that is a plain number equal to the flattened input size
    (``"784-"`` for a 28×28 input) is the input, not a layer. Convs without a
    padding option get ``conv_padding``; ``conv_weight_scale`` and
    ``dense_weight_scale`` scale the initial weights (section 5; CIFAR-10 CNN1
    uses 5 for convs); ``neuron`` is given to every spiking layer (None: the
    network's). Raises ValueError naming the offending token.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty network spec {spec!r}")
    body = spec.replace("−", "-").strip()
    if ":" in body:
        prefix, body = body.split(":", 1)
        declared = _parse_shape_prefix(prefix)
        if input_shape is not None and tuple(input_shape) != declared:
            raise ValueError(f"spec {spec!r} declares input {declared} but input_shape is "
                             f"{tuple(input_shape)}")
        input_shape = declared
    if input_shape is None:
        raise ValueError("parse_paper_notation needs input_shape (or a 'CxHxW:' prefix in the spec)")
    shape = tuple(int(n) for n in input_shape)
    tokens = [tok.strip() for tok in body.split("-")]
    layers: list[Layer] = []
    for position, token in enumerate(tokens):
        if not token:
            raise ValueError(f"empty token at position {position} of network spec {spec!r}")
        if position == 0 and _DENSE_RE.fullmatch(token) and int(token) == math.prod(shape) \
                and len(tokens) > 1:
            continue                                                             # the input layer
        try:
            layer = _layer_from_token(token, conv_padding, conv_weight_scale, dense_weight_scale, neuron)
            shape = tuple(layer.output_shape(shape))
        except ValueError as exc:
            raise ValueError(f"network spec {spec!r}, token {token!r} (position {position}): {exc}") from None
        layers.append(layer)
    if not layers:
        raise ValueError(f"network spec {spec!r} has no layers")
    return layers


def _layer_from_token(token, conv_padding, conv_weight_scale, dense_weight_scale, neuron) -> Layer:
    if _DENSE_RE.fullmatch(token):
        return Dense(int(token), weight_scale=dense_weight_scale, neuron=neuron)
    conv = _CONV_RE.fullmatch(token)
    if conv:
        padding, stride = _parse_conv_options(token, conv.group(3), conv_padding)
        return Conv2d(int(conv.group(1)), int(conv.group(2)), stride=stride, padding=padding,
                      weight_scale=conv_weight_scale, neuron=neuron)
    pool = _POOL_RE.fullmatch(token)
    if pool:
        return Pool2d(int(pool.group(1)))
    drop = _DROP_RE.fullmatch(token)
    if drop:
        return Dropout(float(drop.group(1)))
    raise ValueError(f"unknown layer token {token!r}: expected N (dense), NCK[options] (conv), "
                     "PK (pooling) or DF (dropout)")


# =============================================================================
# The authors' configuration files
# =============================================================================
AUTHORS_LOSSES = ("kernel", "count")

#: ``Network:`` keys that snnsim uses (all become run settings; tau_m, tau_s the neuron).
NETWORK_KEYS_REQUIRED = ("epochs", "batch_size", "n_steps", "dataset", "lr", "loss", "n_class",
                         "tau_m", "tau_s")
#: ``Network:`` keys used when present (the counts only matter for the count loss).
NETWORK_KEYS_OPTIONAL = ("desired_count", "undesired_count")
#: ``Network:`` keys accepted and not used, each with its value check (None: any).
NETWORK_KEYS_IGNORED = {
    "data_path": None,         # snnsim.datasets finds data by its own search order
    "rule": "TSSLBP",          # the only rule snnsim implements
    "model": "LIF",            # the only neuron model snnsim implements
    "SpikeBasedBPTT": None,    # a key of the authors' older files, without effect
}

#: Layer keys per ``type``, besides ``type`` itself.
LAYER_KEYS = {
    "linear": {"n_inputs", "n_outputs", "weight_scale", "threshold"},
    "conv": {"in_channels", "out_channels", "kernel_size", "weight_scale", "padding", "stride",
             "dilation", "threshold"},
    # ``threshold`` is accepted and ignored: a pooling layer has no neuron (the
    # authors' files give it one, e.g. 0.75, that their code never reads).
    # ``theta`` is the authors' name of the pooling gain (default POOL_GAIN).
    "pooling": {"kernel_size", "stride", "padding", "threshold", "theta"},
    "dropout": {"p"},
}
#: Dropout p when a ``dropout`` layer has no ``p`` (authors' code default).
AUTHORS_DROPOUT_DEFAULT = 0.5

#: Where the shipped configs live: the package data folder ``snnsim/configs``, found
#: through importlib.resources, so that an installed wheel or sdist finds it as a source
#: checkout does.
CONFIG_DIRS = (resources.files("snnsim") / "configs",)


class ConfigError(ValueError):
    """A config file, key or value that snnsim cannot read as written; the message names it."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """No config file of that name or path."""


def find_config_file(name_or_path) -> Path:
    """A config file path, or the shipped config ``snnsim/configs/<name>.yaml``."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    tried = [p]
    if p.suffix == "" and os.sep not in str(name_or_path):
        for d in CONFIG_DIRS:
            for ext in (".yaml", ".yml", ".json"):
                cand = d / (str(name_or_path) + ext)
                tried.append(cand)
                if cand.is_file():
                    return cand
    shipped = list_configs()
    raise ConfigNotFoundError(f"config {str(name_or_path)!r} not found (tried: "
                              + ", ".join(map(str, tried)) + ")"
                              + (f"; shipped configs: {', '.join(shipped)}" if shipped else ""))


def list_configs() -> list[str]:
    """Names of the shipped configs (without ``.yaml``)."""
    return sorted({q.name.rsplit(".", 1)[0] for d in CONFIG_DIRS if d.is_dir() for q in d.iterdir()
                   if q.name.endswith((".yaml", ".yml"))})


def read_config_file(name_or_path) -> tuple[Path, dict]:
    """``(path, mapping)`` of a config file (JSON or YAML; a path or a shipped
    config's name). The file is read and parsed once per process (while it is
    unchanged); each call returns a fresh copy of the mapping."""
    path = find_config_file(name_or_path)
    stat = path.stat()
    doc = _parse_config(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return path, copy.deepcopy(doc)


@functools.lru_cache(maxsize=32)
def _parse_config(path: str, mtime_ns: int, size: int) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
        # a key given twice is an error, not a silent override (snnsim.training.yamlstrict)
        doc = yamlstrict.json_loads(text) if path.endswith(".json") else yamlstrict.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: cannot read config: nested too deeply") from None
    except (OSError, ValueError, OverflowError, yaml.YAMLError) as exc:
        # (OverflowError: PyYAML's scanner on a \U escape beyond a C int's range)
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(doc).__name__}")
    for key in doc:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: config key {short_repr(key)} is not a name "
                              f"({type(key).__name__})")
    return doc


def is_authors_yaml(doc) -> bool:
    """An authors'-format config: top-level ``Network:`` and ``Layers:``."""
    return isinstance(doc, dict) and "Network" in doc and "Layers" in doc


def load_authors_yaml(path) -> dict:
    """Read an authors'-format config (a path or a shipped config's name):
    a dict with ``"Network"`` and ``"Layers"`` (layers in file order)."""
    path, cfg = read_config_file(path)
    extra = set(cfg) - {"Network", "Layers"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(extra)}; expected 'Network' "
                          "and 'Layers'")
    for section in ("Network", "Layers"):
        if not isinstance(cfg.get(section), dict) or not cfg[section]:
            raise ConfigError(f"{path}: missing or empty section {section!r}")
    return cfg


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _nonnegative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _number(value, what: str) -> float:
    """A real number of an authors' file: an int or float, or a string that reads as
    one (YAML 1.1 reads ``5e-4``, without a dot, as a string); never a bool, a list
    or a mapping, and finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{what} must be a number, got {short_repr(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{what} must be a number, got {short_repr(value)}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {short_repr(value)}")
    return number


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` of at most ``limit`` characters, for an error message (a config
    value may be huge, or nested deeper than ``repr`` can recurse)."""
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def authors_settings(net: dict, extra_keys=()) -> dict:
    """The run settings of an authors' ``Network:`` section, checked: every
    required key present, none unknown (``extra_keys`` are accepted without use),
    each value of a usable type. ``dataset`` becomes the snnsim name (the
    authors' in ``dataset_authors``)."""
    if not isinstance(net, dict):
        raise ConfigError(f"Network: must be a mapping of settings, got {type(net).__name__}")
    if not all(isinstance(k, str) for k in net):
        raise ConfigError(f"Network: every key must be a name, got "
                          f"{short_repr(next(k for k in net if not isinstance(k, str)))}")
    unknown = (set(net) - set(NETWORK_KEYS_REQUIRED) - set(NETWORK_KEYS_OPTIONAL) - set(NETWORK_KEYS_IGNORED)
               - set(extra_keys))
    if unknown:
        known = sorted(NETWORK_KEYS_REQUIRED + NETWORK_KEYS_OPTIONAL + tuple(NETWORK_KEYS_IGNORED))
        raise ConfigError(f"Network: unknown key {sorted(unknown)[0]!r} (known: {known})")
    missing = [k for k in NETWORK_KEYS_REQUIRED if k not in net]
    if missing:
        raise ConfigError(f"Network: missing key {missing[0]!r}")
    for key, expected in NETWORK_KEYS_IGNORED.items():
        if expected is not None and key in net and net[key] != expected:
            raise ConfigError(f"Network: {key} {net[key]!r} is not supported (snnsim implements "
                              f"{expected!r})")
    if not isinstance(net["dataset"], str):
        raise ConfigError(f"Network: dataset must be a name, got {short_repr(net['dataset'])}")
    if not isinstance(net["loss"], str):
        raise ConfigError(f"Network: loss must be a name, got {short_repr(net['loss'])}")
    try:
        dataset = authors_dataset(net["dataset"])
    except DatasetError as exc:
        raise ConfigError(f"Network: {exc}") from None
    if net["loss"] not in AUTHORS_LOSSES:
        raise ConfigError(f"Network: unknown loss {net['loss']!r}; known: {AUTHORS_LOSSES}")
    if net["loss"] == "count":
        for key in NETWORK_KEYS_OPTIONAL:
            if key not in net:
                raise ConfigError(f"Network: loss 'count' needs {key!r}")
    for key in ("epochs", "batch_size", "n_steps", "n_class"):
        _positive_int(net[key], f"Network: {key}")
    numbers = {key: _number(net[key], f"Network: {key}")
               for key in ("lr", "tau_m", "tau_s", *NETWORK_KEYS_OPTIONAL) if key in net}
    if not numbers["lr"] > 0:
        raise ConfigError(f"Network: lr must be positive, got {net['lr']!r}")
    if net["n_class"] != dataset.n_classes:
        raise ConfigError(f"Network: n_class {net['n_class']} is not supported ({dataset.name} "
                          f"has {dataset.n_classes} classes)")
    settings = {key: net[key] for key in NETWORK_KEYS_REQUIRED + NETWORK_KEYS_OPTIONAL if key in net}
    settings.update(numbers)
    settings["dataset_authors"] = net["dataset"]
    settings["dataset"] = dataset.name
    return settings


def _layer_neuron(c: dict, base: NeuronParams, name: str) -> NeuronParams | None:
    """A layer's own NeuronParams when its ``threshold`` differs from the
    network's V_th; None (use the network's) otherwise."""
    if "threshold" not in c:
        return None
    v_th = _number(c["threshold"], f"layer {name!r}: threshold")
    if v_th == base.v_th:
        return None
    try:
        return dataclasses.replace(base, v_th=v_th)
    except ValueError as exc:
        raise ConfigError(f"layer {name!r}: {exc}") from None


def _weight_scale(c: dict, name: str) -> float:
    return _number(c.get("weight_scale", 1.0), f"layer {name!r}: weight_scale")


def _authors_layer(name: str, c: dict, shape: tuple, base: NeuronParams) -> Layer:
    """One layer of the ``Layers:`` section, checked against the incoming
    feature shape ``shape``."""
    if not isinstance(c, dict) or "type" not in c:
        raise ConfigError(f"layer {name!r}: expected a mapping with a 'type'")
    kind = c["type"]
    if kind not in LAYER_KEYS:
        raise ConfigError(f"layer {name!r}: unknown type {kind!r}; known: {sorted(LAYER_KEYS)}")
    unknown = set(c) - LAYER_KEYS[kind] - {"type"}
    if unknown:
        raise ConfigError(f"layer {name!r} ({kind}): unknown key {sorted(unknown)[0]!r}; "
                          f"known: {sorted(LAYER_KEYS[kind])}")
    if kind == "linear":
        n_in = _positive_int(c.get("n_inputs"), f"layer {name!r}: n_inputs")
        if n_in != math.prod(shape):
            raise ConfigError(f"layer {name!r}: n_inputs is {n_in} but its input {shape} has "
                              f"{math.prod(shape)} features")
        return Dense(_positive_int(c.get("n_outputs"), f"layer {name!r}: n_outputs"),
                     weight_scale=_weight_scale(c, name), neuron=_layer_neuron(c, base, name))
    if kind == "conv":
        c_in = _positive_int(c.get("in_channels"), f"layer {name!r}: in_channels")
        if len(shape) != 3:
            raise ConfigError(f"layer {name!r}: a conv needs (C, H, W) input, got {shape}")
        if c_in != shape[0]:
            raise ConfigError(f"layer {name!r}: in_channels is {c_in} but its input {shape} has "
                              f"{shape[0]} channels")
        if c.get("dilation", 1) != 1:
            raise ConfigError(f"layer {name!r}: dilation {c['dilation']!r} is not supported (only 1)")
        return Conv2d(_positive_int(c.get("out_channels"), f"layer {name!r}: out_channels"),
                      _positive_int(c.get("kernel_size"), f"layer {name!r}: kernel_size"),
                      stride=_positive_int(c.get("stride", 1), f"layer {name!r}: stride"),
                      padding=_nonnegative_int(c.get("padding", 0), f"layer {name!r}: padding"),
                      weight_scale=_weight_scale(c, name), neuron=_layer_neuron(c, base, name))
    if kind == "pooling":
        k = _positive_int(c.get("kernel_size"), f"layer {name!r}: kernel_size")
        if c.get("stride", k) != k or c.get("padding", 0) != 0:
            raise ConfigError(f"layer {name!r}: pooling supports only stride = kernel_size and padding 0")
        return Pool2d(k, gain=_number(c.get("theta", POOL_GAIN), f"layer {name!r}: theta"))
    return Dropout(_number(c.get("p", AUTHORS_DROPOUT_DEFAULT), f"layer {name!r}: p"))   # dropout


def layers_from_authors_config(cfg: dict, input_shape=None, reset: str = "zero", extra_network_keys=()):
    """Layers, neuron parameters and run settings of an authors'-format config.

    ``cfg``: the dict of :func:`load_authors_yaml`. ``input_shape`` overrides
    the dataset's feature shape (its spec in :mod:`snnsim.datasets.registry`); by default an MLP
    (first layer ``linear``) gets the flat shape ``(n_inputs,)``. ``reset``
    (``"zero"`` authors, ``"subtract"`` paper) goes into every NeuronParams.
    ``extra_network_keys``: further ``Network:`` keys to accept without use
    (e.g. the training CLI's own fields, which it reads itself).

    Returns ``(layers, neuron, settings)``: a list of :class:`Layer` (each with
    a ``name`` attribute, the config key), the network's :class:`NeuronParams`
    (τm, τs from ``Network:``, V_th = 1), and a flat dict of run settings
    (epochs, batch_size, n_steps, lr, loss, n_class, desired_count,
    undesired_count, dataset (snnsim name), dataset_authors, input_shape).
    A layer whose ``threshold`` differs from 1 gets its own NeuronParams.
    Raises :class:`ConfigError` (a ValueError) naming the layer or key at fault.
    """
    if not isinstance(cfg, dict) or set(cfg) != {"Network", "Layers"}:
        raise ConfigError("an authors' config is a mapping with exactly 'Network' and 'Layers'")
    settings = authors_settings(cfg["Network"], extra_network_keys)
    try:
        neuron = NeuronParams(tau_m=settings["tau_m"], tau_s=settings["tau_s"], reset=reset)
    except ValueError as exc:
        raise ConfigError(f"Network: {exc}") from None
    layer_cfgs = list(cfg["Layers"].items())
    if input_shape is None:
        input_shape = get_spec(settings["dataset"]).input_shape
        first = layer_cfgs[0][1] if layer_cfgs else {}
        if isinstance(first, dict) and first.get("type") == "linear":
            input_shape = (math.prod(input_shape),)
    shape = tuple(int(n) for n in input_shape)
    settings["input_shape"] = shape
    layers = []
    for name, c in layer_cfgs:
        try:
            layer = _authors_layer(name, c, shape, neuron)
            shape = tuple(layer.output_shape(shape))
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:                                  # from a layer's checks
            raise ConfigError(f"layer {name!r}: {exc}") from None
        layer.name = name
        layers.append(layer)
    if not any(layer.spiking for layer in layers):
        raise ConfigError("Layers: no spiking layer (linear or conv)")
    if shape != (settings["n_class"],):
        raise ConfigError(f"the last layer gives {shape} outputs but n_class is {settings['n_class']}")
    return layers, neuron, settings


def build_network(spec_or_cfg, input_shape=None, *, reset: str | None = None, **network_kwargs) -> Network:
    """A :class:`Network` from the paper's notation, an authors' config dict,
    or a config file (path or shipped name, see :func:`names_config_file`).

    Notation: ``input_shape`` is required (or a ``CxHxW:`` prefix);
    ``network_kwargs`` go to :class:`Network` (neuron, grad, backend, dtype,
    seed) — except the keyword arguments of :func:`parse_paper_notation`
    (conv_padding, conv_weight_scale, dense_weight_scale), which go there.
    Config: the neuron comes from the config (pass ``reset`` to choose the
    reset, default ``"zero"``); ``neuron`` may not be passed.
    """
    if isinstance(spec_or_cfg, (str, Path)) and names_config_file(spec_or_cfg):
        spec_or_cfg = load_authors_yaml(spec_or_cfg)
    if isinstance(spec_or_cfg, dict):
        if "neuron" in network_kwargs:
            raise ValueError("with a config the neuron parameters come from its Network section; "
                             "pass reset= to choose the reset")
        layers, neuron, settings = layers_from_authors_config(spec_or_cfg, input_shape, reset or "zero")
        return Network(layers, settings["input_shape"], neuron=neuron, **network_kwargs)
    if not isinstance(spec_or_cfg, str):
        raise TypeError(f"build_network takes a spec string, a config dict or a config path, "
                        f"got {type(spec_or_cfg).__name__}")
    notation_keys = ("conv_padding", "conv_weight_scale", "dense_weight_scale")
    notation_kwargs = {k: network_kwargs.pop(k) for k in notation_keys if k in network_kwargs}
    neuron = network_kwargs.get("neuron", NeuronParams())
    if reset is not None:
        neuron = network_kwargs["neuron"] = dataclasses.replace(neuron, reset=reset)
    if input_shape is None and ":" in spec_or_cfg:
        input_shape = _parse_shape_prefix(spec_or_cfg.split(":", 1)[0])
    layers = parse_paper_notation(spec_or_cfg, input_shape, **notation_kwargs)
    return Network(layers, input_shape, **network_kwargs)


def names_config_file(name) -> bool:
    """Whether a network string names a config file rather than the paper's
    notation: it ends in ``.yaml``/``.yml``, or :func:`find_config_file` finds it."""
    if str(name).lower().endswith((".yaml", ".yml")):
        return True
    try:
        find_config_file(name)
    except ConfigError:
        return False
    return True


def layers_from_spec(network: str, input_shape, extra_network_keys=()) -> list[Layer]:
    """The layers a network string names: the ``Layers:`` of an authors' config
    (:func:`layers_from_authors_config`) or the paper's notation
    (:func:`parse_paper_notation`), checked against ``input_shape``."""
    if names_config_file(network):
        layers, _, _ = layers_from_authors_config(load_authors_yaml(network), input_shape,
                                                  extra_network_keys=extra_network_keys)
        return list(layers)
    return parse_paper_notation(network, input_shape)


def count_parameters(net: Network) -> int:
    """Number of trainable weights of a network."""
    return sum(int(math.prod(p.shape)) for params in net.params for p in params.values())


__all__ = ["CONFIG_DIRS", "ConfigError", "ConfigNotFoundError", "authors_settings",
           "build_network", "count_parameters", "find_config_file", "is_authors_yaml",
           "layers_from_authors_config", "layers_from_spec", "list_configs", "load_authors_yaml",
           "names_config_file", "parse_paper_notation", "read_config_file", "short_repr"]
