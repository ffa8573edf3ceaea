"""The shared U-Net encoder: nnU-Net's ResEnc U-Net, described by one config dataclass.

The same architecture dict goes into nnU-Net's plans (Stage 1) and rebuilds the network for
Stages 2 and 3, so encoder weights move between stages with a strict state-dict load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from safetensors.torch import load_file, save_file
from torch import nn

from uvlm.models.geometry import stage_shapes

UNET_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


@dataclass
class EncoderConfig:
    features_per_stage: list[int]
    strides: list[int]                 # per stage, isotropic
    n_blocks_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]
    kernel_size: int = 3
    in_channels: int = 1

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> EncoderConfig:
        return cls(**{k: cfg[k] for k in ("features_per_stage", "strides", "n_blocks_per_stage",
                                          "n_conv_per_stage_decoder", "kernel_size")})

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def total_stride(self) -> int:
        out = 1
        for s in self.strides:
            out *= s
        return out

    def stage_shapes(self, input_dhw: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """Spatial size (D, H, W) of each stage's feature map for a given input size."""
        return stage_shapes(self.strides, input_dhw)

    def arch_kwargs(self) -> dict[str, Any]:
        """The nnU-Net plans 'architecture' entry for this encoder (JSON-serialisable)."""
        k = self.kernel_size
        return {
            "network_class_name": UNET_CLASS,
            "arch_kwargs": {
                "n_stages": self.n_stages,
                "features_per_stage": list(self.features_per_stage),
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[k, k, k]] * self.n_stages,
                "strides": [[s, s, s] for s in self.strides],
                "n_blocks_per_stage": list(self.n_blocks_per_stage),
                "n_conv_per_stage_decoder": list(self.n_conv_per_stage_decoder),
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": list(REQUIRES_IMPORT),
        }


def build_unet(cfg: EncoderConfig, num_classes: int, deep_supervision: bool = False) -> nn.Module:
    """The full ResEnc U-Net, built by nnU-Net's own plans-to-network function."""
    arch = cfg.arch_kwargs()
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  cfg.in_channels, num_classes, allow_init=True, deep_supervision=deep_supervision)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """Only the encoder; forward(x[B,1,D,H,W]) returns one feature map per stage."""
    return build_unet(cfg, num_classes=2).encoder


def save_encoder(encoder: nn.Module | None, cfg: EncoderConfig, out_dir: str | Path,
                 extra: dict | None = None) -> None:
    """encoder_config.json (+ encoder.safetensors unless the weights live in model.safetensors).

    The folder alone rebuilds the encoder (load_encoder).
    """
    from uvlm.io import atomic_path, write_json

    out_dir = Path(out_dir)
    if encoder is not None:
        state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        with atomic_path(out_dir / "encoder.safetensors") as tmp:
            save_file(state, str(tmp))
    write_json({"encoder": asdict(cfg), **(extra or {})}, out_dir / "encoder_config.json")


def load_encoder_config(folder: str | Path) -> EncoderConfig:
    return EncoderConfig(**json.loads((Path(folder) / "encoder_config.json").read_text())["encoder"])


def load_encoder(folder: str | Path, expected: EncoderConfig | None = None) -> tuple[nn.Module, EncoderConfig]:
    """Rebuild the encoder of a stage folder and load its weights strictly.

    If `expected` is given, a differing architecture is an error that lists the mismatched keys.
    """
    cfg = load_encoder_config(folder)
    if expected is not None and asdict(expected) != asdict(cfg):
        diff = {k: (v, asdict(expected)[k]) for k, v in asdict(cfg).items() if asdict(expected)[k] != v}
        raise ValueError(f"{folder}: encoder architecture differs from the requested one "
                         f"(key: (checkpoint, requested)): {diff}")
    encoder = build_encoder(cfg)
    encoder.load_state_dict(load_encoder_state(folder), strict=True)
    return encoder, cfg


def load_encoder_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """encoder.safetensors (Stage 1), or the 'encoder.' keys of model.safetensors (Stages 2 and 3)."""
    folder = Path(folder)
    if (folder / "encoder.safetensors").is_file():
        return load_file(str(folder / "encoder.safetensors"))
    state = load_file(str(folder / "model.safetensors"))
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc:
        raise ValueError(f"{folder}: model.safetensors holds no 'encoder.' weights")
    return enc
