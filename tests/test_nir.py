"""NIR export and import (snnsim/interop/nir.py), with snnTorch and Norse as oracles.

The exported MLP and CNN run through snnTorch's and Norse's own NIR importers on the same
inputs as snnsim's forward, and their spikes are compared layer by layer:

- float64: 0 differing spikes, post-reset membranes within MEMBRANE_TOL_F64. Both stock
  importers build float32 modules; the smallest importer-side change that keeps float64
  is made in the test (:func:`float64_snntorch`, :func:`float64_norse`), nothing else;
- float32, stock importers: every differing spike is traced to a *root flip* (a spike
  whose inputs and own history agree up to that step) where snnsim's float32 membrane
  lies within ROOT_MARGIN_F32 of the threshold; the others descend from a root flip.

Round trips: snnsim -> NIR -> snnsim keeps weights and spikes bit for bit; an snnTorch
``Synaptic`` network -> snnTorch's ``export_to_nir`` -> snnsim gives snnTorch's spikes.
Graphs and presets that cannot be carried are refused in one line naming the node.

The peer tests need the ``nir`` extra (nir, snntorch, norse; torch CPU), which CI installs;
they skip with that reason elsewhere.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

nir = pytest.importorskip("nir", reason="the nir extra is not installed (pip install 'snnsim[nir]')")

from snnsim.conv import Conv2d  # noqa: E402
from snnsim.dropout import Dropout  # noqa: E402
from snnsim.interop import nir as snir  # noqa: E402
from snnsim.layers import Dense  # noqa: E402
from snnsim.network import Network, repeat_static  # noqa: E402
from snnsim.params import NeuronParams  # noqa: E402
from snnsim.pool import Pool2d  # noqa: E402

T = 5
DT = snir.DT
#: float64: largest difference of a post-reset membrane, snnsim against a peer, in units of
#: V_th (the three compute the same sums in different orders: a few ulps of O(1) values).
MEMBRANE_TOL_F64 = 1e-12
#: float32: a root flip must lie this close to the threshold in snnsim's float32 membrane
#: (float32's ulp at 1 is 1.2e-7; a membrane sums a few hundred float32 products).
ROOT_MARGIN_F32 = 1e-5


# --- the networks and their inputs -----------------------------------------------------
def images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` Fashion-MNIST test images (1, 28, 28) in [0, 1] when the data is on this
    machine, else uniform noise of the same shape."""
    try:
        from snnsim.datasets import load_idx_dataset
        x = load_idx_dataset("fashion-mnist", "test")[0][:n]
        return np.asarray(x, np.float64).reshape(n, 1, 28, 28) / (255.0 if x.max() > 1 else 1.0)
    except Exception:  # no data here: the comparison holds for any input
        return np.random.default_rng(seed).random((n, 1, 28, 28))


def mlp(dtype="float64", seed=1, reset="zero") -> Network:
    """784-100-10, weights at 2.5x Kaiming: 18 % and 13 % of the neuron-steps fire on
    Fashion-MNIST images, the rates of a trained network."""
    return Network([Dense(100, weight_scale=2.5), Dense(10, weight_scale=2.5)], (784,),
                   neuron=NeuronParams(reset=reset), dtype=dtype, seed=seed)


def cnn(dtype="float64", seed=2) -> Network:
    """6C5-P2-8C5p2-P2-30-10: every layer type of the CNN configs that NIR carries; layers fire
    7, 10, 21 and 17 % of their neuron-steps on Fashion-MNIST images."""
    return Network([Conv2d(6, 5, weight_scale=2.5), Pool2d(2), Conv2d(8, 5, padding=2, weight_scale=3.5),
                    Pool2d(2), Dense(30, weight_scale=4.0), Dense(10, weight_scale=4.0)],
                   (1, 28, 28), dtype=dtype, seed=seed)


