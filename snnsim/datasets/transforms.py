"""Pixel normalisation and CIFAR-10 augmentation, as used by the TSSL-BP authors.

* MNIST and Fashion-MNIST alike: ``(x/255 - 0.1307) / 0.3081``.
* CIFAR-10: ``(x/255 - mean_c) / std_c`` per channel with mean (0.4914, 0.4822, 0.4465)
  and std (0.2023, 0.1994, 0.2010).
* CIFAR-10 training augmentation: random 32x32 crop of the image zero-padded by 4
  pixels, then horizontal flip with probability 0.5.

The authors (torchvision) crop and flip the raw image before normalising, so the
padding is black. :func:`random_crop_flip` pads with ``fill``: apply it to ``x/255`` (or
to uint8 images) with the default ``fill=0``, or to normalised images with
``fill=CIFAR10_BLACK`` (the normalised value of a black pixel) to get the same result.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_BLACK",
           "normalize_mnist", "normalize_cifar10", "random_crop_flip"]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
#: Normalised value of a black pixel per channel: the padding torchvision effectively uses.
CIFAR10_BLACK = tuple(-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD))


def normalize_mnist(images, dtype=np.float32) -> np.ndarray:
    """``(x/255 - 0.1307) / 0.3081`` computed in ``dtype`` (float32 by default), any shape
    (uint8 input in 0..255).

    Every operation is in ``dtype``: a float64 run is float64 from the pixels on (equal
    to a float64 evaluation of the formula, not a float32 result widened afterwards,
    which differs by up to 2.8e-7), and float32 gives the same bits as always.
    """
    dt = np.dtype(dtype)
    x = np.asarray(images, dtype=dt) / dt.type(255.0)
    return (x - dt.type(MNIST_MEAN)) / dt.type(MNIST_STD)


def normalize_cifar10(images, dtype=np.float32) -> np.ndarray:
    """Per-channel ``(x/255 - mean) / std`` computed in ``dtype`` (float32 by default,
    as :func:`normalize_mnist`); images (..., 3, H, W) in 0..255."""
    dt = np.dtype(dtype)
    x = np.asarray(images, dtype=dt)
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected images of shape (..., 3, H, W), got {x.shape}")
    mean = np.asarray(CIFAR10_MEAN, dtype=dt)[:, None, None]
    std = np.asarray(CIFAR10_STD, dtype=dt)[:, None, None]
    return (x / dt.type(255.0) - mean) / std


def random_crop_flip(images, rng: np.random.Generator, pad: int = 4, fill=0.0,
                     p_flip: float = 0.5) -> np.ndarray:
    """Random crop of the ``pad``-padded image and horizontal flip, per sample.

    ``images``: (N, C, H, W). Each image is padded by ``pad`` pixels of value ``fill``
    (a scalar, or one value per channel), cropped back to H x W at offsets drawn
    uniformly from 0..2*pad, then mirrored left-right with probability ``p_flip``.
    Draws from ``rng`` (a ``np.random.Generator``): offsets (N, 2) first, then N
    uniforms for the flips, so the same seed gives the same output. Returns a new
    array of the input's shape and dtype.
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {x.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
    n, c, h, w = x.shape
    pad = int(pad)
    if pad < 0:
        raise ValueError("pad must be >= 0")
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < p_flip
    padded = np.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[...] = np.asarray(fill, dtype=x.dtype).reshape(-1, 1, 1) if np.ndim(fill) else fill
    padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = offsets[:, 0, None] + np.arange(h)            # (N, H)
    cols = offsets[:, 1, None] + np.arange(w)            # (N, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)  # flip = read columns backwards
    out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return out
