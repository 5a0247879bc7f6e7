"""snnsim: a reference simulator of TSSL-BP (Zhang & Li, NeurIPS 2020).

NumPy on the CPU, CuPy on a GPU, same code. See README.md and
``reference/README.md`` for the map from the paper's equations to functions.

The names below are imported when first used (``from snnsim import Network`` or
``snnsim.Network``), not when the package is: ``python3 -m snnsim.train`` then
starts with nothing heavy imported, so that its entry point can take over Ctrl-C
and SIGTERM (:mod:`snnsim.signals`) before NumPy, h5py and the rest load.
"""
from __future__ import annotations

import importlib

#: Each public name and the module that defines it (``__version__``: the one place the
#: version is written, snnsim/version.py).
_HOME = {
    "__version__": ".version",
    "get_backend": ".backend", "to_numpy": ".backend",
    "Conv2d": ".conv", "Dropout": ".dropout", "Dense": ".layers", "Layer": ".layers",
    "count_loss": ".loss", "desired_spike_train": ".loss", "kernel_loss": ".loss",
    "kernel_target": ".loss", "predict": ".loss",
    "BackwardPass": ".network", "Network": ".network", "NetworkCache": ".network",
    "repeat_static": ".network",
    "LIFState": ".neuron", "NeuronModel": ".neuron", "lif_forward": ".neuron",
    "psc_filter": ".neuron",
    "EXACT_TIMING": ".params", "GradientParams": ".params", "NeuronParams": ".params",
    "POOL_GAIN": ".pool", "Pool2d": ".pool",
    "PRESETS": ".presets", "Preset": ".presets", "get_preset": ".presets",
    "build_network": ".training.builder", "layers_from_authors_config": ".training.builder",
    "load_authors_yaml": ".training.builder", "parse_paper_notation": ".training.builder",
    "LIF": ".tsslbp", "lif_backward": ".tsslbp", "phi_matrix": ".tsslbp",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    """A public name, imported from its module on first use (PEP 562)."""
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
