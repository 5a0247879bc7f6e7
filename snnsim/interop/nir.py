"""NIR export and import: an snnsim network as a graph other simulators and chips read.

NIR (the Neuromorphic Intermediate Representation, PyPI ``nir``) describes a spiking
network as a graph of continuous-time nodes; each reader discretises them with its own
step dt. snnsim's discrete model (docs/model.md) maps onto NIR without change
(docs/nir.md has the table):

- every spiking layer becomes a weight node (``Linear``; ``Conv2d`` with zero bias)
  followed by a ``CubaLIF``. The synaptic filter that snnsim applies to a layer's
  *output* spikes becomes the *next* ``CubaLIF``'s input synapse, since
  W (κ * s) = κ * (W s); the first ``CubaLIF``'s synapse is the input synapse, so the
  image enters raw at every step;
- with dt the file's step: ``tau_syn = dt/θs``, ``tau_mem = dt/θm``, ``r = tau_mem/dt``
  (so that θm r = 1: u[t] = (1-θm) ū[t-1] + x[t]), ``w_in = 1``, ``v_leak = v_reset = 0``,
  ``v_threshold = V_th``; the τ are written as dt/θ computed in floating point, so a
  reader that computes dt/τ gets θ back exactly;
- the authors' pooling, gain · Σ of the PSCs of a window, becomes ``SumPool2d`` on the
  spikes, its gain the next ``CubaLIF``'s ``w_in``;
- a dense layer after a multi-axis layer reads through ``Flatten`` (start_dim 0: NIR
  has no batch axis); a network that starts with a dense layer gets a flat ``Input``;
- dropout is the identity at inference and is left out.

What the graph cannot carry is written into its metadata (key ``snnsim``, a JSON
string): dt, θs and θm (the output layer's PSC filter is no node of the graph), V_th,
the pooling gains, the run's whole config (preset, dataset, T, dropout layers, ...). An
import restores snnsim's network exactly from it. The subtract reset (preset ``paper``)
has no NIR form and is refused.

A graph from elsewhere is imported when it is a chain of those nodes (``Affine`` with a
zero bias and ``AvgPool2d`` are read too), its time constants uniform and shared by all
layers, ``v_leak = v_reset = 0``. Factors that snnsim's layer notation does not carry
(a pooling gain other than 1.1, a layer threshold other than the network's, a
``w_in r dt/τm`` other than 1) are folded into that layer's weights, which is exact up
to rounding. Anything else is refused in one line naming the node.

    python3 -m snnsim nir export runs/<run> net.nir
    python3 -m snnsim nir import net.nir imported.h5
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..commandline import ArgumentParser, command, prog_name
from ..conv import Conv2d
from ..dropout import Dropout
from ..layers import Dense
from ..pool import POOL_GAIN, Pool2d
from ..training.builder import ConfigError

#: The step the file's time constants are written for, in seconds: snnTorch's importer
#: and exporter fix dt = 1e-4 (one snnsim step; Norse takes dt as an argument).
DT = 1e-4
#: Key of the graph metadata entry that holds what the graph itself cannot carry.
META_KEY = "snnsim"
META_FORMAT = "snnsim-nir"
META_VERSION = 1
#: NIR node types the importer reads.
READABLE = ("Input", "Output", "Linear", "Affine (zero bias)", "Conv2d", "Flatten", "SumPool2d",
            "AvgPool2d", "CubaLIF")


class NIRError(ConfigError):
    """A network that NIR cannot carry, or a graph that snnsim cannot represent; the one-line
    message names the layer or node and the reason."""


def _nir():
    """The ``nir`` package, or a one-line error saying how to install it."""
    try:
        import nir
    except ImportError:
        raise NIRError("NIR export and import need the package 'nir': "
                       "pip install 'snnsim[nir]'") from None
    return nir


# =============================================================================
# Export
# =============================================================================
def _uniform(shape, value: float) -> np.ndarray:
    return np.full(tuple(int(n) for n in shape), float(value), dtype=np.float64)


def _cuba_lif(shape, neuron, dt: float, w_in: float):
    """The ``CubaLIF`` of a spiking layer of feature shape ``shape`` (module docstring)."""
    nir = _nir()
    tau_mem = dt / neuron.theta_m
    return nir.CubaLIF(tau_syn=_uniform(shape, dt / neuron.theta_s), tau_mem=_uniform(shape, tau_mem),
                       r=_uniform(shape, tau_mem / dt), v_leak=_uniform(shape, 0.0),
                       v_threshold=_uniform(shape, neuron.v_th), v_reset=_uniform(shape, 0.0),
                       w_in=_uniform(shape, w_in))


def _check_exportable(net) -> None:
    """NIRError naming the first layer NIR cannot carry."""
    for i, layer in enumerate(net.layers):
        if layer.spiking and net.neuron_of(layer).reset != "zero":
            raise NIRError(f"layer {i} ({type(layer).__name__} {layer.describe()}): the subtract "
                           "reset (preset 'paper') cannot be written: NIR's CubaLIF sets the "
                           "membrane to v_reset after a spike and has no subtract reset")
        if not isinstance(layer, (Dense, Conv2d, Pool2d, Dropout)):
            raise NIRError(f"layer {i} ({type(layer).__name__}): no NIR counterpart")
    last = max((i for i, layer in enumerate(net.layers) if layer.spiking), default=-1)
    for i, layer in enumerate(net.layers[last + 1:], start=last + 1):
        if isinstance(layer, Pool2d):
            raise NIRError(f"layer {i} (pooling {layer.describe()}): pooling after the last "
                           "spiking layer acts on the output PSC, which the graph does not carry")


def network_to_nir(net, *, dt: float = DT, config: dict | None = None, source: str = ""):
    """The NIR graph of ``net`` (a :class:`~snnsim.network.Network`), with the metadata an
    import needs to restore it exactly. ``config``: the run's config dict, kept in the
    metadata. Raises :class:`NIRError` for a layer NIR cannot carry."""
    nir = _nir()
    _check_exportable(net)
    if not dt > 0:
        raise NIRError(f"dt must be positive, got {dt}")
    first = next(layer for layer in net.layers if not isinstance(layer, Dropout))
    shape = (math.prod(net.input_shape),) if isinstance(first, Dense) else net.input_shape
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges, prev, gain, gains, dropped = [], "input", 1.0, [], []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Dropout):
            dropped.append(f"layer {i}: dropout p={layer.p}")
            continue
        if isinstance(layer, Pool2d):
            name = f"pool_{i}"
            k = layer.kernel_size
            nodes[name] = nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                        padding=np.array([0, 0]))
            gain *= layer.gain
            gains.append(layer.gain)
        else:
            W = _host(layer.params["W"])
            if isinstance(layer, Dense):
                if len(shape) > 1:                  # NIR has no batch axis: start at 0
                    flat = f"flatten_{i}"
                    nodes[flat] = nir.Flatten(input_type={"input": np.array(shape)},
                                              start_dim=0, end_dim=-1)
                    edges.append((prev, flat))
                    prev = flat
                name = f"dense_{i}"
                nodes[name] = nir.Linear(weight=W)
            else:
                name = f"conv_{i}"
                nodes[name] = nir.Conv2d(input_shape=tuple(shape[1:]), weight=W,
                                         stride=(layer.stride, layer.stride),
                                         padding=(layer.padding, layer.padding), dilation=(1, 1),
                                         groups=1, bias=np.zeros(W.shape[0], dtype=W.dtype))
            edges.append((prev, name))
            prev = name
            name = f"lif_{i}"
            nodes[name] = _cuba_lif(net.shapes[i + 1], net.neuron_of(layer), dt, gain)
            gain = 1.0
        edges.append((prev, name))
        prev = name
        shape = net.shapes[i + 1]
    nodes["output"] = nir.Output(output_type={"output": np.array(net.shapes[-1])})
    edges.append((prev, "output"))
    meta = {"format": META_FORMAT, "version": META_VERSION, "dt": dt,
            "theta_s": net.neuron.theta_s, "theta_m": net.neuron.theta_m, "v_th": net.neuron.v_th,
            "reset": net.neuron.reset, "pool_gains": gains, "input_shape": list(net.input_shape),
            "network": net.describe(), "dropped": dropped, "config": _portable_config(config, net),
            "source": source}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META_KEY: json.dumps(meta)})


def _portable_config(config: dict | None, net) -> dict | None:
    """The run's config without what belongs to this machine only: its run folder, data
    folder, the path of its config file (:func:`_portable_network`) and its array backend
    (NumPy instead; ``train --resume --backend cupy`` chooses again)."""
    if config is None:
        return None
    out = {**config, "out": None, "data_dir": None, "backend": "numpy", "fused": False}
    if "network" in out:
        out["network"] = _portable_network(out["network"], net)
    return out


def _portable_network(network: str, net) -> str:
    """``network`` as another machine reads it: a shipped config by its name, a config file
    elsewhere as the paper's notation when that says the same (every layer at the
    network's threshold, every pooling at the authors' gain); else unchanged."""
    from ..training.builder import CONFIG_DIRS, find_config_file, names_config_file
    if not names_config_file(network):
        return network
    path = Path(str(find_config_file(network))).resolve()
    if any(path.parent == Path(str(d)).resolve() for d in CONFIG_DIRS):
        return path.stem
    same = all(net.neuron_of(layer).v_th == net.neuron.v_th for layer in net.layers if layer.spiking) \
        and all(layer.gain == POOL_GAIN for layer in net.layers if isinstance(layer, Pool2d))
    return paper_notation(net.layers, net.input_shape) if same else network


def _host(a) -> np.ndarray:
    from ..backend import to_numpy
    return to_numpy(a)


def export(source, out, dt: float = DT) -> dict:
    """Write the network of a checkpoint or run folder ``source`` to the NIR file ``out``.
    Returns the graph's metadata (a dict)."""
    nir = _nir()
    from ..analysis.record import network_from_checkpoint, resolve_checkpoint_path
    path = resolve_checkpoint_path(source)
    net, cfg, _ = network_from_checkpoint(path, backend="numpy")
    graph = network_to_nir(net, dt=dt, config=cfg.to_dict(), source=str(path))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(out, graph)
    return json.loads(graph.metadata[META_KEY])