def snnsim_run(net: Network, x: np.ndarray):
    """Per spiking layer: spikes (T, B, ...) and post-reset membranes ū, and pre-reset u."""
    x = x.reshape((x.shape[0],) + net.input_shape).astype(net.dtype)
    _, cache = net.forward(repeat_static(x, T))
    states = [s for s in cache.states if s is not None]
    return ([np.asarray(s.s) for s in states], [np.where(s.s, 0.0, s.u) for s in states],
            [np.asarray(s.u) for s in states])


# --- the peers ---------------------------------------------------------------------------
torch = None


def peers():
    """torch, snntorch, norse, or skip."""
    global torch
    torch = pytest.importorskip("torch", reason="the nir extra is not installed (torch)")
    pytest.importorskip("snntorch", reason="the nir extra is not installed (snntorch)")
    pytest.importorskip("norse", reason="the nir extra is not installed (norse)")
    return torch


@contextlib.contextmanager
def float64_snntorch():
    """snnTorch's importer in float64. Its modules take the default dtype
    (``torch.Tensor(weight)``, ``torch.as_tensor(alpha)``) and nirtorch casts the module to
    ``nir_to_torch``'s ``dtype`` argument (float32 by default): both set to float64. Its
    spike function returns float32 (``(x > 0).float()``): :func:`float64_spikes` after
    the import."""
    import nirtorch
    saved_default, saved = torch.get_default_dtype(), nirtorch.nir_to_torch
    torch.set_default_dtype(torch.float64)
    nirtorch.nir_to_torch = functools.partial(saved, dtype=torch.float64)
    try:
        yield
    finally:
        nirtorch.nir_to_torch = saved
        torch.set_default_dtype(saved_default)


def float64_spikes(module) -> None:
    """snnTorch's neurons fire through the same step, strict ``x > 0``, in the membrane's
    dtype (their surrogate's forward is ``(x > 0).float()``, float32 whatever the membrane)."""
    import snntorch
    for m in module.modules():
        if isinstance(m, snntorch.SpikingNeuron):
            m.spike_grad = lambda x: (x > 0).to(x.dtype)


@contextlib.contextmanager
def float64_norse():
    """Norse's importer in float64: its one tensor helper ``_to_tensor`` calls ``.float()``;
    replaced by one that keeps float64 (and the default dtype set for its new modules)."""
    from norse.torch.utils import import_nir
    saved_default, saved = torch.get_default_dtype(), import_nir._to_tensor
    torch.set_default_dtype(torch.float64)
    import_nir._to_tensor = lambda t: t if isinstance(t, torch.Tensor) else torch.as_tensor(
        t, dtype=torch.float64)
    try:
        yield
    finally:
        import_nir._to_tensor = saved
        torch.set_default_dtype(saved_default)


def quiet():
    """The importers print and log a warning per layer (snnTorch's threshold scaling,
    Norse's deprecation of nirtorch.load): silenced."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    stack.callback(logging.disable, logging.NOTSET)
    return stack


def lif_names(graph) -> list[str]:
    return [n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)]


def run_snntorch(graph, x: np.ndarray, batched: bool, dtype):
    """snnTorch's ``import_from_nir``; per CubaLIF spikes (T, B, ...) and post-reset
    membranes in snnsim's units (snnTorch keeps u / (w_in θs))."""
    import snntorch
    import snntorch.utils
    from snntorch.import_nir import import_from_nir
    with quiet():
        module = import_from_nir(graph)
    if dtype == torch.float64:
        float64_spikes(module)
    mods = dict(module.named_modules())
    names = lif_names(graph)
    scale = [float(graph.nodes[n].w_in.flat[0] * DT / graph.nodes[n].tau_syn.flat[0]) for n in names]
    record = {}
    for n in names:
        mods[n].register_forward_hook(functools.partial(_snntorch_hook, record, n))
    samples = [x] if batched else [x[b] for b in range(x.shape[0])]
    spikes, mems = [[] for _ in names], [[] for _ in names]
    for sample in samples:
        snntorch.utils.reset(module)
        xt = torch.as_tensor(sample, dtype=dtype)
        steps = {n: [] for n in names}
        for _ in range(T):
            record.clear()
            with torch.no_grad():
                module(xt)
            for n in names:
                steps[n].append(record[n])
        for i, n in enumerate(names):
            spikes[i].append(np.stack([z for z, _ in steps[n]]))
            mems[i].append(np.stack([v for _, v in steps[n]]) * scale[i])
    return _gather(spikes, batched), _gather(mems, batched)


