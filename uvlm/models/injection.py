"""Visual tokens and multi-layer visual injection: route U-Net encoder stages to language-model layers.

Every used encoder stage s is brought to the reference stage's token count N_ref (``align_to_reference``)
and projected to the LM width by its own projection (LayerNorm, Linear to 2 x width, GELU, Linear, LayerNorm,
as the authors' code). The reference stage's projection is the visual input: the N_ref tokens between
vision_start and vision_end. With skip-connection injection (mode ``multi_layer``) every mapped stage's
projection is also added to the visual positions of LM layer ``stage_to_layer[s]``, after that layer's
attention and before its MLP (where the authors' code adds it); deep stages (global semantics) feed
early layers, shallow stages (fine detail) later ones. Mode ``input_only`` (SC off) has no injection.

Stage indices follow the encoder's skip list: 0 = shallowest (full resolution), -1 / n-1 = deepest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("multi_layer", "input_only")


@dataclass
class InjectionConfig:
    stage_channels: list[int]  # channels per encoder stage, shallow -> deep ([32, 64, ..., 320])
    lm_dim: int  # width of the language decoder
    # encoder stage -> LM layer. None: deepest -> 0, next shallower -> 1, ... while layers last.
    stage_to_layer: dict[int, int] | None = None
    reference_stage: int = -1  # stage whose D*H*W defines N_ref and makes the visual tokens (paper: deepest, 384)
    mode: str = "multi_layer"  # or "input_only": visual tokens at the input, no injection (SC off)

    @classmethod
    def from_dict(cls, d: dict) -> InjectionConfig:
        """From config.json, where JSON has turned the stage_to_layer keys into strings."""
        d = dict(d)
        if d.get("stage_to_layer") is not None:
            d["stage_to_layer"] = {int(k): int(v) for k, v in d["stage_to_layer"].items()}
        return cls(**d)

    def ref_index(self) -> int:
        return _norm_stage(self.reference_stage, len(self.stage_channels))

    def resolve(self, n_layers: int) -> dict[int, int]:
        """The effective {stage (>= 0): layer} mapping for an LM with ``n_layers`` layers."""
        n_stages = len(self.stage_channels)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "input_only":
            if self.stage_to_layer is not None:
                raise ValueError("stage_to_layer must be None in mode 'input_only'")
            return {}
        if self.stage_to_layer is None:
            deep_first = range(n_stages - 1, -1, -1)
            return {s: i for i, s in enumerate(deep_first) if i < n_layers}
        mapping = {_norm_stage(int(s), n_stages): int(layer) for s, layer in self.stage_to_layer.items()}
        for s, layer in mapping.items():
            if not 0 <= layer < n_layers:
                raise ValueError(f"stage {s} mapped to layer {layer}, LM has {n_layers} layers")
        return mapping


def _norm_stage(s: int, n_stages: int) -> int:
    if not -n_stages <= s < n_stages:
        raise ValueError(f"stage {s} out of range for {n_stages} stages")
    return s % n_stages


def align_to_reference(feat: Tensor, ref_spatial: tuple[int, int, int]) -> Tensor:
    """Bring one stage to the reference token count N_ref = prod(ref_spatial).

    feat: (B, C, D, H, W) -> (B, N_ref, C), tokens in row-major (D, H, W) order.
    Rule (paper eq. 4, made explicit for odd shapes):
      * every axis >= the reference axis (a shallower stage, or the reference itself):
        adaptive average pooling to ``ref_spatial`` (identity for the reference stage);
      * otherwise, if the stage has <= N_ref tokens (a deeper stage): flatten and append zero
        tokens at the end up to N_ref, so the padding carries no signal;
      * otherwise (more tokens but some axis smaller, e.g. anisotropic strides): adaptive average
        pooling anyway; that axis is then repeated rather than averaged.
    """
    b, c = feat.shape[:2]
    spatial = tuple(feat.shape[2:])
    n_ref = ref_spatial[0] * ref_spatial[1] * ref_spatial[2]
    n = spatial[0] * spatial[1] * spatial[2]
    if all(s >= r for s, r in zip(spatial, ref_spatial, strict=True)) or n > n_ref:
        pooled = F.adaptive_avg_pool3d(feat, ref_spatial)  # (B, C, *ref_spatial)
        return pooled.flatten(2).transpose(1, 2)  # (B, N_ref, C)
    tokens = feat.flatten(2).transpose(1, 2)  # (B, n, C)
    return torch.cat([tokens, tokens.new_zeros(b, n_ref - n, c)], dim=1)  # (B, N_ref, C)


def align_stages(skips: list[Tensor], ref_stage: int, stages: list[int] | None = None) -> dict[int, Tensor]:
    """{stage: (B, N_ref, C_s)}: `stages` (default all) aligned to the reference stage's token count. It has no
    weights, so a frozen encoder's aligned stages can be computed once and stored (uvlm.train.feature_cache)."""
    ref_spatial = tuple(skips[ref_stage].shape[2:])
    return {s: align_to_reference(skips[s], ref_spatial) for s in (range(len(skips)) if stages is None else stages)}