# =============================================================================
# Import
# =============================================================================
@dataclass
class Imported:
    """What a graph says, in snnsim's terms: ``layers`` (fresh :class:`~snnsim.layers.Layer`
    objects), ``weights`` (per spiking layer, its W against that layer's own threshold
    ``layer_v_th``; its CubaLIF is ``lif_names``), the shared ``theta_s``, ``theta_m``, the
    network's ``v_th``, the graph's ``input_shape``, its snnsim ``meta`` (None for a graph
    from elsewhere) and ``notes`` (what was folded or assumed)."""

    layers: list
    weights: list
    layer_v_th: list
    lif_names: list
    theta_s: float
    theta_m: float
    v_th: float
    input_shape: tuple
    meta: dict | None
    notes: list = field(default_factory=list)

    def canonical_weights(self) -> list:
        """The weights for one threshold ``v_th`` in every layer: a layer whose own threshold
        differs gets W · v_th / V_th,layer (the same spikes up to rounding; noted)."""
        out = []
        for W, v, name in zip(self.weights, self.layer_v_th, self.lif_names):
            if v != self.v_th:
                W = W * (self.v_th / v)
                note = (f"node {name!r}: threshold {v:g} folded into the weights as "
                        f"{self.v_th / v:g} x (the network's V_th is {self.v_th:g})")
                if note not in self.notes:
                    self.notes.append(note)
            out.append(W)
        return out

    def spec(self) -> str:
        """The layers in the paper's notation (:func:`snnsim.training.builder.parse_paper_notation`)."""
        return paper_notation(self.layers, self.input_shape)


