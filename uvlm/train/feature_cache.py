"""A frozen encoder's visual features, computed once per volume and stored for Stage 3 and generation.

With Frz (most of the paper's rows) the encoder's output for a volume never changes during Stage 3 (no
augmentation, no dropout, no batch statistics: instance norm only), so running it every step is wasted
work. What the injector reads is stored instead: every encoder stage aligned to the reference stage's token
count ({stage: (N_ref, C_s)}, `uvlm.models.injection.align_stages`: parameter-free, so caching it is exact).
At the paper's grid that is 384 x 1,120 values per volume (0.9 MB in bf16, against 25 MB for the
preprocessed volume and about 1 GB for the raw stages). The folder is keyed on the encoder that made it (a
hash of its weights) and shared by every frozen experiment that starts from that Stage 1/2 model with the
same visual tokens (workflow rule `stage3_features`); Stage 3 and generation refuse features whose hash
is not their encoder's. When the features would exceed `stage3.feature_cache_gb` (or it is 0), the folder
holds only features.json saying so, and Stage 3 and generation run the encoder as before.

Layout: features.json (encoder hash, reference stage, tokens, channels, dtype, size), index.parquet
(volume_name -> chunk, row) and chunk_NNNNN.safetensors ({"stage<s>": (n, N_ref, C_s)}, in the dtype the
encoder computed them in, so a cached step equals a recomputed one), written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from uvlm.data.volumes import VolumeDataset, collate
from uvlm.io import atomic_dir, write_json
from uvlm.models.injection import align_stages
from uvlm.train.runtime import autocast

log = logging.getLogger(__name__)

META = "features.json"
INDEX = "index.parquet"
CHUNK_VOLUMES = 256  # volumes per chunk file: bounded memory while writing, few files at 50,000 volumes


def encoder_hash(encoder: torch.nn.Module) -> str:
    """A short hash of the encoder's weights: the key that ties features to the model that made them."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def _volumes(datasets: list[VolumeDataset]) -> tuple[list[str], list[tuple[VolumeDataset, int]]]:
    """Every volume of the datasets once (by name), in order: names and (dataset, index) to read it by."""
    names, where, seen = [], [], set()
    for data in datasets:
        for i, name in enumerate(data.names):
            if name not in seen:
                seen.add(name)
                names.append(name)
                where.append((data, i))
    return names, where


@torch.no_grad()
def write_features(encoder: torch.nn.Module, datasets: list[VolumeDataset], ref_stage: int, out_dir: str | Path,
                   device: torch.device, batch_size: int, max_gb: float, name: str = "features",
                   mixed_precision: bool = True) -> dict:
    """Run the frozen (eval-mode) encoder once over every volume of `datasets`; write the folder; return
    features.json's content. Over max_gb (or max_gb 0), only features.json is written: stored false, and why.

    mixed_precision: under training's autocast (bf16 on CUDA), as Stage 3 would compute them; False for
    generation, which runs the encoder in full precision."""
    names, where = _volumes(datasets)
    was_training = encoder.training
    encoder.eval()
    meta = {"encoder_hash": encoder_hash(encoder), "reference_stage": ref_stage, "volumes": len(names),
            "stored": max_gb > 0, "reason": "" if max_gb > 0 else "stage3.feature_cache_gb is 0"}
    with atomic_dir(out_dir) as partial:
        chunk: dict[int, list[torch.Tensor]] = {}
        rows, n_chunk, in_chunk, start, last_log = [], 0, 0, time.monotonic(), time.monotonic()
        for first in range(0, len(names) if meta["stored"] else 0, batch_size):
            part = where[first:first + batch_size]
            with autocast(device) if mixed_precision else contextlib.nullcontext():
                skips = encoder(collate([d[i] for d, i in part])["image"].to(device))
                aligned = align_stages(list(skips), ref_stage)  # {stage: (B, N_ref, C_s)}
            if first == 0:
                per_volume = sum(t[0].numel() * t.element_size() for t in aligned.values())
                meta.update(reference_stage=ref_stage % len(skips), tokens=aligned[ref_stage % len(skips)].shape[1],
                            channels=[aligned[s].shape[2] for s in sorted(aligned)],
                            dtype=str(aligned[0].dtype).removeprefix("torch."), bytes_per_volume=per_volume,
                            gb=per_volume * len(names) / 1e9)
                if meta["gb"] > max_gb:
                    log.info("%s: %.1f GB of features (> stage3.feature_cache_gb %.1f); Stage 3 runs the encoder "
                             "every step instead", name, meta["gb"], max_gb)
                    meta.update(stored=False, reason=f"{meta['gb']:.1f} GB > stage3.feature_cache_gb {max_gb:g}")
                    break
            for s, t in aligned.items():
                chunk.setdefault(s, []).append(t.cpu())
            rows += [{"volume_name": names[first + k], "chunk": n_chunk, "row": in_chunk + k}
                     for k in range(len(part))]
            in_chunk += len(part)
            done = first + len(part)
            if in_chunk >= CHUNK_VOLUMES or done == len(names):
                save_file({f"stage{s}": torch.cat(ts).contiguous() for s, ts in chunk.items()},
                          str(partial / f"chunk_{n_chunk:05d}.safetensors"))
                chunk, n_chunk, in_chunk = {}, n_chunk + 1, 0
            if time.monotonic() - last_log > 30 or done == len(names):
                rate = done / max(time.monotonic() - start, 1e-9)
                log.info("%s: encoded %d/%d volumes, %.1f volumes/s, ETA %.0f s", name, done, len(names), rate,
                         (len(names) - done) / max(rate, 1e-9))
                last_log = time.monotonic()
        if meta["stored"]:
            pd.DataFrame(rows, columns=["volume_name", "chunk", "row"]).to_parquet(partial / INDEX, index=False)
        write_json(meta, partial / META)
    encoder.train(was_training)
    return json.loads((Path(out_dir) / META).read_text())


