"""Network builders: the paper's notation, the authors' config files, the
shipped configs against the table of docs/authors_code.md, and a whole conv network's
TSSL-BP gradient against central differences of the event-shift model.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from fdiff import H_FD, directional, random_direction, richardson, weights_along

from snnsim import EXACT_TIMING, Network, NeuronParams
from snnsim.conv import Conv2d
from snnsim.dropout import Dropout
from snnsim.eventshift import event_shift_forward
from snnsim.layers import Dense
from snnsim.pool import Pool2d
from snnsim.training.builder import (
    CONFIG_DIRS,
    ConfigError,
    build_network,
    count_parameters,
    find_config_file,
    layers_from_authors_config,
    list_configs,
    load_authors_yaml,
    parse_paper_notation,
)


def shapes_of(layers, input_shape):
    shape, shapes = tuple(input_shape), []
    for layer in layers:
        shape = tuple(layer.output_shape(shape))
        shapes.append(shape)
    return shapes


def without_dropout(description: str) -> str:
    return "-".join(tok for tok in description.split("-") if not tok.startswith("D"))


# --- the table of docs/authors_code.md, written out by hand ------------------------
#: name: (net in snnsim notation, input shape, T, batch, lr, epochs, loss, tau_m, tau_s,
#:        conv weight_scale, dropout p, parameter count computed by hand)
TABLE = {
    "fashion_mnist_mlp": ("400-400-10", (784,), 5, 100, 5e-4, 100, "kernel", 5, 3, 1, 0,
                          784 * 400 + 400 * 400 + 400 * 10),
    "fashion_mnist_cnn": ("32C5(pad 2)-P2-64C5(pad 2)-P2-1024-10", (1, 28, 28), 5, 50, 5e-4, 100, "kernel",
                          5, 3, 1, 0, 32 * 1 * 25 + 64 * 32 * 25 + 1024 * 64 * 7 * 7 + 10 * 1024),
    "mnist_cnn": ("15C5-P2-40C5-P2-300-10", (1, 28, 28), 5, 50, 5e-4, 200, "kernel", 5, 3, 1, 0,
                  15 * 25 + 40 * 15 * 25 + 300 * 40 * 4 * 4 + 10 * 300),
    "nmnist_cnn": ("12C5(pad 1)-P2-64C5-P2-10", (2, 34, 34), 30, 50, 5e-4, 100, "count", 8, 4, 1, 0,
                   12 * 2 * 25 + 64 * 12 * 25 + 10 * 64 * 6 * 6),
    "cifar10_cnn1": ("96C3(pad 1)-256C3(pad 1)-P2-384C3(pad 1)-P2-384C3(pad 1)-256C3(pad 1)-1024-1024-10",
                     (3, 32, 32), 5, 50, 2e-4, 150, "kernel", 5, 3, 5, 0.2,
                     9 * (96 * 3 + 256 * 96 + 384 * 256 + 384 * 384 + 256 * 384)
                     + 1024 * 256 * 8 * 8 + 1024 * 1024 + 10 * 1024),
    "cifar10_cnn2": ("128C3(pad 1)-256C3(pad 1)-P2-512C3(pad 1)-P2-1024C3(pad 1)-512C3(pad 1)-1024-512-10",
                     (3, 32, 32), 5, 50, 2e-4, 150, "kernel", 5, 3, 5, 0.2,
                     9 * (128 * 3 + 256 * 128 + 512 * 256 + 1024 * 512 + 512 * 1024)
                     + 1024 * 512 * 8 * 8 + 512 * 1024 + 10 * 512),
}


def test_every_experiment_has_a_config():
    assert set(list_configs()) == set(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_shipped_config_matches_table(name):
    net_str, in_shape, T, batch, lr, epochs, loss, tau_m, tau_s, conv_ws, p, n_params = TABLE[name]
    path = find_config_file(name)
    assert path.parent == CONFIG_DIRS[0]
    assert path.read_text().startswith("#"), "each config starts with a header comment citing the table"
    layers, neuron, s = layers_from_authors_config(load_authors_yaml(name))
    assert (s["n_steps"], s["batch_size"], s["lr"], s["epochs"], s["loss"]) == (T, batch, lr, epochs, loss)
    assert (neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset) == (tau_m, tau_s, 1.0, "zero")
    assert s["input_shape"] == in_shape and s["n_class"] == 10
    if loss == "count":
        assert (s["desired_count"], s["undesired_count"]) == (15, 3)
    desc = "-".join(layer.describe() for layer in layers)
    assert without_dropout(desc) == net_str
    assert all(layer.neuron is None for layer in layers)                 # every V_th is 1
    assert {layer.weight_scale for layer in layers if isinstance(layer, Conv2d)} <= {conv_ws}
    assert {layer.weight_scale for layer in layers if isinstance(layer, Dense)} == {1.0}
    assert {layer.p for layer in layers if isinstance(layer, Dropout)} == ({p} if p else set())
    assert all(layer.gain == pytest.approx(1.1) for layer in layers if isinstance(layer, Pool2d))
    # the table's string, parsed, gives the same layer shapes (dropout keeps shapes)
    parsed = parse_paper_notation(net_str, in_shape)
    assert shapes_of(parsed, in_shape) == [sh for layer, sh in zip(layers, shapes_of(layers, in_shape))
                                           if not isinstance(layer, Dropout)]
    # parameter count (networks are built for the small ones only: CIFAR's 21-45 M weights
    # are counted from the kernel shapes without drawing them)
    counted = 0
    shape = in_shape
    for layer in layers:
        if isinstance(layer, Conv2d):
            counted += layer.out_channels * shape[0] * layer.kernel_size ** 2
        elif isinstance(layer, Dense):
            counted += layer.n_out * math.prod(shape)
        shape = tuple(layer.output_shape(shape))
    assert counted == n_params
    if n_params < 5_000_000:
        assert count_parameters(build_network(name)) == n_params


def test_fashion_cnn_shapes():
    net = build_network("fashion_mnist_cnn")
    assert net.shapes == [(1, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (1024,), (10,)]
    assert net.describe() == "32C5(pad 2)-P2-64C5(pad 2)-P2-1024-10"


AUTHORS_FASHION_CNN = """\
Network:
  epochs: 100
  batch_size: 50
  n_steps: 5
  dataset: "FashionMNIST"
  rule: "TSSLBP"
  data_path: "../../datasets/fashion_mnist"
  lr: 0.0005
  loss: "kernel"
  n_class: 10
  desired_count: 4
  undesired_count: 1
  tau_m: 5
  tau_s: 3
  model: "LIF"