def _snntorch_hook(record, name, module, inputs, output):
    spk = output[0] if isinstance(output, tuple) else output
    record[name] = (spk.numpy().copy(), module.mem.numpy().copy())


def run_norse(graph, x: np.ndarray, batched: bool, dtype):
    """Norse's ``from_nir`` with dt = DT; per CubaLIF spikes and post-reset membranes."""
    import norse.torch as norse_torch
    from norse.torch.utils.import_nir import CubaLIF
    with quiet():
        module = norse_torch.from_nir(graph, dt=DT)
    names = lif_names(graph)
    mods = dict(module.named_modules())
    record = {}
    for n in names:
        assert isinstance(mods[n], CubaLIF)
        mods[n].register_forward_hook(functools.partial(_norse_hook, record, n))
    samples = [x] if batched else [x[b] for b in range(x.shape[0])]
    spikes, mems = [[] for _ in names], [[] for _ in names]
    for sample in samples:
        xt = torch.as_tensor(sample, dtype=dtype)
        state = None
        steps = {n: [] for n in names}
        for _ in range(T):
            record.clear()
            with torch.no_grad(), quiet():
                _, state = module(xt, state)
            for n in names:
                steps[n].append(record[n])
        for i, n in enumerate(names):
            spikes[i].append(np.stack([z for z, _ in steps[n]]))
            mems[i].append(np.stack([v for _, v in steps[n]]))
    return _gather(spikes, batched), _gather(mems, batched)


def _norse_hook(record, name, module, inputs, output):
    z, (_, lif_state) = output
    record[name] = (z.numpy().copy(), lif_state.v.numpy().copy())


def _gather(per_sample, batched):
    """Per layer (T, B, ...) from one batched run or from one run per sample."""
    if batched:
        return [runs[0] for runs in per_sample]
    return [np.stack(runs, axis=1) for runs in per_sample]


def export_graph(net, tmp_path, name="net"):
    path = tmp_path / f"{name}.nir"
    nir.write(path, snir.network_to_nir(net))
    return nir.read(path)


def report(capsys, line: str) -> None:
    """Print a comparison's counts also when pytest captures output (CI runs ``-q``): the
    spike counts of the peers show in the log of every run."""
    with capsys.disabled():
        print(f"\n  [nir] {line}", end="")


# --- float64: spike for spike -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_peers_float64_spike_for_spike(kind, tmp_path, capsys):
    peers()
    net = mlp() if kind == "mlp" else cnn()
    x = images(16 if kind == "mlp" else 4)
    x_in = x.reshape(x.shape[0], -1) if kind == "mlp" else x
    s_ref, m_ref, _ = snnsim_run(net, x)
    graph = export_graph(net, tmp_path)
    batched = kind == "mlp"          # the CNN's Flatten (start_dim 0) reads one sample at a time
    with float64_snntorch():
        s_t, m_t = run_snntorch(graph, x_in, batched, torch.float64)
    with float64_norse():
        s_n, m_n = run_norse(graph, x_in, batched, torch.float64)
    for peer, spikes, mems in (("snnTorch", s_t, m_t), ("Norse", s_n, m_n)):
        for layer, (ref, got, mref, mgot) in enumerate(zip(s_ref, spikes, m_ref, mems)):
            ref_count, got_count = int(ref.sum()), int(got.sum())
            differ = int(np.count_nonzero(ref != got.astype(bool)))
            report(capsys, f"{kind} float64 layer {layer}: snnsim {ref_count} spikes, {peer} {got_count}, "
                  f"{differ} differ of {ref.size}; max |ū diff| {np.abs(mref - mgot).max():.1e}")
            assert ref_count > 0.02 * ref.size or layer == len(s_ref) - 1, "too quiet to compare"
            assert differ == 0
            np.testing.assert_allclose(mgot, mref, rtol=0, atol=MEMBRANE_TOL_F64)


