"""snnsim: a reference simulator of TSSL-BP (Zhang & Li, NeurIPS 2020).

NumPy on the CPU, CuPy on a GPU, same code. See README.md and
``reference/README.md`` for the map from the paper's equations to functions.
"""
from .backend import get_backend, to_numpy
from .conv import Conv2d
from .dropout import Dropout
from .layers import Dense, Layer
from .loss import count_loss, desired_spike_train, kernel_loss, kernel_target, predict
from .network import BackwardPass, Network, NetworkCache, repeat_static
from .neuron import LIFState, NeuronModel, lif_forward, psc_filter
from .params import EXACT_TIMING, GradientParams, NeuronParams
from .pool import POOL_GAIN, Pool2d
from .presets import PRESETS, Preset, get_preset
from .training.builder import (
    build_network,
    layers_from_authors_config,
    load_authors_yaml,
    parse_paper_notation,
)
from .tsslbp import LIF, lif_backward, phi_matrix
from .version import __version__  # the one place the version is written: snnsim/version.py

__all__ = [
    "__version__", "LIF", "BackwardPass", "Conv2d", "Dense", "Dropout", "EXACT_TIMING", "GradientParams",
    "LIFState", "Layer", "Network", "NetworkCache", "NeuronModel", "NeuronParams", "POOL_GAIN",
    "PRESETS", "Pool2d", "Preset", "build_network", "count_loss", "desired_spike_train",
    "get_backend", "get_preset", "kernel_loss", "kernel_target", "layers_from_authors_config",
    "lif_backward", "lif_forward", "load_authors_yaml", "parse_paper_notation", "phi_matrix",
    "predict", "psc_filter", "repeat_static", "to_numpy",
]