Layers:
  conv_1:
    type: "conv"
    in_channels: 1
    out_channels: 32
    kernel_size: 5
    weight_scale: 1
    padding: 2
    threshold: 1

  pooling_1:
    type: "pooling"
    kernel_size: 2
    threshold: 0.75

  conv_2:
    type: "conv"
    in_channels: 32
    out_channels: 64
    kernel_size: 5
    weight_scale: 1
    padding: 2
    threshold: 1

  pooling_2:
    type: "pooling"
    kernel_size: 2
    threshold: 0.75

  FC_1:
    type: "linear"
    n_inputs: 3136
    n_outputs: 1024
    weight_scale: 1
    threshold: 1

  output:
    type: "linear"
    n_inputs: 1024
    n_outputs: 10
    weight_scale: 1
    threshold: 1
"""


@pytest.fixture
def authors_file(tmp_path):
    """Write an authors'-format file (a variant of the Fashion-MNIST CNN)."""
    def write(text=AUTHORS_FASHION_CNN, name="cfg.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def test_authors_file_loads_unchanged(authors_file):
    cfg = load_authors_yaml(authors_file())
    assert list(cfg["Layers"]) == ["conv_1", "pooling_1", "conv_2", "pooling_2", "FC_1", "output"]
    layers, neuron, s = layers_from_authors_config(cfg)
    assert [layer.name for layer in layers] == list(cfg["Layers"])
    assert s["dataset"] == "fashion-mnist" and s["dataset_authors"] == "FashionMNIST"
    net = build_network(authors_file(), seed=3)
    assert net.describe() == "32C5(pad 2)-P2-64C5(pad 2)-P2-1024-10"
    assert net.neuron == NeuronParams(tau_m=5, tau_s=3, v_th=1.0, reset="zero")
    assert build_network(cfg, reset="subtract").neuron.reset == "subtract"


def test_layer_threshold_becomes_its_v_th(authors_file):
    text = AUTHORS_FASHION_CNN.replace("    padding: 2\n    threshold: 1",
                                       "    padding: 2\n    threshold: 0.8", 1)
    layers, neuron, _ = layers_from_authors_config(load_authors_yaml(authors_file(text)), reset="subtract")
    assert layers[0].neuron == NeuronParams(tau_m=5, tau_s=3, v_th=0.8, reset="subtract")
    assert layers[2].neuron is None and neuron.v_th == 1.0
    assert layers[1].neuron is None                                      # pooling threshold ignored


def test_authors_dropout_and_mlp(authors_file):
    text = textwrap.dedent("""\
        Network: {epochs: 1, batch_size: 2, n_steps: 5, dataset: "MNIST", lr: 0.0005, loss: "kernel",
                  n_class: 10, tau_m: 5, tau_s: 3}
        Layers:
          hidden: {type: "linear", n_inputs: 784, n_outputs: 20}
          drop: {type: "dropout", p: 0.25}
          drop_default: {type: "dropout"}
          output: {type: "linear", n_inputs: 20, n_outputs: 10}
        """)
    layers, _, s = layers_from_authors_config(load_authors_yaml(authors_file(text)))
    assert s["input_shape"] == (784,)
    assert [type(layer) for layer in layers] == [Dense, Dropout, Dropout, Dense]
    assert layers[1].p == 0.25 and layers[2].p == 0.5                    # authors' default p
    # the same layers on a (1, 28, 28) input: Dense flattens
    layers2, _, s2 = layers_from_authors_config(load_authors_yaml(authors_file(text)),
                                                input_shape=(1, 28, 28))
    assert s2["input_shape"] == (1, 28, 28)


@pytest.mark.parametrize("old, new, match", [
    ("    n_inputs: 3136", "    n_inputs: 3000", r"layer 'FC_1': n_inputs is 3000 .* 3136 features"),
    ("    in_channels: 32", "    in_channels: 16", r"layer 'conv_2': in_channels is 16 .* 32 channels"),
    ("    weight_scale: 1\n    padding: 2", "    weight_scal: 1\n    padding: 2",
     r"layer 'conv_1' .*'weight_scal'"),
    ('    type: "pooling"', '    type: "maxpool"', r"layer 'pooling_1': unknown type 'maxpool'"),
    ("  tau_s: 3\n", "  tau_s: 3\n  momentum: 0.9\n", r"Network: unknown key 'momentum'"),
    ("  lr: 0.0005\n", "", r"Network: missing key 'lr'"),
    ('  dataset: "FashionMNIST"', '  dataset: "SVHN"', r"unknown dataset 'SVHN'"),
    ('  loss: "kernel"', '  loss: "mse"', r"unknown loss 'mse'"),
    ('  rule: "TSSLBP"', '  rule: "STBP"', r"rule 'STBP' is not supported"),
    ("    n_outputs: 10\n", "    n_outputs: 11\n", r"last layer gives \(11,\) outputs but n_class is 10"),
    ("    kernel_size: 5\n    weight_scale: 1\n    padding: 2",
     "    kernel_size: 5\n    weight_scale: 1\n    dilation: 2\n    padding: 2", r"layer 'conv_1': dilation"),
    ("    kernel_size: 2\n    threshold: 0.75", "    kernel_size: 2\n    stride: 1\n    threshold: 0.75",
     r"layer 'pooling_1': pooling supports only stride = kernel_size"),
    ("    padding: 2\n    threshold: 1", "    padding: -1\n    threshold: 1", r"layer 'conv_1': .*padding"),
    ("    out_channels: 32", "    out_channels: 0",
     r"layer 'conv_1': out_channels must be a positive integer"),
])
def test_config_errors_name_the_fault(authors_file, old, new, match):
    assert old in AUTHORS_FASHION_CNN
    cfg = load_authors_yaml(authors_file(AUTHORS_FASHION_CNN.replace(old, new, 1)))
    with pytest.raises(ConfigError, match=match):
        layers_from_authors_config(cfg)


def test_extra_network_keys(authors_file):
    """Keys of the authors' older files are accepted; a caller's own keys only when named."""
    text = AUTHORS_FASHION_CNN.replace("  tau_s: 3\n",
                                       "  tau_s: 3\n  SpikeBasedBPTT: True\n  preset: paper\n")
    cfg = load_authors_yaml(authors_file(text))
    with pytest.raises(ConfigError, match="Network: unknown key 'preset'"):
        layers_from_authors_config(cfg)
    layers, _, s = layers_from_authors_config(cfg, extra_network_keys=("preset",))
    assert "preset" not in s and len(layers) == 6


def test_config_file_errors(authors_file, tmp_path):
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_authors_yaml(authors_file(AUTHORS_FASHION_CNN + "Extra: 1\n"))
    with pytest.raises(ConfigError, match="missing or empty section 'Layers'"):
        load_authors_yaml(authors_file(AUTHORS_FASHION_CNN.split("Layers:")[0]))
    with pytest.raises(FileNotFoundError, match="fashion_mnist_cnn"):
        find_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="neuron parameters come from"):
        build_network("fashion_mnist_cnn", neuron=NeuronParams())
    count_cfg = load_authors_yaml("nmnist_cnn")
    del count_cfg["Network"]["desired_count"]
    with pytest.raises(ConfigError, match="loss 'count' needs 'desired_count'"):
        layers_from_authors_config(count_cfg)


