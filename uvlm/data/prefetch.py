"""Training batches loaded ahead in worker processes, so the GPU does not wait for the disk.

A paper-scale volume (192 x 256 x 256 float16, 25 MB) takes longer to read and convert than a fraction of
a GPU step (benchmarks/results/loading_cpu.md); loaded in the training process, every step waits for it.
`Prefetched` sits between the training loop (uvlm/train/fit.py) and its index iterator: fit() iterates it
for the index lists (the same lists in the same order as the wrapped iterator) and micro_loss calls
`get(indices)` for the loaded batch, which `workers` processes (a torch DataLoader fed the same lists)
have read ahead. Loading is pure (no random numbers: augmentation draws stay in the training process),
so the batches, and the weights, are the same as with workers=0 (in-process loading).

Loading starts at the first get(), with the batch asked for: the batches a resume replays (next()
without get()) are never read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate


def collate_shared(items: list[dict]) -> dict:
    """uvlm.data.volumes.collate with the tensors stacked by torch's default_collate, which in a worker process
    stacks straight into shared memory: the batch reaches the training process without one more copy."""
    return {"image": default_collate([it["image"] for it in items]),    # (B, 1, D, H, W)
            "labels": default_collate([it["labels"] for it in items]),  # (B, L)
            "text": [it["text"] for it in items], "name": [it["name"] for it in items]}


class Prefetched:
    """Index batches for fit() and, through get(), their collated data, loaded `depth` batches ahead per worker."""

    def __init__(self, data: Dataset, batches: Iterator[list[int]], workers: int = 0,
                 collate_fn: Callable[[list], dict] = collate_shared, pin_memory: bool = False, depth: int = 2):
        if workers < 0:
            raise ValueError(f"loader workers must be >= 0, got {workers}")
        self.data, self.workers, self.collate_fn = data, workers, collate_fn
        self.pin_memory, self.depth = pin_memory, depth
        self._source = batches
        self._for_fit: deque[list[int]] = deque()     # pulled for the loader, not yet handed to fit()
        self._for_loader: deque[list[int]] = deque()  # handed to fit(), not yet sent to the loader
        self._last: list[int] | None = None           # the index list fit() holds now
        self._loading: Iterator[dict] | None = None

    def __iter__(self) -> Prefetched:
        return self

    def __next__(self) -> list[int]:
        if self._loading is None or not self._for_fit:
            idx = list(next(self._source))
            if self._loading is not None:  # the loader has not reached it yet: it must see it too
                self._for_loader.append(idx)
        else:
            idx = self._for_fit.popleft()
        self._last = idx
        return idx

    def _pull(self) -> Iterator[list[int]]:
        """The loader's batch sampler (run in this process): fit()'s lists first, then the source's, which
        are queued for fit() in the order the loader reads them."""
        while True:
            if self._for_loader:
                yield self._for_loader.popleft()
            else:
                idx = list(next(self._source))
                self._for_fit.append(idx)
                yield idx

    def get(self, idx: list[int]) -> dict:
        """The collated batch of `idx`, which must be the index list fit() took last."""
        if list(idx) != self._last:
            raise ValueError(f"batch {list(idx)} asked for, but the index iterator handed out {self._last}")
        if self.workers == 0:
            return self.collate_fn([self.data[i] for i in idx])
        if self._loading is None:  # first batch trained on: start from it (a resume skipped the ones before)
            self._for_loader.append(self._last)
            # a private generator for the workers' base seed: the global RNG stays as with workers=0
            self._loading = iter(DataLoader(self.data, batch_sampler=self._pull(), num_workers=self.workers,
                                            collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                                            prefetch_factor=self.depth, generator=torch.Generator()))
        return next(self._loading)

    def close(self) -> None:
        """Stop the worker processes (also done when the object is collected)."""
        loading, self._loading = self._loading, None
        if loading is not None and hasattr(loading, "_shutdown_workers"):
            loading._shutdown_workers()

    def __enter__(self) -> Prefetched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
