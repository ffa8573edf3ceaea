"""Build and reload report models: our decoder or a Hugging Face LM, for one Table 5 row.

The one place that turns pipeline settings into a model config and a model, shared by Stage 3
training, generation and the parameter counts (which must all build the same architecture).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from uvlm.models.decoder import DecoderConfig
from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder_config
from uvlm.models.injection import InjectionConfig
from uvlm.models.report_model import ReportGenerator, ReportModelConfig
from uvlm.text.tokenizer import SpecialIds, encode_report, load_tokenizer


class ReportRow(Protocol):
    """What a model needs of an experiment (uvlm.experiments.Experiment is one)."""

    name: str
    multi_layer: bool        # SC: every mapped stage injected into its decoder layer
    reference_stage: int     # encoder stage of the visual tokens (-1 deepest)
    frozen: bool             # Frz
    decoder: str             # own | hf_lora | hf_full

    @property
    def injection(self) -> str: ...

    @property
    def hf_finetune(self) -> str | None: ...


def n_visual_tokens(enc_cfg: EncoderConfig, grid: tuple[int, int, int], reference_stage: int) -> int:
    """Visual tokens = voxels of the reference stage's feature map (paper: deepest 6x8x8 = 384, next 3072)."""
    return math.prod(enc_cfg.stage_shapes(grid)[reference_stage])


def injection_config(enc_cfg: EncoderConfig, lm_dim: int, row: ReportRow,
                     stage_to_layer: dict | None = None) -> InjectionConfig:
    """The row's visual tokens and injection; `stage_to_layer` (config `stage3.injection`) maps stages to
    decoder layers for SC rows ({} or None: deepest stage to layer 0, and so on)."""
    mapping = {int(k): int(v) for k, v in stage_to_layer.items()} if row.multi_layer and stage_to_layer else None
    return InjectionConfig(stage_channels=list(enc_cfg.features_per_stage), lm_dim=lm_dim, mode=row.injection,
                           reference_stage=row.reference_stage, stage_to_layer=mapping)


def own_model_config(enc_cfg: EncoderConfig, grid: tuple[int, int, int], decoder: dict, vocab_size: int,
                     special: SpecialIds, row: ReportRow, max_text_tokens: int,
                     stage_to_layer: dict | None = None) -> ReportModelConfig:
    """Our report model's config for one row (SC, Frz, visual tokens); `decoder` is config `stage3.decoder`."""
    n_visual = n_visual_tokens(enc_cfg, grid, row.reference_stage)
    dec = DecoderConfig(vocab_size=vocab_size, dim=decoder["dim"], n_layers=decoder["n_layers"],
                        n_heads=decoder["n_heads"], dropout=decoder.get("dropout", 0.0),
                        max_seq_len=n_visual + 2 + max_text_tokens + 8)
    return ReportModelConfig(decoder=dec, injection=injection_config(enc_cfg, decoder["dim"], row, stage_to_layer),
                             n_visual_tokens=n_visual, freeze_encoder=row.frozen, **special.model_kwargs())


@dataclass
class BuiltReportModel:
    """A fresh report model and what training needs beside it."""

    model: torch.nn.Module
    config: Any                       # ReportModelConfig or HFReportModelConfig (both have to_dict())
    kind: str                         # "own" | "hf": how load_report_model rebuilds the folder
    tokenizer_file: Path              # copied into the model folder
    encode: Callable[[str], list[int]]  # report text -> token ids (bos ... eos, cut to max_text_tokens)
    pad_id: int


def build_report_model(row: ReportRow, encoder: torch.nn.Module, enc_cfg: EncoderConfig,
                       grid: tuple[int, int, int], tokenizer_path: str | Path, decoder: dict, max_text_tokens: int,
                       hf: dict | None = None, stage_to_layer: dict | None = None) -> BuiltReportModel:
    """The row's report model around `encoder`: our decoder (config `stage3.decoder`) or, for hf_* rows, the
    Hugging Face causal LM of config `stage3.hf` (Qwen3 in the paper) with LoRA or full fine-tuning."""
    if not row.hf_finetune:
        tok = load_tokenizer(tokenizer_path)
        special = SpecialIds.from_tokenizer(tok)
        mcfg = own_model_config(enc_cfg, grid, decoder, tok.get_vocab_size(), special, row, max_text_tokens,
                                stage_to_layer)
        return BuiltReportModel(ReportGenerator(mcfg, encoder), mcfg, "own", Path(tokenizer_path),
                                lambda text: encode_report(tok, text, max_text_tokens), special.pad_id)
    if not hf:
        raise ValueError(f"experiment '{row.name}' uses decoder {row.decoder}: stage3.hf settings are needed")
    from uvlm.models.hf_decoder import (
        HFDecoderConfig,
        HFReportGenerator,
        HFReportModelConfig,
        encode_text,
        load_hf_tokenizer,
        special_ids,
    )

    own_tok = hf.get("tokenizer", "hf") == "bpe"  # our BPE only with a from-scratch LM (vocabulary must match)
    tok = load_tokenizer(tokenizer_path) if own_tok else load_hf_tokenizer(hf["model_dir"])
    tok_file = Path(tokenizer_path) if own_tok else Path(hf["model_dir"]) / "tokenizer.json"
    ids = special_ids(tok)
    settings = {**hf, "finetune": row.hf_finetune}
    dcfg = HFDecoderConfig(**{k: v for k, v in settings.items() if k in HFDecoderConfig.__dataclass_fields__},
                           vocab_size=tok.get_vocab_size() if own_tok and hf["from_scratch"] else None)
    lm_dim = json.loads((Path(hf["model_dir"]) / "config.json").read_text())["hidden_size"]
    mcfg = HFReportModelConfig(decoder=dcfg, injection=injection_config(enc_cfg, lm_dim, row, stage_to_layer),
                               n_visual_tokens=n_visual_tokens(enc_cfg, grid, row.reference_stage),
                               freeze_encoder=row.frozen, **ids.model_kwargs())
    return BuiltReportModel(HFReportGenerator(mcfg, encoder), mcfg, "hf", tok_file,
                            lambda text: encode_text(tok, text, ids, max_text_tokens), ids.pad_id)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_report_model(folder: str | Path, device: torch.device,
                      expected: ReportModelConfig | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild a Stage 3 model from its folder alone (config.json + model.safetensors).

    With `expected`, a folder of another architecture is an error listing every mismatched key.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("kind") == "hf":  # the alternative decoder (a LoRA folder also needs its base model_dir)
        from uvlm.models.hf_decoder import HFReportGenerator, HFReportModelConfig

        model = HFReportGenerator(HFReportModelConfig.from_dict(config["model"]),
                                  build_encoder(load_encoder_config(folder)))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        return model.to(device).eval(), config
    mcfg = ReportModelConfig.from_dict(config["model"])
    if expected is not None:
        have, want = _flat(mcfg.to_dict()), _flat(expected.to_dict())
        diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
        if diff:
            raise ValueError(f"{folder}: model config differs from the requested architecture "
                             f"(key: (checkpoint, requested)): {diff}")
    model = ReportGenerator(mcfg, build_encoder(load_encoder_config(folder)))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.to(device).eval(), config
