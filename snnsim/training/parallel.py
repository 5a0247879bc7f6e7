"""Data-parallel training of one run over MPI processes (mpi4py):

    mpiexec -n 4 python3 -m snnsim.train --data-parallel --config fashion_mnist_mlp

Every rank holds the whole network, optimizer and generator, all in the same
state. Each global batch (``batch_size`` samples, drawn in the run's order, the
same on every rank) is cut into N contiguous parts (``numpy.array_split``); rank
r runs forward and backward on part r. The loss (7) is a sum over samples, so
the sum over ranks of the parts' gradients is the gradient of the whole batch:
one ``Allreduce`` of one flat buffer makes it, and then clipping, AdamW and the
weight clamp make the same step on every rank that one process makes (up to
the order of the floating-point sum).

Rank 0 alone checks, locks and writes the run folder; its refusal reaches the
other ranks through :meth:`DataParallel.agree`. A stop request (SIGINT, SIGTERM)
is shared after every step (:meth:`DataParallel.check_stop`), so a signal to any
rank stops all of them after the same step.

Nothing in a checkpoint depends on N (weights, optimizer moments, the run's
generator), so a run resumes with any N, or without MPI. Two caveats:

- Augmentation (CIFAR-10 crop and flip) is drawn for the whole batch on every
  rank, then sliced, so the run's generator advances as in one process.
- Dropout masks come from a generator per rank and step,
  ``default_rng([seed, 2, epoch, batch, rank])``: deterministic for a given N,
  but not the masks one process would draw; networks without dropout (the
  Fashion-MNIST MLP) are unaffected.

With CuPy every rank takes the GPU ``local rank mod #GPUs`` and the gradient
sum goes through NCCL (``cupy.cuda.nccl``; its unique id is broadcast over MPI).
That path is written but has not been run on a GPU yet (no multi-GPU machine
in CI): treat it as unverified.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import traceback

import numpy as np

from ..commandline import EXIT_USAGE
from .config import ConfigError


class DataParallel:
    """The ranks of ``comm`` (default ``MPI.COMM_WORLD``) training one run together."""

    def __init__(self, xp=np, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.xp = xp
        self._buf = None        # the flat gradient buffer, (P,), allocated at the first step
        self._nccl = None
        self.agreed = False     # set by agree(): every rank's setup has succeeded
        if xp is not np:
            self._nccl = self._start_nccl()

    @property
    def root(self) -> bool:
        """Rank 0: the one that writes the run folder and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, size), for :func:`snnsim.training.data.batches`."""
        return self.rank, self.size

    def _start_nccl(self):
        """Unverified (no GPU in CI): pick this rank's GPU and join an NCCL communicator."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        cuda = self.xp.cuda
        cuda.Device(local % cuda.runtime.getDeviceCount()).use()
        nccl = importlib.import_module(self.xp.__name__ + ".cuda.nccl")
        uid = self.comm.bcast(nccl.get_unique_id() if self.root else None, root=0)
        return nccl, nccl.NcclCommunicator(self.size, uid, self.rank)

    def check_batches(self, n_train: int, batch_size: int) -> None:
        """Every rank needs a sample of every training batch (the last one may be small)."""
        last = n_train % batch_size or batch_size
        if min(batch_size, last) < self.size:
            raise ConfigError(f"data-parallel over {self.size} ranks needs at least {self.size} "
                              f"samples in every batch; the last of {n_train} samples in "
                              f"batches of {batch_size} has {last}: change batch_size or "
                              "train_subset")

    def agree(self, error: BaseException | None = None) -> None:
        """Collective, called by every rank once its setup is done (``error`` None) or
        has failed with a user error (``error``): rank 0 alone checks and locks the run
        folder, so the others must learn of its refusal instead of waiting for it in
        the first Allreduce. If any rank failed, every rank leaves: the first failed
        rank raises its error (one line, exit status 2), the others exit 2 quietly."""
        failed = self.comm.allgather(error is not None)
        self.agreed = True
        if not any(failed):
            return
        if error is not None and self.rank == failed.index(True):
            raise error
        raise SystemExit(EXIT_USAGE)

    def check_stop(self, stop) -> None:
        """``stop.check()`` (a :class:`~snnsim.training.runfolder.StopRequest`) made
        collective: a signal reaches the ranks at different moments, or only one of
        them, so every rank stops after the same step if any rank was asked to (the
        largest signal number wins: SIGTERM over SIGINT)."""
        from .runfolder import stop_exception
        signum = self.comm.allreduce(int(stop.signum or 0), op=self.MPI.MAX)
        if signum:     # (the agreed value only: a signal during the Allreduce waits a step)
            stop.requested, stop.signum = True, signum
            raise stop_exception(signum)

    @contextlib.contextmanager
    def abort_on_crash(self):
        """An exception on one rank must not leave the others waiting in an Allreduce.
        Before :meth:`agree` a user error goes through it (every rank exits with 2, one
        line); after it, and for any other exception, the rank prints the error (one
        line for a user error or a divergence, else the traceback) and ``MPI_Abort``
        ends every rank with the exit status the run would have had alone (2, 3, 1)."""
        from ..commandline import report_error, user_errors
        from .guard import DivergenceError
        try:
            yield
        except Exception as exc:
            if self.size == 1:
                raise
            user = isinstance(exc, user_errors())
            if user and not self.agreed:
                self.agree(exc)
            if user or isinstance(exc, DivergenceError):
                code = report_error("train", exc, "" if self.root else f" (rank {self.rank})")
            else:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            self.comm.Abort(code)

    def allreduce_grads(self, grads: list[dict]) -> None:
        """Replace every rank's gradients (per layer ``{name: array}``) by their sum over
        the ranks, in place: one flat buffer, one Allreduce (NCCL with CuPy)."""
        arrays = [layer[k] for layer in grads for k in sorted(layer)]
        sizes = [int(a.size) for a in arrays]
        if self._buf is None or self._buf.size != sum(sizes) or self._buf.dtype != arrays[0].dtype:
            self._buf = self.xp.empty(sum(sizes), dtype=arrays[0].dtype)     # (P,)
        buf, offsets = self._buf, np.cumsum([0] + sizes)
        for a, lo, hi in zip(arrays, offsets[:-1], offsets[1:]):
            buf[lo:hi] = a.ravel()
        if self._nccl is None:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        else:   # unverified: see the module docstring
            nccl, comm = self._nccl
            kind = nccl.NCCL_FLOAT64 if buf.dtype == np.float64 else nccl.NCCL_FLOAT32
            comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kind, nccl.NCCL_SUM,
                           self.xp.cuda.get_current_stream().ptr)
        for a, lo, hi in zip(arrays, offsets[:-1], offsets[1:]):
            a[...] = buf[lo:hi].reshape(a.shape)

    def sum_counts(self, *values: float) -> list[float]:
        """The sums over the ranks of a few host numbers (loss sums, counts), in float64."""
        buf = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf.tolist()

    def dropout_rng(self, seed: int, epoch: int, batch: int) -> np.random.Generator:
        """This rank's generator for the dropout masks of one step (see the module docstring)."""
        return np.random.default_rng([seed, 2, epoch, batch, self.rank])


__all__ = ["DataParallel"]
