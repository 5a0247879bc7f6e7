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
other ranks through :meth:`DataParallel.agree`. The same collective compares the
ranks' configs (a digest of every field but ``out`` and ``progress``, which only
rank 0 uses): ranks started with other arguments (``--lr`` on one of them, another
``--network``, which hung in the first Allreduce) stop before the first step with
one line naming the fields, exit status 2 on every rank. A stop request (SIGINT, SIGTERM)
is shared after every step (:meth:`DataParallel.check_stop`), so a signal to any
rank stops all of them after the same step; the same Allreduce agrees on the
periodic save of the epoch so far, and ``interrupted.h5`` (written by rank 0)
holds the epoch's loss and counts summed over the ranks.

Nothing in a checkpoint or an ``interrupted.h5`` depends on N (weights, optimizer
moments, the run's generator, the summed counts), so a run resumes with any N, or
without MPI. Two caveats:

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
import hashlib
import importlib
import json
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

    def agree(self, error: BaseException | None = None, config=None) -> None:
        """Collective, called by every rank once its setup is done (``error`` None, and
        its ``config``, a TrainConfig) or has failed with a user error (``error``): rank 0
        alone checks and locks the run folder, so the others must learn of its refusal
        instead of waiting for it in the first Allreduce. If any rank failed, every rank
        leaves: the first failed rank raises its error (one line, exit status 2), the
        others exit 2 quietly. The same allgather carries each rank's config digest
        (:func:`config_digest`): if they differ, rank 0 names the differing fields (one
        line) and every rank exits 2."""
        digest = config_digest(config) if config is not None else None
        gathered = self.comm.allgather((error is not None, digest))
        self.agreed = True
        failed = [f for f, _ in gathered]
        if any(failed):
            if error is not None and self.rank == failed.index(True):
                raise error
            raise SystemExit(EXIT_USAGE)
        if len({d for _, d in gathered}) > 1:
            self._refuse_configs(config, [d for _, d in gathered])

    def _refuse_configs(self, config, digests: list) -> None:
        """Every rank leaves with exit status 2; rank 0 says which ranks differ from it
        and in which fields (a second collective, on this error path only)."""
        from ..commandline import report_error
        configs = self.comm.gather(_compared(config), root=0)
        if self.root:
            ranks = [r for r, d in enumerate(digests) if d != digests[0]]
            fields = sorted({k for r in ranks for k in set(configs[0]) | set(configs[r])
                             if configs[r].get(k) != configs[0].get(k)})
            shown = ", ".join(f"{k} {configs[ranks[0]].get(k)!r} (rank 0: {configs[0].get(k)!r})"
                              for k in fields[:4])
            report_error("train", ConfigError(
                f"data-parallel ranks {ranks} were given another config than rank 0: {shown}"
                f"{', ...' if len(fields) > 4 else ''}; every rank must get the same arguments"))
            sys.stderr.flush()
        raise SystemExit(EXIT_USAGE)

    def check_stop(self, stop, due: bool = False) -> bool:
        """``stop.check()`` (a :class:`~snnsim.training.runfolder.StopRequest`) made
        collective: a signal reaches the ranks at different moments, or only one of
        them, so every rank stops after the same step if any rank was asked to (the
        largest signal number wins: SIGTERM over SIGINT); the stop is then marked
        ``agreed``, so that the ranks may take part in one more collective (the epoch so
        far, summed for interrupted.h5). The same Allreduce agrees on ``due`` (a save
        of the epoch so far, due on any rank's clock): returns it for every rank."""
        from .runfolder import stop_exception
        flags = np.array([int(stop.signum or 0), int(bool(due))], dtype=np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, flags, op=self.MPI.MAX)
        signum = int(flags[0])
        if signum:     # (the agreed value only: a signal during the Allreduce waits a step)
            stop.requested, stop.signum, stop.agreed = True, signum, True
            raise stop_exception(signum)
        return bool(flags[1])

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


#: Config fields only rank 0 uses (the run folder, the progress bar; a default ``out``
#: holds the second each rank resolved it in), left out of the comparison.
RANK0_FIELDS = ("out", "progress")


def _compared(config) -> dict:
    """The config's fields the ranks must agree on, as JSON-like values."""
    return {k: v for k, v in config.to_dict().items() if k not in RANK0_FIELDS}


def config_digest(config) -> str:
    """SHA-256 of the config's compared fields (:func:`_compared`), canonical JSON."""
    text = json.dumps(_compared(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["DataParallel", "config_digest"]
