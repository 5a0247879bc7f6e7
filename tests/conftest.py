"""Shared test setup: hypothesis profiles and small network factories.

Profiles: ``dev`` (default, quick), ``ci`` (more examples, still within the
CI budget) and ``stress`` (1000 random examples, to hunt rare failures before
a release); choose with ``HYPOTHESIS_PROFILE=ci``. Examples are derandomized in
``ci`` so that a CI failure reproduces locally.
"""
from __future__ import annotations

import os

# Training runs in tests (in this process, forked, or in subprocesses) compare weights bit
# for bit across runs; a run chooses its BLAS threads from the cores idle at its start
# (snnsim/training/threads.py), which on a loaded machine differs from run to run and so
# changes the bits. The environment variable fixes the count for every run of the suite
# (tests/test_threads.py tests the choice itself with the variable removed).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import procs
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("stress", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    """Children started with procs.start (tests/procs.py) and still running when their
    test ends (it failed half way) are killed with what they started."""
    yield
    procs.reap()


@pytest.fixture(scope="session", autouse=True)
def _fast_kernels_compiled():
    """The fast path's numba kernels compiled (or loaded from numba's cache) once, in the
    test process, before any test: runs the tests fork inherit them, so a fork's start-up
    (which tests/faults.py times to place its kills) does not include the first compile."""
    from snnsim.fast import warm_up
    warm_up()


def fashion_mnist_available() -> bool:
    """True when the real Fashion-MNIST test split can be read (tests that need it skip otherwise)."""
    try:
        from snnsim.datasets import load_idx_dataset
        load_idx_dataset("fashion-mnist", "test")
    except Exception:  # any reason the data cannot be read
        return False
    return True


def _cupy_or_none():
    from snnsim.backend import cupy_available, get_backend
    return get_backend("cupy") if cupy_available() else None


@pytest.fixture(scope="session")
def cupy():
    """The CuPy module, or skip: CuPy tests need a CUDA device."""
    cp = _cupy_or_none()
    if cp is None:
        pytest.skip("CuPy with a CUDA device is not available on this machine")
    return cp


def random_dense_net(rng: np.random.Generator, sizes, reset="zero", grad=None, weight_scale=3.0,
                     dtype="float64", tau_m=5.0, tau_s=3.0):
    """A dense network with input size sizes[0] and layers sizes[1:]."""
    from snnsim import Dense, GradientParams, Network, NeuronParams
    layers = [Dense(n, weight_scale=weight_scale) for n in sizes[1:]]
    return Network(layers, (sizes[0],), neuron=NeuronParams(tau_m=tau_m, tau_s=tau_s, reset=reset),
                   grad=grad or GradientParams(), dtype=dtype, seed=int(rng.integers(2**31)))


def pytest_report_header(config):
    """Which snnsim the suite tests: the source tree's, or an installed package's
    (scripts/check_dist.sh checks this line)."""
    import snnsim
    from snnsim.version import current_source_info
    info = current_source_info()
    return (f"snnsim: {snnsim.__version__} from {os.path.dirname(snnsim.__file__)} "
            f"({info['source']}; git commit: {info['git_commit'] or 'none'})")
