"""Prefetched training batches (uvlm/data/prefetch.py) and Stage 2's augmentation split into draw + apply:
the same batches, numbers and weights as in-process loading, and a resume reads no skipped batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import ENC, assert_same, dataset, interrupt_at, s2cfg, weights

from uvlm.data.prefetch import Prefetched
from uvlm.data.volumes import VolumeDataset, random_batches
from uvlm.train.stage2 import apply_augment, augment, draw_augment, train_stage2


class LoggedDataset(VolumeDataset):
    """Appends every index it reads to a file (worker processes included)."""

    def __init__(self, data: VolumeDataset, log: Path):
        self.__dict__.update(data.__dict__)
        self.log = log

    def __getitem__(self, i: int) -> dict:
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return super().__getitem__(i)


def read_log(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.is_file() else []


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_batches_are_the_index_iterators_batches_read_from_disk(tmp_path: Path, workers: int) -> None:
    data = dataset(tmp_path / "d", n=10)
    expected = random_batches(10, 3, seed=4)
    rng_before = torch.get_rng_state()
    with Prefetched(data, random_batches(10, 3, seed=4), workers) as loader:
        for _ in range(9):  # more batches than the workers read ahead (2 per worker)
            idx = next(loader)
            assert idx == next(expected)
            batch = loader.get(idx)
            # independent of VolumeDataset: the arrays as written, in float32, in the batch's order
            want = np.stack([np.load(data.paths[i]).astype(np.float32) for i in idx])[:, None]
            assert batch["image"].dtype == torch.float32 and torch.equal(batch["image"], torch.from_numpy(want))
            assert torch.equal(batch["labels"], torch.from_numpy(data.labels[idx]))
            assert batch["name"] == [data.names[i] for i in idx]
            assert batch["text"] == [data.texts[i] for i in idx]
    # the workers' seed is drawn from a private generator: dropout etc. see the same global RNG as workers=0
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_get_refuses_a_batch_other_than_the_one_handed_out(tmp_path: Path) -> None:
    data = dataset(tmp_path / "d", n=4)
    with Prefetched(data, iter([[0, 1], [2, 3]]), workers=2) as loader:
        assert next(loader) == [0, 1]
        with pytest.raises(ValueError, match="asked for"):
            loader.get([2, 3])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resume_reads_no_skipped_batch(tmp_path: Path, workers: int) -> None:
    """fit() replays next() for the steps before its checkpoint without training on them: those volumes are
    never read; loading starts at the first batch trained on, and reads ahead from there only."""
    log = tmp_path / "reads.txt"
    data = LoggedDataset(dataset(tmp_path / "d", n=20), log)
    plan = [[2 * k, 2 * k + 1] for k in range(10)]
    with Prefetched(data, iter(plan), workers) as loader:
        for k in range(3):  # the replay of a resume at step 3
            assert next(loader) == plan[k]
        assert read_log(log) == []
        for k in range(3, 6):
            idx = next(loader)
            assert idx == plan[k] and loader.get(idx)["name"] == [data.names[i] for i in plan[k]]
    reads = read_log(log)
    assert set(range(6, 12)) <= set(reads)   # the batches trained on
    assert min(reads) == 6                   # none of the three skipped ones
    assert len(reads) == len(set(reads))     # each volume read once
    if workers:  # read ahead: at most `depth` batches per worker beyond the last one trained on
        assert max(reads) <= 11 + 2 * 2 * workers


def test_stage2_weights_do_not_depend_on_the_loader_workers(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Augmentation on, balanced sampling, accumulation: 0 and 2 workers give the same weights, and so does
    a run killed and resumed with 2 workers."""
    train, holdout = dataset(tmp_path / "d"), dataset(tmp_path / "v", 4, seed=1)
    cfg = s2cfg(steps=4, accum_steps=2, augment=True)
    train_stage2(train, holdout, None, None, ENC, cfg, tmp_path / "w0", "cpu", 1, 0, loader_workers=0)
    train_stage2(train, holdout, None, None, ENC, cfg, tmp_path / "w2", "cpu", 1, 0, loader_workers=2)
    assert_same(weights(tmp_path / "w0"), weights(tmp_path / "w2"))
    with monkeypatch.context() as m:
        interrupt_at(m, 4)
        with pytest.raises(KeyboardInterrupt):
            train_stage2(train, holdout, None, None, ENC, cfg, tmp_path / "r2", "cpu", 1, 0, loader_workers=2)
    train_stage2(train, holdout, None, None, ENC, cfg, tmp_path / "r2", "cpu", 1, 0, loader_workers=2)
    assert_same(weights(tmp_path / "w0"), weights(tmp_path / "r2"))
    # and the weights moved: the comparison is not between two untrained models
    untrained = s2cfg(steps=4, accum_steps=2, augment=True, lr=0.0)
    train_stage2(train, holdout, None, None, ENC, untrained, tmp_path / "lr0", "cpu", 1, 0)
    assert not torch.equal(weights(tmp_path / "w0")["head.queries"], weights(tmp_path / "lr0")["head.queries"])


def previous_augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stage 2's augment() before the split into draw + apply, verbatim: the reference."""
    b = images.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None, None], images.flip(-1), images)
    shifts = torch.randint(-2, 3, (3,), generator=gen).tolist()
    images = torch.roll(images, shifts=shifts, dims=(2, 3, 4))
    scale = 1 + 0.1 * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1)
    return images * scale


def test_augment_draw_and_apply_equal_the_previous_formula_bitwise() -> None:
    images = torch.randn(3, 1, 5, 6, 7, generator=torch.Generator().manual_seed(9))
    flips = set()
    for seed in range(12):
        new, old = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for b in (1, 3):
            assert torch.equal(augment(images[:b], new), previous_augment(images[:b], old)), (seed, b)
            assert torch.equal(new.get_state(), old.get_state())  # the same draws, in the same order
        d = draw_augment(3, torch.Generator().manual_seed(seed))
        flips.update(d.flip.tolist())
        assert torch.equal(apply_augment(images, d), previous_augment(images, torch.Generator().manual_seed(seed)))
    assert flips == {True, False}  # both branches of the flip were compared
    # a flip mirrors the last (left-right) axis of that sample only
    d = draw_augment(2, torch.Generator().manual_seed(0))
    d.flip, d.shifts, d.scale = torch.tensor([True, False]), [0, 0, 0], torch.ones(2, 1, 1, 1, 1)
    out = apply_augment(images[:2], d)
    assert torch.equal(out[0], images[0, ..., torch.arange(6, -1, -1)]) and torch.equal(out[1], images[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_applied_on_the_gpu_equals_the_cpu() -> None:
    images = torch.randn(2, 1, 16, 24, 24)
    d = draw_augment(2, torch.Generator().manual_seed(3))
    assert torch.equal(apply_augment(images.cuda(), d).cpu(), apply_augment(images, d))