class FeatureStore:
    """A features folder, read lazily: each batch reads its rows from the memory-mapped chunk files."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / META).is_file():
            raise FileNotFoundError(f"{self.folder}: not a features folder (no {META}); rerun stage3_features")
        self.meta = json.loads((self.folder / META).read_text())
        self.usable = bool(self.meta["stored"])
        index = pd.read_parquet(self.folder / INDEX) if self.usable else pd.DataFrame(columns=["volume_name"])
        self.where = {n: (int(c), int(r)) for n, c, r in index.itertuples(index=False)} if self.usable else {}
        self._files: dict[int, object] = {}

    def check(self, encoder: torch.nn.Module, ref_stage: int) -> None:
        """Refuse features made by another encoder or for other visual tokens (a stale or mismatched folder)."""
        got = encoder_hash(encoder)
        if self.usable:  # stages counted from the shallowest, as stored
            ref_stage %= len(self.meta["channels"])
        if got != self.meta["encoder_hash"] or (self.usable and ref_stage != self.meta["reference_stage"]):
            raise ValueError(f"{self.folder}: features of encoder {self.meta['encoder_hash']} (reference stage "
                             f"{self.meta['reference_stage']}), but this model's encoder is {got} (reference stage "
                             f"{ref_stage}); rebuild them (snakemake reruns stage3_features)")

    def view(self, names: list[str]) -> FeatureView:
        missing = [n for n in names if n not in self.where]
        if missing:
            raise KeyError(f"{self.folder}: no features for {len(missing)} volumes, e.g. {missing[:3]}")
        return FeatureView(self, [self.where[n] for n in names])

    def read(self, chunk: int, row: int) -> dict[int, torch.Tensor]:
        if chunk not in self._files:
            self._files[chunk] = safe_open(str(self.folder / f"chunk_{chunk:05d}.safetensors"), framework="pt")
        f = self._files[chunk]
        stages = f.keys()  # ["stage0", ...] (a safe_open handle is not iterable)
        return {int(k.removeprefix("stage")): f.get_slice(k)[row:row + 1] for k in stages}


class FeatureView:
    """The features of one list of volumes (a VolumeDataset's order), handed out per batch of indices."""

    def __init__(self, store: FeatureStore, where: list[tuple[int, int]]) -> None:
        self.store = store
        self.where = where

    def __len__(self) -> int:
        return len(self.where)

    def aligned(self, idx: list[int], device: torch.device) -> dict[int, torch.Tensor]:
        """{stage: (B, N_ref, C_s)} of volumes idx, on device."""
        parts = [self.store.read(*self.where[i]) for i in idx]
        return {s: torch.cat([p[s] for p in parts]).to(device) for s in parts[0]}