# --- float32: stock importers, flips only at the threshold ----------------------------------
def root_flips(ref, got, u, v_th):
    """Classify the spikes where ``got`` differs from ``ref`` (per layer (T, B, ...)):
    a root flip has equal spikes in the layer below up to its step (same sample) and an
    equal own history before it; it must lie within ROOT_MARGIN_F32 of V_th in ``u``.
    Returns (roots, descendants, largest root margin)."""
    roots = descendants = 0
    worst = 0.0
    for layer, (r, g) in enumerate(zip(ref, got)):
        diff = r != g.astype(bool)
        below = None if layer == 0 else (ref[layer - 1] != got[layer - 1].astype(bool))
        for t, b, *idx in zip(*np.nonzero(diff)):
            idx = tuple(idx)
            inputs_agree = below is None or not below[:t + 1, b].any()
            own_agrees = not diff[:t, b][(slice(None),) + idx].any()
            if inputs_agree and own_agrees:
                margin = abs(float(u[layer][(t, b) + idx]) - v_th)
                worst = max(worst, margin)
                roots += 1
                assert margin < ROOT_MARGIN_F32, (f"layer {layer} step {t} sample {b} neuron {idx}: "
                                                  f"a root flip {margin:.2e} from V_th")
            else:
                descendants += 1
    return roots, descendants, worst


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_peers_float32_stock_flips_only_at_threshold(kind, tmp_path, capsys):
    peers()
    net32 = mlp("float32") if kind == "mlp" else cnn("float32")
    x = images(16 if kind == "mlp" else 4)
    x_in = (x.reshape(x.shape[0], -1) if kind == "mlp" else x).astype(np.float32)
    s_ref, _, u_ref = snnsim_run(net32, x)
    graph = export_graph(net32, tmp_path)
    batched = kind == "mlp"
    for peer, run in (("snnTorch", run_snntorch), ("Norse", run_norse)):
        spikes, _ = run(graph, x_in, batched, torch.float32)
        roots, descendants, worst = root_flips(s_ref, spikes, u_ref, net32.neuron.v_th)
        counts = [(int(r.sum()), int(g.sum()), int(np.count_nonzero(r != g.astype(bool))))
                  for r, g in zip(s_ref, spikes)]
        report(capsys, f"{kind} float32 {peer}: per layer (snnsim spikes, peer spikes, differing) {counts}; "
              f"{roots} root flips (largest margin {worst:.1e}), {descendants} descendants")


# --- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("keep_meta", [True, False])
def test_round_trip_snnsim_nir_snnsim(kind, keep_meta, tmp_path):
    net = mlp("float32") if kind == "mlp" else cnn("float32")
    graph = export_graph(net, tmp_path)
    if not keep_meta:                                  # as a graph from elsewhere reads
        graph.metadata = {}
    back, imp = snir.network_from_nir(graph, dtype="float32")
    assert imp.notes == []
    assert imp.spec() == ("784-100-10" if kind == "mlp" else "6C5-P2-8C5p2-P2-30-10")
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in net.layers]
    for p, q in zip(net.params, back.params):
        assert set(p) == set(q)
        for k in p:
            np.testing.assert_array_equal(p[k], q[k])
    assert back.neuron == net.neuron
    x = images(8)
    for a, b in zip(snnsim_run(net, x)[0], snnsim_run(back, x)[0]):
        np.testing.assert_array_equal(a, b)


def _checkpoint(tmp_path, spec, preset="authors", seed=3):
    from snnsim.analysis.record import network_from_spec
    from snnsim.training.checkpoint import save_checkpoint
    from snnsim.training.optim import AdamW
    net, cfg = network_from_spec(spec, seed=seed, preset=preset)
    path = tmp_path / "src" / "checkpoint.h5"
    save_checkpoint(path, weights=net.params, optimizer=AdamW(net.params, lr=cfg.lr).state_dict(),
                    rng_state=np.random.default_rng(0).bit_generator.state, epoch=1,
                    config=cfg.to_dict(), metrics=[], network=net.describe())
    return path, net, cfg