# --- the paper's notation ----------------------------------------------------------
@pytest.mark.parametrize("spec, in_shape, shapes", [
    ("784-400-400-10", (784,), [(400,), (400,), (10,)]),
    ("784-400-400-10", (1, 28, 28), [(400,), (400,), (10,)]),
    ("400-400-10", (784,), [(400,), (400,), (10,)]),
    ("400 − 400", (784,), [(400,), (400,)]),                                # the paper's minus sign
    ("15C5-P2-40C5-P2-300-10", (1, 28, 28),
     [(15, 24, 24), (15, 12, 12), (40, 8, 8), (40, 4, 4), (300,), (10,)]),
    ("32C5(pad 2)-P2-64C5(pad 2)-P2-1024-10", (1, 28, 28),
     [(32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (1024,), (10,)]),
    ("32C5p2-P2-64C5p2-P2-1024-10", (1, 28, 28),
     [(32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (1024,), (10,)]),
    ("2x34x34: 12C5(pad 1)-p2-64C5-p2-10", (2, 34, 34),
     [(12, 32, 32), (12, 16, 16), (64, 12, 12), (64, 6, 6), (10,)]),
    ("2×34×34: 12C5(pad 1)-P2-64C5-P2-10", None,
     [(12, 32, 32), (12, 16, 16), (64, 12, 12), (64, 6, 6), (10,)]),
    ("8C3(pad 1, stride 2)-8C3s2-D0.2-10", (1, 9, 9), [(8, 5, 5), (8, 2, 2), (8, 2, 2), (10,)]),
    ("8C3(padding=1)-8c3p0s2-d.5-10", (1, 9, 9), [(8, 9, 9), (8, 4, 4), (8, 4, 4), (10,)]),
    ("10", (10,), [(10,)]),                                                  # a lone number is a layer
])
def test_paper_notation_shapes(spec, in_shape, shapes):
    layers = parse_paper_notation(spec, in_shape)
    start = in_shape if in_shape is not None else (2, 34, 34)
    assert shapes_of(layers, start) == shapes


def test_paper_notation_options_and_round_trip():
    layers = parse_paper_notation("96C3-256C3-P2-1024-10", (3, 32, 32), conv_padding=1, conv_weight_scale=5,
                                  dense_weight_scale=2)
    assert [layer.padding for layer in layers if isinstance(layer, Conv2d)] == [1, 1]
    assert {layer.weight_scale for layer in layers if isinstance(layer, Conv2d)} == {5.0}
    assert {layer.weight_scale for layer in layers if isinstance(layer, Dense)} == {2.0}
    for spec in ("32C5(pad 2)-P2-64C5(pad 2)-P2-1024-10", "8C3(pad 1, stride 2)-P2-D0.2-10"):
        net = build_network(spec, (1, 28, 28))
        assert net.describe() == spec
        assert build_network(net.describe(), (1, 28, 28)).shapes == net.shapes
    assert build_network("2x8x8: 4C3-10").input_shape == (2, 8, 8)
    assert build_network("4C3-10", (1, 8, 8), reset="subtract").neuron.reset == "subtract"


@pytest.mark.parametrize("spec, in_shape, match", [
    ("", (784,), "empty network spec"),
    ("784-", (784,), "empty token at position 1"),
    ("400--10", (784,), "empty token at position 1"),
    ("32X5-10", (1, 28, 28), r"token '32X5'.*unknown layer token"),
    ("32C5(pad two)-10", (1, 28, 28), r"bad conv option 'pad two'"),
    ("32C5q2-10", (1, 28, 28), r"bad conv options 'q2'"),
    ("P0-10", (1, 28, 28), r"token 'P0'.*kernel_size"),
    ("0C5-10", (1, 28, 28), r"token '0C5'.*out_channels"),
    ("D1.5-10", (784,), r"token 'D1.5'.*0 <= p < 1"),
    ("400-32C5-10", (784,), r"token '32C5' \(position 1\).*\(C, H, W\)"),
    ("32C29-10", (1, 28, 28), r"token '32C29'.*output would be empty"),
    ("P2-10", (784,), r"token 'P2'.*\(C, H, W\)"),
    ("784", (784,), None),                                                   # a dense layer of 784: fine
    ("1x28x28: 10", (3, 32, 32), "declares input"),
    ("abc: 10", None, "bad input shape"),
    ("10", None, "needs input_shape"),
])
def test_paper_notation_errors(spec, in_shape, match):
    if match is None:
        assert len(parse_paper_notation(spec, in_shape)) == 1
        return
    with pytest.raises(ValueError, match=match):
        parse_paper_notation(spec, in_shape)


# --- a whole conv network against central differences ---------------------------------
#: The event-shift model is smooth and evaluated in float64, but its curvature grows like
#: 1/Δu at the spikes (the spike time t* = m - (u - u⁰)/Δu⁰) and with the gain of the
#: layers above: the plain central difference at h = 1e-6 has a truncation error
#: c h² of up to ~2e-6 relative in active networks. Hence (i) cases are kept off the
#: threshold kink, every spike with |Δu| ≥ DU_MIN, and (ii) the central differences at
#: h and h/2 are combined by Richardson extrapolation, (4 D(h/2) - D(h)) / 3, which
#: cancels the h² term: the remaining error (h⁴ truncation, ε |f| / h rounding) was
#: ≤ 2e-8 relative over 240 cases. RTOL_NET = 1e-6 leaves headroom and still catches any
#: wrong factor (a missing POOL_GAIN is a 10 % error, a wrong conv index an O(1) one).
RTOL_NET = 1e-6
DU_MIN = 0.02
#: Every spiking layer fires at ≥ 3 % of its (neuron, step) pairs, so that every term counts.
MIN_RATE = 0.03
IN_SHAPE, N_STEPS, BATCH = (1, 8, 8), 8, 2


def _active_case(spec, reset, train, seed):
    """The first seed from 1000·seed on whose network is active and off the kink:
    (net, x, mask seed, a_out, cache, rng). Deterministic; at most 50 tries."""
    for candidate in range(1000 * seed, 1000 * seed + 50):
        rng = np.random.default_rng(candidate)
        layers = parse_paper_notation(spec, IN_SHAPE, conv_weight_scale=4.0, dense_weight_scale=3.0)
        net = Network(layers, IN_SHAPE, neuron=NeuronParams(reset=reset), grad=EXACT_TIMING, dtype="float64",
                      seed=candidate)
        x = rng.uniform(0.0, 2.0, (N_STEPS, BATCH) + IN_SHAPE)
        a_out, cache = net.forward(x, train=train, rng=np.random.default_rng(candidate + 1))
        states = [state for state in cache.states if state is not None]
        rates = [float(state.s.mean()) for state in states]
        du_min = min(float(np.abs(state.du[state.s]).min()) if state.s.any() else 0.0 for state in states)
        if min(rates) >= MIN_RATE and du_min >= DU_MIN:
            return net, x, candidate + 1, a_out, cache, rng
    raise AssertionError(f"no active case off the kink for {spec!r} near seed {1000 * seed}")


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("spec, train", [("4C3(pad 1)-P2-10", False),
                                         ("2C3(pad 1)-4C3(pad 1)-P2-D0.3-10", True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_conv_network_gradient_matches_event_shift_fd(reset, spec, train, seed):
    """Network.backward with the EXACT_TIMING reading, through conv, pool (and
    dropout with a fixed mask, and a conv's input gradient in the second
    spec), against central differences of snnsim.eventshift.event_shift_forward
    of f(W) = ⟨v, a_out⟩ along one random direction U of all weights."""
    net, x, mask_seed, a_out, cache, rng = _active_case(spec, reset, train, seed)
    v = rng.standard_normal(a_out.shape)
    grads = net.backward(v, cache)
    U = random_direction(rng, net.params)
    move = weights_along(net, U)

    def f(eps):
        move(eps)
        try:
            out = event_shift_forward(net, x, cache, train=train, rng=np.random.default_rng(mask_seed))
            return float((v * out).sum())
        finally:
            move(0.0)

    assert f(0.0) == pytest.approx(float((v * a_out).sum()), rel=1e-12)   # the model reproduces the run
    fd, fd_h, fd_h2 = richardson(f, H_FD)                               # Richardson: the h² term cancels
    vjp = directional(grads, U)
    assert vjp == pytest.approx(fd, rel=RTOL_NET), \
        f"<grad, U> = {vjp!r}, FD = {fd!r} (central h: {fd_h!r}, h/2: {fd_h2!r})"