def paper_notation(layers, input_shape) -> str:
    """``layers`` in the paper's notation, e.g. ``784-400-10`` or ``32C5p2-P2-D0.2-1024-10``
    (the input size first when the first layer is dense). Per-layer thresholds, pooling
    gains and initial weight scales are not written."""
    tokens = []
    first = next((layer for layer in layers if not isinstance(layer, Dropout)), None)
    if isinstance(first, Dense):
        tokens.append(str(math.prod(input_shape)))
    for layer in layers:
        if isinstance(layer, Dense):
            tokens.append(str(layer.n_out))
        elif isinstance(layer, Conv2d):
            tokens.append(f"{layer.out_channels}C{layer.kernel_size}"
                          + (f"p{layer.padding}" if layer.padding else "")
                          + (f"s{layer.stride}" if layer.stride != 1 else ""))
        elif isinstance(layer, Pool2d):
            tokens.append(f"P{layer.kernel_size}")
        else:
            tokens.append(f"D{layer.p:g}")
    return "-".join(tokens)


def read_meta(graph) -> dict | None:
    """The snnsim metadata of a graph, or None (a graph from elsewhere)."""
    raw = (graph.metadata or {}).get(META_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, AttributeError) as exc:
        raise NIRError(f"graph metadata {META_KEY!r} is not snnsim's JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise NIRError(f"graph metadata {META_KEY!r} is not of format {META_FORMAT!r}")
    if meta.get("version", 0) > META_VERSION:
        raise NIRError(f"graph metadata version {meta.get('version')} is newer than this "
                       f"snnsim reads ({META_VERSION})")
    return meta


def _chain(graph) -> list[str]:
    """The node names from the one Input to the one Output, in order; NIRError naming the
    node for anything but a chain (cycles, branches, joins, nodes off the path)."""
    nir = _nir()
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NIRError(f"edge {a!r} -> {b!r}: no node {end!r} in the graph")
    succ, pred = defaultdict(list), defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    indegree = {n: len(pred[n]) for n in nodes}                 # Kahn: what remains is in a cycle
    ready = [n for n in nodes if indegree[n] == 0]
    while ready:
        n = ready.pop()
        for m in succ[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                ready.append(m)
    cyclic = [n for n in nodes if indegree[n] > 0 and _reaches(succ, n, n)]
    if cyclic:
        raise NIRError(f"node {cyclic[0]!r}: a recurrent edge (a cycle through "
                       f"{', '.join(map(repr, cyclic))}); snnsim's networks are feed-forward")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"graph: {len(inputs)} Input nodes; snnsim reads a graph with one input")
    order, cur = [inputs[0]], inputs[0]
    while succ[cur]:
        if len(succ[cur]) > 1:
            raise NIRError(f"node {cur!r}: {len(succ[cur])} outgoing edges (a branch); snnsim "
                           "runs a chain of layers")
        cur = succ[cur][0]
        if len(pred[cur]) > 1:
            raise NIRError(f"node {cur!r}: {len(pred[cur])} incoming edges (a join); snnsim "
                           "runs a chain of layers")
        order.append(cur)
    if not isinstance(nodes[cur], nir.Output):
        raise NIRError(f"node {cur!r}: the chain from the input ends here, not in an Output node")
    off = [n for n in nodes if n not in order]
    if off:
        raise NIRError(f"node {off[0]!r}: not on the path from the input to the output")
    return order


def _reaches(succ, start, goal) -> bool:
    """Whether an edge path leads from ``start`` to ``goal`` (at least one edge)."""
    seen, todo = set(), list(succ[start])
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(succ[n])
    return False


def _one_value(name: str, node, attr: str) -> float:
    """The value of a per-neuron parameter that must be the same for every neuron."""
    a = np.asarray(getattr(node, attr), dtype=np.float64)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise NIRError(f"node {name!r}: {attr} differs between neurons (per-neuron values); "
                       "snnsim's neurons of a layer share one value")
    return float(a.flat[0])


@dataclass
class _Lif:
    """One CubaLIF, read: its rates and the factor ``w_in · r · θm`` on its input."""
    theta_s: float
    theta_m: float
    v_th: float
    factor: float
    v_th_layer: float = float("nan")     # its threshold against snnsim's u (after folding)


def _read_lif(name: str, node, dt: float) -> _Lif:
    vals = {a: _one_value(name, node, a) for a in ("tau_syn", "tau_mem", "r", "v_leak",
                                                  "v_threshold", "v_reset", "w_in")}
    for attr in ("v_leak", "v_reset"):
        if vals[attr] != 0.0:
            raise NIRError(f"node {name!r}: {attr} = {vals[attr]:g}; snnsim's membrane leaks "
                           f"towards 0 and resets to 0")
    theta_s, theta_m = dt / vals["tau_syn"], dt / vals["tau_mem"]
    for attr, theta in (("tau_syn", theta_s), ("tau_mem", theta_m)):
        if not 0.0 < theta < 1.0:
            raise NIRError(f"node {name!r}: {attr} = {vals[attr]:g} is not longer than one step "
                           f"dt = {dt:g} (dt/tau = {theta:g}); pass the graph's dt with --dt")
    if not vals["v_threshold"] > 0:
        raise NIRError(f"node {name!r}: v_threshold {vals['v_threshold']:g} is not positive")
    factor = vals["w_in"] * _snap(vals["r"] * theta_m, 1.0)     # r = tau_mem/dt: θm r = 1
    if not factor > 0:
        raise NIRError(f"node {name!r}: w_in·r·dt/tau_mem = {factor:g} is not positive")
    return _Lif(theta_s, theta_m, vals["v_threshold"], factor)


#: Relative distance below which a product of the file's values counts as the number it
#: stands for: r·dt/τ_mem with r = τ_mem/dt is 1 only up to rounding (τm = 13: 1 - 1 ulp).
ROUNDING = 8 * np.finfo(np.float64).eps


def _snap(value: float, target: float) -> float:
    """``target`` when ``value`` is it up to :data:`ROUNDING`, else ``value``."""
    return target if abs(value - target) <= ROUNDING * abs(target) else value


def _weight_layer(name: str, node, shape: tuple):
    """(layer, W, output shape) of a Linear, Affine or Conv2d node reading ``shape``."""
    nir = _nir()
    W = np.asarray(node.weight)
    if isinstance(node, (nir.Affine, nir.Conv2d)) and np.any(np.asarray(node.bias) != 0):
        raise NIRError(f"node {name!r}: a nonzero bias; snnsim's layers have none")
    if isinstance(node, (nir.Linear, nir.Affine)):
        if W.ndim != 2 or W.shape[1] != math.prod(shape):
            raise NIRError(f"node {name!r}: weight {W.shape} does not read {math.prod(shape)} inputs")
        layer = Dense(W.shape[0])
        return layer, W, (W.shape[0],)
    if len(shape) != 3:
        raise NIRError(f"node {name!r}: a Conv2d needs (C, H, W) input, got {shape}")
    pairs = {a: np.broadcast_to(np.asarray(getattr(node, a)), (2,)) for a in ("stride", "dilation")}
    if isinstance(node.padding, str):
        raise NIRError(f"node {name!r}: padding {node.padding!r}; snnsim reads numeric padding")
    pairs["padding"] = np.broadcast_to(np.asarray(node.padding), (2,))
    for attr, v in pairs.items():
        if v[0] != v[1]:
            raise NIRError(f"node {name!r}: {attr} {tuple(v)} differs between the axes")
    if int(pairs["dilation"][0]) != 1 or int(node.groups) != 1:
        raise NIRError(f"node {name!r}: dilation or groups other than 1")
    if W.ndim != 4 or W.shape[2] != W.shape[3] or W.shape[1] != shape[0]:
        raise NIRError(f"node {name!r}: weight {W.shape} is not a square kernel reading {shape[0]} "
                       "channels")
    layer = Conv2d(W.shape[0], W.shape[2], stride=int(pairs["stride"][0]),
                   padding=int(pairs["padding"][0]))
    try:
        return layer, W, tuple(layer.output_shape(shape))
    except ValueError as exc:
        raise NIRError(f"node {name!r}: {exc}") from None


def _pool_layer(name: str, node, shape: tuple):
    """(Pool2d with gain 1 for a sum, 1/k² for an average, output shape)."""
    nir = _nir()
    k = np.broadcast_to(np.asarray(node.kernel_size), (2,))
    s = np.broadcast_to(np.asarray(node.stride), (2,))
    p = np.broadcast_to(np.asarray(node.padding), (2,))
    if k[0] != k[1] or s[0] != k[0] or s[1] != k[1] or np.any(p != 0):
        raise NIRError(f"node {name!r}: pooling {tuple(k)} stride {tuple(s)} padding {tuple(p)}; "
                       "snnsim pools square windows with stride = kernel and no padding")
    if len(shape) != 3:
        raise NIRError(f"node {name!r}: pooling needs (C, H, W) input, got {shape}")
    k = int(k[0])
    gain = 1.0 / (k * k) if isinstance(node, nir.AvgPool2d) else 1.0
    layer = Pool2d(k, gain=gain)
    try:
        return layer, tuple(layer.output_shape(shape))
    except ValueError as exc:
        raise NIRError(f"node {name!r}: {exc}") from None


def _fold_input_factor(name: str, lif: _Lif, W, pools: list, notes: list):
    """``(W, threshold against snnsim's u)`` of a layer whose CubaLIF ``lif`` has the input
    factor w_in·r·θm: after a pooling, the factor is the pooling's gain (snnsim's 1.1; any
    other gain goes into W, noted); else it divides the threshold."""
    W = np.array(W, copy=True)
    if len(pools) > 1:
        raise NIRError(f"node {name!r}: two poolings in a row before it; snnsim reads one "
                       "between spiking layers")
    if not pools:
        return W, lif.v_th / lif.factor
    gain = _snap(pools[0].gain * lif.factor, POOL_GAIN)
    if gain != POOL_GAIN:
        W = W * (gain / POOL_GAIN)
        notes.append(f"node {name!r}: pooling gain {gain:g} folded into the weights as "
                     f"{gain / POOL_GAIN:g} x (snnsim's pooling gain is {POOL_GAIN})")
    pools[0].gain = POOL_GAIN
    return W, lif.v_th


def read_graph(graph, dt: float | None = None) -> Imported:
    """Read a NIR graph as snnsim layers (see the module docstring for what is read and what
    is refused). ``dt``: the step the time constants are written for (default: the
    metadata's, else :data:`DT`)."""
    nir = _nir()
    meta = read_meta(graph)
    dt = float(dt if dt is not None else (meta or {}).get("dt", DT))
    if not dt > 0:
        raise NIRError(f"dt must be positive, got {dt}")
    order = _chain(graph)
    nodes = graph.nodes
    shape = tuple(int(n) for n in np.asarray(nodes[order[0]].input_type["input"]).ravel())
    input_shape = shape
    layers, weights, lifs, notes = [], [], [], []
    pending = None                    # the weight layer waiting for its CubaLIF
    pools = []                        # pooling layers since the last CubaLIF
    for name in order[1:-1]:
        node = nodes[name]
        if isinstance(node, nir.CubaLIF):
            if pending is None:
                raise NIRError(f"node {name!r}: a CubaLIF that no Linear or Conv2d feeds; snnsim "
                               "runs neurons after weights only")
            lif = _read_lif(name, node, dt)
            if tuple(np.shape(node.v_threshold)) not in (shape, (math.prod(shape),)):
                raise NIRError(f"node {name!r}: {np.shape(node.v_threshold)} neurons after a layer "
                               f"of output {shape}")
            layer, W, prev_pools = pending
            W, lif.v_th_layer = _fold_input_factor(name, lif, W, prev_pools, notes)
            lifs.append((name, lif))
            layers.append(layer)
            weights.append(W)
            pending = None
        elif isinstance(node, (nir.Linear, nir.Affine, nir.Conv2d)):
            if pending is not None:
                raise NIRError(f"node {name!r}: two weight nodes without a CubaLIF between them")
            layer, W, shape = _weight_layer(name, node, shape)
            pending = (layer, W, pools)
            for p in pools:
                layers.append(p)
            pools = []
        elif isinstance(node, nir.Flatten):
            nxt = nodes[order[order.index(name) + 1]]
            if not isinstance(nxt, (nir.Linear, nir.Affine)):
                raise NIRError(f"node {name!r}: a Flatten not followed by a Linear; snnsim "
                               "flattens only into a dense layer")
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            if pending is not None:
                raise NIRError(f"node {name!r}: pooling between a weight node and its CubaLIF; "
                               "snnsim pools the spikes of a layer (or the input)")
            layer, shape = _pool_layer(name, node, shape)
            pools.append(layer)
        else:
            raise NIRError(f"node {name!r}: NIR type {type(node).__name__} has no snnsim "
                           f"counterpart (snnsim reads {', '.join(READABLE)})")
    last = order[-2]
    if pending is not None or pools or not isinstance(nodes[last], nir.CubaLIF):
        raise NIRError(f"node {last!r}: the graph must end in a CubaLIF before its Output")
    first = lifs[0][1]
    for name, lif in lifs:
        for attr in ("theta_s", "theta_m"):
            if getattr(lif, attr) != getattr(first, attr):
                raise NIRError(f"node {name!r}: {'tau_syn' if attr == 'theta_s' else 'tau_mem'} "
                               f"differs from node {lifs[0][0]!r}'s; snnsim's layers share τs and τm")
    v_th = float((meta or {}).get("v_th", first.v_th_layer))
    layer_v_th = [lif.v_th_layer for _, lif in lifs]
    return Imported(layers, weights, layer_v_th, [n for n, _ in lifs], first.theta_s, first.theta_m,
                    v_th, input_shape, meta, notes)


def network_from_nir(graph_or_path, *, dt: float | None = None, dtype: str = "float64",
                     backend: str = "numpy"):
    """An snnsim :class:`~snnsim.network.Network` running a NIR graph (a path or a
    ``nir.NIRGraph``), with the graph's input shape; the weights as the graph stores them
    (cast to ``dtype``). Returns ``(net, imported)``."""
    from ..network import Network
    from ..params import NeuronParams
    graph = _read_file(graph_or_path) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    imp = read_graph(graph, dt)
    tau_m, tau_s = 1.0 / imp.theta_m, 1.0 / imp.theta_s
    saved = (imp.meta or {}).get("config") or {}
    if {"tau_m", "tau_s"} <= set(saved):            # the exported values, not 1/(dt/(dt/θ))
        theta_m, theta_s = 1.0 / float(saved["tau_m"]), 1.0 / float(saved["tau_s"])
        if _snap(imp.theta_m, theta_m) == theta_m and _snap(imp.theta_s, theta_s) == theta_s:
            tau_m, tau_s = float(saved["tau_m"]), float(saved["tau_s"])
    neuron = NeuronParams(tau_m=tau_m, tau_s=tau_s, v_th=imp.v_th)
    for layer, v in zip([layer for layer in imp.layers if layer.spiking], imp.layer_v_th):
        if v != imp.v_th:                          # a layer's own threshold, as the authors' YAML
            layer.neuron = dataclasses.replace(neuron, v_th=v)
    net = Network(imp.layers, imp.input_shape, neuron=neuron, dtype=dtype, backend=backend)
    _set_spiking_weights(net, imp.weights)
    return net, imp


def _set_spiking_weights(net, weights: list) -> None:
    """Per spiking layer of ``net``, in order, its W (cast to the network's dtype)."""
    spiking = [layer for layer in net.layers if layer.spiking]
    for layer, W in zip(spiking, weights, strict=True):
        layer.params["W"][...] = net.xp.asarray(W, dtype=net.dtype)


def _read_file(path):
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise NIRError(f"{path}: no such NIR file")
    try:
        return nir.read(path, type_check=False)
    except Exception as exc:          # h5py, a node nir cannot build, a missing field
        raise NIRError(f"{path}: not a readable NIR file ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _dataset_for(input_shape: tuple, flat: bool, wanted: str | None) -> str:
    """The snnsim dataset whose samples the graph reads (``wanted``, checked, or the
    first that fits, Fashion-MNIST first)."""
    from ..datasets.registry import DATASETS, get_spec

    def fits(name):
        shape = tuple(get_spec(name).input_shape)
        return shape == input_shape or (flat and math.prod(shape) == math.prod(input_shape))
    if wanted is not None:
        if not fits(wanted):
            raise NIRError(f"--dataset {wanted}: its samples {get_spec(wanted).input_shape} do not "
                           f"fit the graph's input {input_shape}")
        return wanted
    names = sorted(DATASETS, key=lambda n: n != "fashion-mnist")
    for name in names:
        if fits(name):
            return name
    raise NIRError(f"graph input {input_shape} fits no snnsim dataset "
                   f"({', '.join(f'{n} {get_spec(n).input_shape}' for n in DATASETS)}); "
                   "snnsim.interop.nir.network_from_nir runs it without one")


def config_for(imp: Imported, dataset: str | None = None, n_steps: int | None = None):
    """``(cfg, weights)``: the :class:`~snnsim.training.config.TrainConfig` of an imported
    graph and the weights of its spiking layers. The exported run's own config when the
    snnsim metadata agrees with the graph (the weights as stored: exact); else one built
    from the graph (layers in the paper's notation, τm = 1/θm, τs = 1/θs, one V_th, preset
    ``authors``; :meth:`Imported.canonical_weights`)."""
    from ..training.config import TrainConfig
    from ..training.train import make_network
    saved = (imp.meta or {}).get("config")
    if saved:
        cfg = TrainConfig.from_dict(saved, source="nir metadata")
        changes = {k: v for k, v in (("dataset", dataset), ("n_steps", n_steps)) if v is not None}
        cfg = cfg.replace(source="nir import", out=None, **changes)
        try:
            net = make_network(cfg.replace(source="nir import", backend="numpy"))
        except (ConfigError, ValueError, OSError):
            net = None
        if net is not None and _agrees(net, imp):
            return cfg, imp.weights
        imp.notes.append("the snnsim metadata does not match the graph's layers; the graph wins")
    flat = isinstance(imp.layers[0], Dense)
    name = _dataset_for(imp.input_shape, flat, dataset)
    cfg = TrainConfig().replace(source="nir import", network=imp.spec(), dataset=name,
                                n_steps=n_steps or TrainConfig().n_steps,
                                tau_m=1.0 / imp.theta_m, tau_s=1.0 / imp.theta_s, v_th=imp.v_th)
    return cfg, imp.canonical_weights()


def _agrees(net, imp: Imported) -> bool:
    """True when ``net`` (from saved metadata) has the graph's spiking layers, rates and
    threshold."""
    spiking = [layer for layer in net.layers if layer.spiking]
    same_layers = len(spiking) == len(imp.weights) and all(
        tuple(layer.params["W"].shape) == W.shape for layer, W in zip(spiking, imp.weights))
    return (same_layers and _snap(imp.theta_s, net.neuron.theta_s) == net.neuron.theta_s
            and _snap(imp.theta_m, net.neuron.theta_m) == net.neuron.theta_m
            and all(net.neuron_of(layer).v_th == v for layer, v in zip(spiking, imp.layer_v_th))
            and all(layer.gain == POOL_GAIN for layer in net.layers if isinstance(layer, Pool2d)))


def import_checkpoint(source, out, *, dt: float | None = None, dataset: str | None = None,
                      n_steps: int | None = None, dtype: str | None = None):
    """Write the network of the NIR file ``source`` as an snnsim checkpoint ``out`` (epoch 0,
    a fresh optimizer: ``train --resume out`` fine-tunes it; ``record`` and ``plots`` read
    it). Returns ``(path, cfg, imported)``."""
    from ..training.checkpoint import save_checkpoint
    from ..training.optim import AdamW
    from ..training.train import make_network
    imp = read_graph(_read_file(source), dt)
    cfg, weights = config_for(imp, dataset, n_steps)
    if dtype is not None:
        cfg = cfg.replace(source="nir import", dtype=dtype)
    net = make_network(cfg.replace(source="nir import", backend="numpy"))
    _set_spiking_weights(net, weights)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    path = save_checkpoint(out, weights=net.params, optimizer=opt.state_dict(),
                           rng_state=np.random.default_rng([cfg.seed, 1]).bit_generator.state,
                           epoch=0, config=cfg.to_dict(), metrics=[],
                           layer_names=[layer.describe() for layer in net.layers],
                           network=net.describe(), extra_attrs={"imported_from": str(source)})
    return path, cfg, imp


# =============================================================================
# Command line
# =============================================================================
DESCRIPTION = """\
Export a trained network to NIR, the Neuromorphic Intermediate Representation that
snnTorch, Norse, Lava-dl, Rockpool, Sinabs, SpiNNaker2 and others read, or import a NIR
graph as an snnsim checkpoint (docs/nir.md).

  export RUN_OR_CHECKPOINT OUT.nir [--dt DT]
        the network of a run folder (its best.h5) or a checkpoint; dropout is left out
        (it is the identity at inference); the paper preset's subtract reset has no NIR
        form and is refused
  import IN.nir OUT.h5 [--dt DT] [--dataset NAME] [--n-steps T] [--dtype float32|float64]
        a checkpoint of epoch 0 that train --resume fine-tunes and record and plots read;
        a graph snnsim cannot represent (per-neuron time constants, v_leak or v_reset
        other than 0, recurrent edges, unknown nodes) is refused, naming the node

The file's time constants are written for one step of dt = 1e-4 s (snnTorch's fixed
step); read them with that dt elsewhere (Norse: from_nir(graph, dt=1e-4)).
"snnsim nir export --help" and "snnsim nir import --help" give the options in full.
"""


def make_parser() -> ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.interop.nir"), description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="{export,import}")
    sub.required = True
    e = sub.add_parser("export", help="write a trained network as a NIR graph",
                       description="Write the network of a run folder or checkpoint as a NIR graph.")
    e.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run folder or checkpoint (.h5)")
    e.add_argument("out", metavar="OUT.nir", help="the NIR file to write")
    e.add_argument("--dt", type=float, default=DT,
                   help=f"the step (seconds) the time constants are written for (default {DT:g}, "
                        "what snnTorch assumes)")
    i = sub.add_parser("import", help="read a NIR graph into an snnsim checkpoint",
                       description="Read a NIR graph into an snnsim checkpoint (epoch 0).")
    i.add_argument("source", metavar="IN.nir", help="the NIR file to read")
    i.add_argument("out", metavar="OUT.h5", help="the checkpoint to write")
    i.add_argument("--dt", type=float, default=None,
                   help=f"the step the graph's time constants are written for (default: the "
                        f"one snnsim recorded in the file, else {DT:g})")
    i.add_argument("--dataset", default=None,
                   help="the dataset the network reads (default: the recorded one, else the "
                        "first whose samples fit the graph's input, Fashion-MNIST first)")
    i.add_argument("--n-steps", type=int, default=None, metavar="T",
                   help="time steps per sample (NIR has none; default: the recorded T, else 5)")
    i.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="the checkpoint's dtype (default: the recorded one, else float32)")
    return p


@command("nir")
def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.action == "export":
        meta = export(args.source, args.out, dt=args.dt)
        dropped = f"; left out (identity at inference): {', '.join(meta['dropped'])}" \
            if meta["dropped"] else ""
        print(f"exported {meta['network']} from {meta['source']} -> {args.out} "
              f"(dt {meta['dt']:g} s, tau_syn {meta['dt'] / meta['theta_s']:g} s, tau_mem "
              f"{meta['dt'] / meta['theta_m']:g} s{dropped})")
        return 0
    if args.n_steps is not None and args.n_steps < 1:
        raise NIRError(f"--n-steps must be >= 1, got {args.n_steps}")
    path, cfg, imp = import_checkpoint(args.source, args.out, dt=args.dt, dataset=args.dataset,
                                       n_steps=args.n_steps, dtype=args.dtype)
    origin = "snnsim's own export" if imp.meta else "a graph from elsewhere"
    print(f"imported {args.source} ({origin}) as network {cfg.network!r}, dataset {cfg.dataset}, "
          f"T = {cfg.n_steps}, tau_m {cfg.tau_m:g}, tau_s {cfg.tau_s:g}, V_th {cfg.v_th:g} -> {path}")
    for note in imp.notes:
        print(f"  note: {note}")
    return 0


__all__ = ["DT", "Imported", "NIRError", "config_for", "export", "import_checkpoint", "main",
           "network_from_nir", "network_to_nir", "paper_notation", "read_graph", "read_meta"]