class StageProjection(nn.Sequential):
    """(B, N, C) stage tokens -> (B, N, lm_dim): LayerNorm, Linear to 2 x lm_dim, GELU, Linear, LayerNorm."""

    def __init__(self, channels: int, lm_dim: int) -> None:
        super().__init__(nn.LayerNorm(channels), nn.Linear(channels, 2 * lm_dim), nn.GELU(),
                         nn.Linear(2 * lm_dim, lm_dim), nn.LayerNorm(lm_dim, eps=1e-6))
        for m in self:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


class VisualFeatures(NamedTuple):
    tokens: Tensor                 # (B, N_ref, lm_dim): the visual input tokens
    injected: dict[int, Tensor]    # {LM layer: (B, N_ref, lm_dim)} added at the visual positions


class VisualInjector(nn.Module):
    """Aligned + projected encoder stages: the visual tokens and what each LM layer receives."""

    def __init__(self, config: InjectionConfig, n_lm_layers: int) -> None:
        super().__init__()
        self.config = config
        self.mapping = config.resolve(n_lm_layers)  # {stage: layer}; {} without injection
        self.ref_stage = config.ref_index()
        self.proj = nn.ModuleDict({str(s): StageProjection(config.stage_channels[s], config.lm_dim)
                                   for s in self.used_stages})

    @property
    def layers(self) -> list[int]:
        """LM layers that receive an injection."""
        return sorted(set(self.mapping.values()))

    @property
    def used_stages(self) -> list[int]:
        """Encoder stages read: the reference stage and the injected ones."""
        return sorted(set(self.mapping) | {self.ref_stage})

    def forward(self, skips: list[Tensor]) -> VisualFeatures:
        """skips: per-stage (B, C_s, D_s, H_s, W_s) -> visual tokens and {layer: (B, N_ref, lm_dim)}."""
        if len(skips) != len(self.config.stage_channels):
            raise ValueError(f"got {len(skips)} skips, config has {len(self.config.stage_channels)} stages")
        return self.project(align_stages(skips, self.ref_stage, self.used_stages))

    def project(self, aligned: dict[int, Tensor]) -> VisualFeatures:
        """aligned: {stage: (B, N_ref, C_s)} (align_stages; a frozen encoder's cached features) -> visual tokens
        and {layer: (B, N_ref, lm_dim)}. Stages outside used_stages are ignored."""
        projected = {s: self.proj[str(s)](aligned[s]) for s in self.used_stages}  # (B, N_ref, lm_dim)
        out: dict[int, Tensor] = {}
        for s, layer in sorted(self.mapping.items()):
            out[layer] = out[layer] + projected[s] if layer in out else projected[s]
        return VisualFeatures(projected[self.ref_stage], out)
