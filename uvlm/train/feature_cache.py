"""A frozen encoder's stage features, computed once per volume for Stage 3.

With Frz the encoder's output for a volume never changes during Stage 3 (no augmentation, no dropout, no
batch statistics: instance norm only), so running it every step is wasted work. Computing the stages the
injector reads once per volume gives the decoder several times more steps in the same time, with the same
losses up to float rounding. When the features would not fit `max_gb` (large grids, many volumes), the
cache is not built and Stage 3 runs the encoder every step as before.
"""

from __future__ import annotations

import logging
import time

import torch

from uvlm.data.volumes import VolumeDataset, collate
from uvlm.train.runtime import autocast

log = logging.getLogger(__name__)


class FeatureCache:
    """{stage: (N, C, D, H, W)} float32 features of N volumes, handed out as encoder skips per batch."""

    def __init__(self, stages: dict[int, torch.Tensor], n_stages: int) -> None:
        self.stages = stages
        self.n_stages = n_stages

    def __len__(self) -> int:
        return len(next(iter(self.stages.values())))

    def skips(self, idx: list[int], device: torch.device) -> list[torch.Tensor | None]:
        """The encoder's skip list for volumes idx: used stages (B, C, D, H, W) on device, others None."""
        index = torch.tensor(idx, dtype=torch.long)
        return [self.stages[s][index].to(device) if s in self.stages else None for s in range(self.n_stages)]

    @classmethod
    @torch.no_grad()
    def build(cls, encoder: torch.nn.Module, data: VolumeDataset, stages: list[int], device: torch.device,
              batch_size: int, max_gb: float, name: str = "features") -> FeatureCache | None:
        """Run the (frozen, eval-mode) encoder once over `data`; None when the cache would exceed max_gb."""
        if max_gb <= 0 or len(data) == 0:
            return None
        was_training = encoder.training
        encoder.eval()
        parts: dict[int, list[torch.Tensor]] = {s: [] for s in stages}
        n_stages, start, last_log = 0, time.monotonic(), time.monotonic()
        for first in range(0, len(data), batch_size):
            idx = range(first, min(first + batch_size, len(data)))
            with autocast(device):
                skips = encoder(collate([data[i] for i in idx])["image"].to(device))
            n_stages = len(skips)
            for s in stages:
                parts[s].append(skips[s].float().cpu())
            if first == 0:
                per_volume = sum(skips[s][0].numel() for s in stages) * 4
                need_gb = per_volume * len(data) / 1e9
                if need_gb > max_gb:
                    log.info("%s: a feature cache would take %.1f GB (> stage3.feature_cache_gb %.1f); the encoder "
                             "runs every step instead", name, need_gb, max_gb)
                    encoder.train(was_training)
                    return None
            done = idx.stop
            if time.monotonic() - last_log > 30 or done == len(data):
                rate = done / max(time.monotonic() - start, 1e-9)
                log.info("%s: encoded %d/%d volumes, %.1f volumes/s, ETA %.0f s", name, done, len(data), rate,
                         (len(data) - done) / max(rate, 1e-9))
                last_log = time.monotonic()
        encoder.train(was_training)
        return cls({s: torch.cat(parts[s]) for s in stages}, n_stages)
