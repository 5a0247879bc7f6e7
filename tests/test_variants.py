"""snnsim.variants and the one training step: every backward variant is what its name says,
and the default step (``backward=tsslbp``) is bit for bit the plain TSSL-BP step it always was.

- The default :func:`train_step` equals the plain step written out here (forward, kernel loss,
  ``net.backward``, clip, AdamW, clamp) to the last bit over several steps; so does the
  ``authors`` variant under the ``authors`` preset (``signed_lif_backward`` with sign +1 is
  ``lif_backward``: same operations, same order).
- A named variant trains with its own gradient: ``timing`` is ``net.backward`` with
  EXACT_TIMING, ``surrogate`` is :func:`snnsim.surrogate.surrogate_backward`; the two differ
  from the default (so the comparisons above can fail).
- Config: an unknown name is an error listing the names; ``reading`` with a named variant
  is an error (the variant fixes its reading).
"""
from __future__ import annotations

import numpy as np
import pytest

from snnsim import EXACT_TIMING, repeat_static
from snnsim.surrogate import surrogate_backward
from snnsim.training.config import ConfigError, TrainConfig
from snnsim.training.optim import AdamW, clamp_weights, clip_grad_norm
from snnsim.training.train import make_loss, make_network, neuron_and_grad, train_step
from snnsim.variants import BACKWARDS, VARIANTS, describe_backwards, get_variant, variant_backward

N_STEPS = 4


def small_config(**changes) -> TrainConfig:
    return TrainConfig(network="784-32-10", dtype="float64", seed=5, **changes)


def batch(seed: int = 0, n: int = 8):
    rng = np.random.default_rng(seed)
    x = repeat_static(rng.standard_normal((n, 1, 28, 28)) * 1.5 + 0.5, 5)   # (T, B, 1, 28, 28)
    return x, rng.integers(0, 10, n)


def weights(net) -> list[dict]:
    return [{k: v.copy() for k, v in p.items()} for p in net.params]


def train_with_step(cfg: TrainConfig, step) -> list[dict]:
    """N_STEPS steps of ``step(net, opt, x, labels, loss_fn, rng)`` from cfg's init."""
    net = make_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, net)
    rng = np.random.default_rng(0)
    for i in range(N_STEPS):
        x, labels = batch(i)
        step(net, opt, x, labels, loss_fn, rng)
    return weights(net)


def plain_step(backward):
    """The training step written out, with ``backward(net, g, cache) -> grads``."""
    def step(net, opt, x, labels, loss_fn, rng):
        a, cache = net.forward(x, train=True, rng=rng)
        _, g = loss_fn(a, labels)
        grads = backward(net, g, cache)
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        clamp_weights(net.params, -4.0, 4.0)
    return step


def library_step(cfg):
    def step(net, opt, x, labels, loss_fn, rng):
        train_step(net, opt, x, labels, loss_fn, cfg, rng)
    return step


def assert_identical(wa, wb):
    for la, lb in zip(wa, wb):
        for k in la:
            assert np.array_equal(la[k], lb[k]), k


def assert_different(wa, wb):
    assert any(not np.array_equal(la[k], lb[k]) for la, lb in zip(wa, wb) for k in la)


def test_default_step_is_the_plain_tsslbp_step_bit_for_bit():
    cfg = small_config()
    assert cfg.backward == "tsslbp"
    plain = train_with_step(cfg, plain_step(lambda net, g, cache: net.backward(g, cache)))
    assert_identical(train_with_step(cfg, library_step(cfg)), plain)
    # the authors' variant is the default under the authors' preset, to the last bit
    cfg_a = small_config(backward="authors")
    assert neuron_and_grad(cfg_a)[1] == neuron_and_grad(cfg)[1]
    assert_identical(train_with_step(cfg_a, library_step(cfg_a)), plain)


@pytest.mark.parametrize("name, backward", [
    ("timing", lambda net, g, cache: net.backward(g, cache, EXACT_TIMING)),
    ("surrogate", lambda net, g, cache: surrogate_backward(net, g, cache, detach_reset=True)),
])
def test_named_variant_trains_with_its_own_gradient(name, backward):
    cfg = small_config(backward=name)
    got = train_with_step(cfg, library_step(cfg))
    assert_identical(got, train_with_step(cfg, plain_step(backward)))
    assert_different(got, train_with_step(small_config(), library_step(small_config())))


def test_every_variant_gives_a_finite_gradient_of_every_parameter():
    cfg = small_config()
    net = make_network(cfg)
    x, labels = batch()
    a, cache = net.forward(x)
    _, g = make_loss(cfg, net)(a, labels)
    for name in BACKWARDS:
        grads = variant_backward(net, g, cache, name)
        for p, gr in zip(net.params, grads):
            assert set(gr) == set(p)
            assert all(np.isfinite(gr[k]).all() and gr[k].shape == p[k].shape for k in p), name


def test_config_checks_the_name():
    with pytest.raises(ConfigError, match="timing-bw-flipped"):
        TrainConfig(backward="nope")
    with pytest.raises(ConfigError, match="fixes its own reading"):
        TrainConfig(backward="surrogate", reading="timing")
    assert TrainConfig().replace(backward="surrogate").backward == "surrogate"
    with pytest.raises(ValueError, match="surrogate-attached"):
        get_variant("nope")


def test_help_explains_every_name_in_one_line():
    lines = describe_backwards().splitlines()
    assert len(lines) == len(BACKWARDS) == len(VARIANTS) + 1
    for name, line in zip(BACKWARDS, lines):
        assert line.split()[0] == name and len(line.split()) > 3
