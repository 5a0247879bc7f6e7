"""Will a run fit in memory? A lower bound of what training needs, checked at start.

A network of ``784-100000000-10`` or ``--n-steps=10000000`` asks for hundreds of GiB;
without this check NumPy fails deep inside the first allocation with a traceback.
:func:`check_fits` refuses such a config before anything is allocated or created,
with one line giving the figure and the machine's memory.

The estimate (:func:`estimate`) is a lower bound: it counts only arrays a training
step certainly holds at once, so a config it refuses cannot run, while one it accepts
may still be too big (im2col buffers, temporaries and the dataset are not counted):

- per weight: the weight, its gradient and AdamW's two moments (4 values);
- per time step, sample and neuron of the batch: the input PSC, and for a spiking
  layer its current x, membrane u, Δu and PSC a (4 values) and its spikes s (1 byte),
  for a pooling or dropout layer its output (1 value), all kept for the backward;
- the larger of a training batch (with the gradient) and an evaluation batch.

The machine's memory (:func:`machine_bytes`) is the host's physical memory, or the
cgroup's limit when smaller; on a GPU backend, the device's memory.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..conv import Conv2d
from ..layers import Dense
from .builder import ConfigError

#: Values held per weight during training: W, its gradient, AdamW's m and v.
VALUES_PER_WEIGHT = 4
#: Values per neuron, step and sample a spiking layer keeps for the backward: x, u, du, a.
VALUES_PER_SPIKING_NEURON = 4

GIB = 1 << 30


def parameter_count(layer, in_shape: tuple) -> int:
    """Weights of ``layer`` on input features ``in_shape`` (without allocating them)."""
    if isinstance(layer, Dense):
        return layer.n_out * math.prod(in_shape)
    if isinstance(layer, Conv2d):
        return math.prod(layer._w_shape(in_shape))
    return 0


def estimate(layers, input_shape, n_steps: int, batch_size: int, eval_batch_size: int,
             itemsize: int) -> dict:
    """Bytes a training run certainly needs at once (the module docstring's lower bound):
    ``{"total", "weights", "batch"}`` with ``batch`` the larger batch's activations."""
    shape = tuple(input_shape)
    weights, per_sample = 0, math.prod(shape) * itemsize          # the input PSC
    for layer in layers:
        weights += parameter_count(layer, shape)
        shape = tuple(layer.output_shape(shape))
        n = math.prod(shape)
        per_sample += n * (VALUES_PER_SPIKING_NEURON * itemsize + 1) if layer.spiking \
            else n * itemsize
    train = VALUES_PER_WEIGHT * weights * itemsize + n_steps * batch_size * per_sample
    evaluation = (VALUES_PER_WEIGHT - 1) * weights * itemsize \
        + n_steps * eval_batch_size * per_sample
    return {"total": max(train, evaluation),
            "weights": VALUES_PER_WEIGHT * weights * itemsize,
            "batch": n_steps * max(batch_size, eval_batch_size) * per_sample}


def machine_bytes(backend: str = "numpy") -> tuple[int | None, str]:
    """``(bytes, what)``: the memory a run on ``backend`` can use at most; None when
    unknown (the check is then skipped)."""
    if backend in ("cupy", "torch"):
        device = _device_bytes(backend)
        if device is not None:
            return device, "the GPU's memory"
    try:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        host = None
    limit = _cgroup_limit()
    if limit is not None and (host is None or limit < host):
        return limit, "the memory limit of this process's cgroup"
    return host, "the machine's memory"


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def _device_bytes(backend: str) -> int | None:
    try:
        if backend == "cupy":
            import cupy
            return int(cupy.cuda.Device().mem_info[1])
        import torch
        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # no device, no driver: the host's figure is the bound
        return None
    return None


def check_fits(cfg, layers, input_shape, n_train: int | None = None,
               n_test: int | None = None) -> None:
    """ConfigError, with the figures, when ``cfg``'s run needs more than the machine has.
    ``n_train``, ``n_test``: the splits' sizes, when known (a batch is never larger)."""
    batch = min(cfg.batch_size, n_train) if n_train else cfg.batch_size
    eval_batch = min(cfg.eval_batch_size, n_test) if n_test else cfg.eval_batch_size
    need = estimate(layers, input_shape, cfg.n_steps, batch, eval_batch,
                    8 if cfg.dtype == "float64" else 4)
    have, what = machine_bytes(cfg.backend)
    if have is None or need["total"] <= have:
        return
    raise ConfigError(
        f"network {cfg.network!r} with n_steps={cfg.n_steps}, batches of {batch} (training) "
        f"and {eval_batch} (evaluation), {cfg.dtype}: needs at least "
        f"{need['total'] / GIB:.1f} GiB (weights with gradient and AdamW state "
        f"{need['weights'] / GIB:.1f} GiB, one batch's activations {need['batch'] / GIB:.1f} GiB); "
        f"{what} is {have / GIB:.1f} GiB")


__all__ = ["VALUES_PER_SPIKING_NEURON", "VALUES_PER_WEIGHT", "check_fits", "estimate",
           "machine_bytes", "parameter_count"]
