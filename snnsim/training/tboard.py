"""TensorBoard event files of a run (``--tensorboard``; the ``tensorboard`` extra, tensorboardX,
which needs no PyTorch or TensorFlow).

With ``--tensorboard`` a run writes into ``<run folder>/tensorboard/`` after every epoch, at
step = the epoch (1, 2, ...):

- scalars ``loss/train``, ``accuracy/train``, ``accuracy/test`` (%), ``lr``, ``time/train_s``,
  ``time/eval_s``: the epoch's row of ``metrics.jsonl``; ``grad_norm/mean`` and
  ``grad_norm/max``: the global gradient norm of the epoch's steps, before the clip (runs
  with a clip, which computes it anyway);
- per spiking layer k (1-based, in order), ``sparsity/silent/layer_k`` and
  ``sparsity/spikes/layer_k``: the test pass's silent fraction and spikes per neuron and
  sample (``test_silent``, ``test_spikes`` of the row);
- histograms ``weights/<layer>_<param>`` of every parameter array, and
  ``spike_counts/layer_k``: how many (test sample, neuron) pairs fired 0, 1, ..., T times.

``tensorboard --logdir runs`` shows every run under ``runs/`` side by side. A resumed run
appends to the same folder (TensorBoard shows the last value written for a step).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backend import to_numpy

TB_DIR = "tensorboard"
PERCENT = 100.0


def check_available() -> None:
    """Raise :class:`~snnsim.training.builder.ConfigError` (one line) when tensorboardX is missing."""
    import importlib.util
    if importlib.util.find_spec("tensorboardX") is None:
        from .builder import ConfigError
        raise ConfigError("--tensorboard needs tensorboardX: pip install 'snnsim[tensorboard]' "
                          "(or pip install tensorboardX)")


class EpochLog:
    """The run's event-file writer; :meth:`epoch` after every epoch, :meth:`close` at the end."""

    def __init__(self, run_dir):
        check_available()
        from tensorboardX import SummaryWriter
        self.dir = Path(run_dir) / TB_DIR
        self.writer = SummaryWriter(logdir=str(self.dir))

    def epoch(self, row: dict, lr: float, layer_names: list[str], params: list[dict],
              count_hists: list[np.ndarray], grad_norms: list[float] | None = None) -> None:
        """Write epoch ``row["epoch"]``: its metrics row, the learning rate, the weights
        (``params`` per layer, named by ``layer_names``), the test pass's spike-count
        histograms (per spiking layer, counts of pairs that fired 0..T times) and the global
        gradient norm of the epoch's steps (before the clip: mean and max)."""
        w, step = self.writer, int(row["epoch"])
        if grad_norms:
            w.add_scalar("grad_norm/mean", float(np.mean(grad_norms)), step)
            w.add_scalar("grad_norm/max", float(np.max(grad_norms)), step)
        w.add_scalar("loss/train", row["train_loss"], step)
        w.add_scalar("accuracy/train", PERCENT * row["train_acc"], step)
        w.add_scalar("accuracy/test", PERCENT * row["test_acc"], step)
        w.add_scalar("lr", lr, step)
        w.add_scalar("time/train_s", row["seconds"], step)
        w.add_scalar("time/eval_s", row["eval_seconds"], step)
        for k, (silent, spikes) in enumerate(zip(row.get("test_silent", []), row.get("test_spikes", [])), 1):
            w.add_scalar(f"sparsity/silent/layer_{k}", silent, step)
            w.add_scalar(f"sparsity/spikes/layer_{k}", spikes, step)
        for name, layer in zip(layer_names, params):
            for key, value in layer.items():
                w.add_histogram(f"weights/{name}_{key}", to_numpy(value).ravel(), step)
        for k, hist in enumerate(count_hists, 1):
            counts = np.asarray(hist, dtype=np.float64)
            ks = np.arange(len(counts), dtype=np.float64)
            n = float(counts.sum())
            if n == 0:
                continue
            w.add_histogram_raw(f"spike_counts/layer_{k}", min=0.0, max=float(len(counts) - 1),
                                num=n, sum=float((ks * counts).sum()),
                                sum_squares=float((ks * ks * counts).sum()),
                                bucket_limits=(ks + 0.5).tolist(), bucket_counts=counts.tolist(),
                                global_step=step)
        w.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["TB_DIR", "EpochLog", "check_available"]