def run_cli(capsys, *args):
    """``snnsim nir ARGS`` through the package's dispatcher, in this process (a subprocess
    would pay torch's import again): (exit status, stdout, stderr)."""
    from snnsim.cli import main
    capsys.readouterr()
    rc = main(["nir", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


@pytest.mark.parametrize("spec", ["784-40-10", "6C5-P2-8C5p2-P2-D0.2-30-10"])
def test_cli_round_trip_checkpoint(spec, tmp_path, capsys):
    """nir export then nir import: the checkpoint holds the same network, weights and run
    settings (dropout restored from the metadata), and loads as record and train do."""
    from snnsim.analysis.record import network_from_checkpoint
    src, net, cfg = _checkpoint(tmp_path, spec)
    out = run_cli(capsys, "export", src.parent, tmp_path / "net.nir")
    assert out.returncode == 0, out.stderr
    assert ("dropout p=0.2" in out.stdout) == ("D0.2" in spec)
    out = run_cli(capsys, "import", tmp_path / "net.nir", tmp_path / "back.h5")
    assert out.returncode == 0, out.stderr
    back, cfg2, ckpt = network_from_checkpoint(tmp_path / "back.h5")
    assert ckpt["epoch"] == 0 and cfg2.network == cfg.network and back.describe() == net.describe()
    assert (cfg2.tau_m, cfg2.tau_s, cfg2.v_th, cfg2.preset, cfg2.n_steps) == \
        (cfg.tau_m, cfg.tau_s, cfg.v_th, cfg.preset, cfg.n_steps)
    for p, q in zip(net.params, back.params):
        for k in p:
            np.testing.assert_array_equal(p[k], q[k])


def test_imported_checkpoint_fine_tunes(tmp_path, capsys):
    """train --resume accepts an imported checkpoint (a graph from elsewhere: no metadata)
    and trains it from epoch 0 (a tiny synthetic Fashion-MNIST)."""
    from test_train import write_fashion_mnist

    from snnsim.training import train as train_mod
    from snnsim.training.checkpoint import load_checkpoint
    graph = export_graph(mlp("float32"), tmp_path)
    graph.metadata = {}
    nir.write(tmp_path / "foreign.nir", graph)
    ckpt = tmp_path / "run" / "checkpoint.h5"
    assert run_cli(capsys, "import", tmp_path / "foreign.nir", ckpt).returncode == 0
    data = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=50)
    assert train_mod.main(["--resume", str(ckpt), "--epochs", "1", "--data-dir", str(data),
                           "--progress=false"]) == 0
    after = load_checkpoint(ckpt)
    assert after["epoch"] == 1 and after["config"]["network"] == "784-100-10"


def test_snntorch_synaptic_export_reads_as_snntorch_runs(tmp_path, capsys):
    """An snnTorch network (α = 1-θs, β = 1-θm, threshold V_th/θs, zero reset without
    delay) through snnTorch's own export_to_nir gives, in snnsim, snnTorch's spikes."""
    peers()
    import snntorch
    import snntorch.utils
    from snntorch.export_nir import export_to_nir
    theta_s, theta_m, v_th = 1 / 3, 1 / 5, 1.0
    torch.manual_seed(0)
    with float64_snntorch():
        def synaptic(n, **kw):     # the exporter needs per-neuron α, β and threshold
            return snntorch.Synaptic(alpha=torch.full((n,), 1 - theta_s), beta=torch.full((n,), 1 - theta_m),
                                     threshold=torch.full((n,), v_th / theta_s), reset_mechanism="zero",
                                     reset_delay=False, init_hidden=True, **kw)
        fc1, fc2 = torch.nn.Linear(784, 60, bias=False), torch.nn.Linear(60, 10, bias=False)
        with torch.no_grad():
            fc1.weight.mul_(2.5 * np.sqrt(6.0))        # Kaiming-uniform's default is small for SNNs
            fc2.weight.mul_(2.5 * np.sqrt(6.0))
        model = torch.nn.Sequential(fc1, synaptic(60), fc2, synaptic(10, output=True))
        float64_spikes(model)
        x = torch.as_tensor(images(16).reshape(16, -1))
        with quiet():
            graph = export_to_nir(model, x[:1], ignore_dims=[0])    # NIR has no batch axis
        snntorch.utils.reset(model)
        hidden, out = [], []
        model[1].register_forward_hook(lambda m, i, spk: hidden.append(spk.numpy().copy()))
        with torch.no_grad():
            for _ in range(T):
                spk, _, _ = model(x)
                out.append(spk.numpy().copy())
    path = tmp_path / "snntorch.nir"
    nir.write(path, graph)
    net, imp = snir.network_from_nir(path, dtype="float64")
    assert imp.meta is None and [layer.describe() for layer in net.layers] == ["60", "10"]
    s_ref = snnsim_run(net, x.numpy())[0]
    for layer, (ref, got) in enumerate(zip(s_ref, (np.stack(hidden), np.stack(out)))):
        differ = int(np.count_nonzero(ref != got.astype(bool)))
        report(capsys, f"snnTorch -> NIR -> snnsim layer {layer}: snnTorch {int(got.sum())} spikes, "
              f"snnsim {int(ref.sum())}, {differ} differ of {ref.size}")
        assert got.sum() > 0 and differ == 0


# --- refusals, one line each ------------------------------------------------------------------
def test_export_refuses_subtract_reset_naming_the_layer():
    with pytest.raises(snir.NIRError, match=r"^layer 0 \(Dense 100\): the subtract reset .*paper"):
        snir.network_to_nir(mlp(reset="subtract"))


def test_cli_export_refuses_paper_preset_in_one_line(tmp_path, capsys):
    src, _, _ = _checkpoint(tmp_path, "784-20-10", preset="paper")
    out = run_cli(capsys, "export", src, tmp_path / "x.nir")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "layer 0" in out.stderr and "subtract" in out.stderr
    assert not (tmp_path / "x.nir").exists()


def _edited(tmp_path, edit):
    graph = export_graph(mlp("float32"), tmp_path)
    graph.metadata = {}
    edit(graph)
    return graph


@pytest.mark.parametrize("edit, message", [
    (lambda g: g.nodes["lif_0"].tau_syn.__setitem__(3, 5e-4),
     r"node 'lif_0': tau_syn differs between neurons"),
    (lambda g: g.nodes["lif_1"].tau_mem.__imul__(2.0),
     r"node 'lif_1': tau_mem differs from node 'lif_0'"),
    (lambda g: g.nodes["lif_0"].v_leak.__iadd__(0.1), r"node 'lif_0': v_leak = 0.1"),
    (lambda g: g.nodes["lif_1"].v_reset.__isub__(0.5), r"node 'lif_1': v_reset = -0.5"),
    (lambda g: g.nodes.__setitem__("lif_1", nir.LIF(tau=np.full(10, 5e-4), r=np.ones(10),
                                                    v_leak=np.zeros(10), v_threshold=np.ones(10))),
     r"node 'lif_1': NIR type LIF has no snnsim counterpart"),
    (lambda g: g.edges.append(("lif_1", "dense_1")), r"node '\w+': a recurrent edge"),
    (lambda g: g.edges.append(("lif_0", "output")), r"node 'lif_0': 2 outgoing edges"),
])
def test_import_refuses_what_snnsim_cannot_represent(edit, message, tmp_path):
    graph = _edited(tmp_path, edit)
    with pytest.raises(snir.NIRError, match="^" + message) as exc:
        snir.read_graph(graph)
    assert "\n" not in str(exc.value)


def test_cli_import_refusal_is_one_line_exit_2(tmp_path, capsys):
    graph = _edited(tmp_path, lambda g: g.nodes["lif_0"].v_leak.__iadd__(0.1))
    nir.write(tmp_path / "leaky.nir", graph)
    out = run_cli(capsys, "import", tmp_path / "leaky.nir", tmp_path / "x.h5")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "lif_0" in out.stderr
    assert not (tmp_path / "x.h5").exists()


def test_import_folds_gain_and_threshold_of_a_foreign_graph(tmp_path):
    """A graph from elsewhere with threshold 2 and a pooling gain 1 gives the same spikes:
    the factors go into the weights (noted)."""
    net = cnn("float64")
    graph = export_graph(net, tmp_path)
    graph.metadata = {}
    for name in lif_names(graph):
        graph.nodes[name].v_threshold = graph.nodes[name].v_threshold * 2.0
    graph.nodes["lif_2"].w_in = graph.nodes["lif_2"].w_in / 1.1 * 1.0    # pooling gain 1 -> not 1.1
    back, imp = snir.network_from_nir(graph, dtype="float64")
    weights = imp.canonical_weights()
    assert any("pooling gain" in n for n in imp.notes)
    assert back.neuron.v_th == 2.0 and len(weights) == 4
    np.testing.assert_allclose(weights[1], net.layers[2].params["W"] / 1.1, rtol=1e-15)


def test_metadata_holds_what_the_graph_cannot(tmp_path):
    graph = export_graph(cnn("float32"), tmp_path)
    meta = json.loads(graph.metadata["snnsim"])
    assert meta["dt"] == DT and meta["theta_s"] == 1 / 3 and meta["pool_gains"] == [1.1, 1.1]
    lif = graph.nodes["lif_0"]
    assert DT / lif.tau_syn.flat[0] == 1 / 3 and DT / lif.tau_mem.flat[0] == 1 / 5   # exact
    assert graph.nodes["lif_2"].w_in.flat[0] == 1.1 and graph.nodes["lif_0"].w_in.flat[0] == 1.0
    assert graph.nodes["flatten_4"].start_dim == 0


def test_root_flip_tracing_by_hand():
    """The float32 classifier: a flip whose inputs agree is a root and must sit at the
    threshold; a flip after a flip below is its descendant."""
    ref = [np.zeros((3, 1, 3), bool), np.zeros((3, 1, 2), bool)]
    got = [r.copy() for r in ref]
    u = [np.full((3, 1, 3), 0.5), np.full((3, 1, 2), 0.5)]
    got[0][1, 0, 2] = True                       # a root flip at step 1 ...
    got[1][2, 0, 0] = True                       # ... and, a step later, one above it
    u[0][1, 0, 2] = 1.0 + 3e-7
    roots, descendants, worst = root_flips(ref, got, u, 1.0)
    assert (roots, descendants) == (1, 1) and worst == pytest.approx(3e-7)
    u[0][1, 0, 2] = 1.2                          # far above V_th: no rounding explains it
    with pytest.raises(AssertionError, match="root flip"):
        root_flips(ref, got, u, 1.0)
    got[0][1, 0, 2] = False                      # the upper flip alone is a root too
    u[1][2, 0, 0] = 0.7
    with pytest.raises(AssertionError, match="layer 1 step 2"):
        root_flips(ref, got, u, 1.0)


def test_without_the_nir_package_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(snir.NIRError, match=r"^NIR export and import need the package 'nir'"):
        snir.network_to_nir(mlp())


def test_cli_import_of_a_file_that_is_not_nir(tmp_path, capsys):
    (tmp_path / "x.nir").write_bytes(b"not hdf5")
    out = run_cli(capsys, "import", tmp_path / "x.nir", tmp_path / "x.h5")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a readable NIR file" in out.stderr
    out = run_cli(capsys, "import", tmp_path / "missing.nir", tmp_path / "x.h5")
    assert out.returncode == 2 and "no such NIR file" in out.stderr


@pytest.mark.parametrize("tau_m, tau_s", [(5.0, 3.0), (13.0, 2.0), (7.0, 11.0), (30.0, 1.5)])
def test_round_trip_other_time_constants(tau_m, tau_s, tmp_path):
    """τm = 13 makes r·dt/τ_mem one ulp below 1: read as 1 (no weight folding), with and
    without the metadata; the same time constants, weights and spikes come back."""
    net = Network([Dense(30, weight_scale=2.5), Dense(10, weight_scale=2.5)], (784,),
                  neuron=NeuronParams(tau_m=tau_m, tau_s=tau_s), dtype="float64", seed=4)
    for keep_meta in (True, False):
        graph = export_graph(net, tmp_path)
        if not keep_meta:
            graph.metadata = {}
        back, imp = snir.network_from_nir(graph)
        assert imp.notes == [] and back.neuron == net.neuron
        for p, q in zip(net.params, back.params):
            np.testing.assert_array_equal(p["W"], q["W"])
        x = images(8)
        for a, b in zip(snnsim_run(net, x)[0], snnsim_run(back, x)[0]):
            np.testing.assert_array_equal(a, b)


SMALL_CIFAR_YAML = """\
Network: {epochs: 1, batch_size: 10, n_steps: 5, dataset: CIFAR10, lr: 0.0002, loss: kernel,
          n_class: 10, tau_m: 5, tau_s: 3}
Layers:
  conv_1: {type: conv, in_channels: 3, out_channels: 4, kernel_size: 3, padding: 1, weight_scale: 5}
  dropout_1: {type: dropout, p: 0.2}
  conv_2: {type: conv, in_channels: 4, out_channels: 6, kernel_size: 3, padding: 1, stride: 2}
  pooling_1: {type: pooling, kernel_size: 2}
  dropout_2: {type: dropout, p: 0.2}
  FC_1: {type: linear, n_inputs: 384, n_outputs: 20}
  dropout_3: {type: dropout, p: 0.2}
  FC_2: {type: linear, n_inputs: 20, n_outputs: 10}
"""


@pytest.mark.parametrize("name", ["fashion_mnist_mlp", "fashion_mnist_cnn", "mnist_cnn", "nmnist_cnn",
                                  "small_cifar"])
def test_config_networks_export_and_come_back(name, tmp_path):
    """The shipped configs' networks, and a small one with the CIFAR-10 configs' layers
    (conv with padding and stride, dropout after convs, pooling and dense layers; the
    CIFAR-10 configs themselves hold 18 and 45 million weights): dropout left out of the
    graph; read back as the same network (the metadata's config) or, from the graph
    alone, the same spiking layers and pooling. A shipped config is named by its name and
    another file by the paper's notation, never by this machine's path of the file."""
    from snnsim.training.config import load_config_file
    from snnsim.training.train import make_network
    if name == "small_cifar":
        (tmp_path / "small_cifar.yaml").write_text(SMALL_CIFAR_YAML)
        cfg = load_config_file(str(tmp_path / "small_cifar.yaml"))
    else:
        cfg = load_config_file(name)
    net = make_network(cfg)
    graph = snir.network_to_nir(net, config=cfg.replace(backend="cupy", fused=True).to_dict())
    n_dropout = sum(isinstance(layer, Dropout) for layer in net.layers)
    assert len(json.loads(graph.metadata["snnsim"])["dropped"]) == n_dropout
    imp = snir.read_graph(graph)
    saved = imp.meta["config"]["network"]
    assert str(tmp_path) not in saved and (saved == name or name == "small_cifar")
    cfg_back, weights = snir.config_for(imp)
    assert cfg_back.network == saved and imp.notes == []
    assert (cfg_back.backend, cfg_back.fused, cfg_back.out, cfg_back.data_dir) == ("numpy", False, None, None)
    back = make_network(cfg_back)
    assert [layer.describe() for layer in back.layers] == [layer.describe() for layer in net.layers]
    spiking = [layer for layer in net.layers if layer.spiking]
    for w, layer in zip(weights, spiking, strict=True):
        np.testing.assert_array_equal(w, layer.params["W"])
    graph.metadata = {}
    alone = snir.read_graph(graph)
    assert [layer.describe() for layer in alone.layers] == \
        [layer.describe() for layer in net.layers if not isinstance(layer, Dropout)]
