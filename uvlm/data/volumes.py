"""Preprocessed volumes (+ labels / report text) as a torch Dataset for Stages 2 and 3."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from uvlm.data.manifest import NEEDS, label_set, split_leaks, usable
from uvlm.shards import read_shard_indexes

log = logging.getLogger(__name__)


def load_split(manifest_path: str | Path, shard_dirs: list[str | Path], split: str,
               needs: str | None = None) -> pd.DataFrame:
    """Manifest rows of one split that have a preprocessed array, with its absolute path.

    needs: a uvlm.data.manifest.NEEDS key ("labels" for Stage 2, "report" for Stage 3): volumes without known
    labels, or with an empty report, are left out and counted in the log, never trained on as all-negative or
    empty targets."""
    manifest = full = pd.read_parquet(manifest_path)
    if needs is not None:
        has = usable(manifest, needs)
        lacking = manifest[~has & (manifest["split"] == split)]
        if len(lacking):
            log.warning("split %s: %d volumes left out for lacking %s (%s), e.g. %s", split, len(lacking), needs,
                        " and ".join(NEEDS[needs]), lacking["volume_name"].tolist()[:3])
        manifest = manifest[has]
    index = read_shard_indexes(shard_dirs)
    if index.empty:
        raise ValueError("no preprocessed volumes found in the given shard folders")
    leaks = split_leaks(full, index)
    if len(leaks):  # the same scan under names in two splits: neither copy is used
        log.warning("%d volumes left out as split leaks (same voxels in two splits), e.g. %s", len(leaks),
                    leaks["reason"].tolist()[:2])
        index = index[~index["volume_name"].isin(set(leaks["case"]))]
    index["array_path"] = [str(Path(d) / f) for d, f in zip(index["shard_dir"], index["array_file"], strict=True)]
    rows = manifest.merge(index[["volume_name", "array_path"]], on="volume_name")
    rows = rows[rows["split"] == split].sort_values("volume_name").reset_index(drop=True)
    rows.attrs = dict(full.attrs)  # the label set travels with the rows (a merge does not promise to keep it)
    if rows.empty:
        raise ValueError(f"no preprocessed volumes in split '{split}'")
    return rows


class VolumeDataset(Dataset):
    """Item = {"image": (1, D, H, W) float32, "labels": (L,) float32, "text": str, "name": str}, with the
    L labels of the manifest's label set (18 for CT-RATE, 3 for AbdomenAtlas)."""

    def __init__(self, rows: pd.DataFrame):
        self.label_set, self.label_names = label_set(rows)
        self.paths = rows["array_path"].tolist()
        self.names = rows["volume_name"].tolist()
        self.texts = rows["report_text"].tolist()
        self.labels = rows[self.label_names].to_numpy(dtype=np.float32)  # (N, L)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        arr = np.load(self.paths[i], mmap_mode="r")  # (D, H, W) float16
        return {"image": torch.from_numpy(np.asarray(arr, dtype=np.float32))[None],
                "labels": torch.tensor(self.labels[i]), "text": self.texts[i], "name": self.names[i]}


def random_batches(n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> Iterator[list[int]]:
    """Endless shuffled index batches; each rank draws a disjoint slice of every epoch's permutation."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)[rank::world]
        for start in range(0, len(perm) - batch_size + 1, batch_size):
            yield perm[start:start + batch_size].tolist()
        if len(perm) < batch_size:  # tiny datasets: sample with replacement
            yield rng.choice(n, size=batch_size).tolist()


def balanced_batches(labels: np.ndarray, batch_size: int, seed: int, rank: int = 0,
                     world: int = 1) -> Iterator[list[int]]:
    """Endless class-balanced batches (drawn with replacement).

    A volume's weight is 1 / frequency of its rarest positive label (volumes without findings count
    as one more class), so every finding, however rare, is drawn about equally often. Ranks draw
    from independent streams.
    """
    labels = np.asarray(labels) > 0  # (N, C)
    n = len(labels)
    freq = np.concatenate([labels.sum(0), [(~labels.any(1)).sum()]]).astype(float)  # (C + 1,)
    member = np.concatenate([labels, ~labels.any(1, keepdims=True)], axis=1)  # (N, C + 1)
    inv = np.where(member, 1.0 / np.maximum(freq, 1.0), 0.0)
    weights = inv.max(1)
    weights /= weights.sum()
    rng = np.random.default_rng([seed, rank])
    while True:
        yield rng.choice(n, size=batch_size, replace=True, p=weights).tolist()


def collate(items: list[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]),
            "labels": torch.stack([it["labels"] for it in items]),
            "text": [it["text"] for it in items], "name": [it["name"] for it in items]}
