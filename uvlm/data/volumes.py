"""Preprocessed volumes (+ labels / report text) as a torch Dataset for Stages 2 and 3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from uvlm.constants import CT_RATE_LABELS
from uvlm.shards import read_shard_indexes


def load_split(manifest_path: str | Path, shard_dirs: list[str | Path], split: str) -> pd.DataFrame:
    """Manifest rows of one split that have a preprocessed array, with its absolute path."""
    manifest = pd.read_parquet(manifest_path)
    index = read_shard_indexes(shard_dirs)
    if index.empty:
        raise ValueError("no preprocessed volumes found in the given shard folders")
    index["array_path"] = [str(Path(d) / f) for d, f in zip(index["shard_dir"], index["array_file"], strict=True)]
    rows = manifest.merge(index[["volume_name", "array_path"]], on="volume_name")
    rows = rows[rows["split"] == split].sort_values("volume_name").reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no preprocessed volumes in split '{split}'")
    return rows


class VolumeDataset(Dataset):
    """Item = {"image": (1, D, H, W) float32, "labels": (18,) float32, "text": str, "name": str}."""

    def __init__(self, rows: pd.DataFrame):
        self.paths = rows["array_path"].tolist()
        self.names = rows["volume_name"].tolist()
        self.texts = rows["report_text"].tolist()
        self.labels = rows[list(CT_RATE_LABELS)].to_numpy(dtype=np.float32)  # (N, 18)

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


def collate(items: list[dict]) -> dict:
    return {"image": torch.stack([it["image"] for it in items]),
            "labels": torch.stack([it["labels"] for it in items]),
            "text": [it["text"] for it in items], "name": [it["name"] for it in items]}
