"""Parameter counts of every model part for a config, to compare with the paper (~0.1B decoder).

Models are built on the meta device, so paper-scale counts cost no memory and no time.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from uvlm.constants import CT_RATE_LABELS
from uvlm.experiments import experiments
from uvlm.models.cls_head import ClsHeadConfig, QueryClassificationHead
from uvlm.models.encoder import EncoderConfig, build_unet
from uvlm.models.report_factory import own_model_config
from uvlm.models.report_model import ReportGenerator
from uvlm.text.tokenizer import SpecialIds


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_table(cfg: dict) -> pd.DataFrame:
    """One row per part: Stage 1 U-Net (encoder, decoder), Stage 2 head, Stage 3 parts of our own decoder
    as the config's main experiment (Table 2 row) builds it."""
    enc_cfg = EncoderConfig.from_config(cfg["encoder"])
    grid = tuple(cfg["preprocess"]["grid"])
    s3 = cfg["stage3"]
    special = SpecialIds(pad_id=0, unk_id=1, bos_id=2, eos_id=3, vision_start_id=4, vision_end_id=5)
    with torch.device("meta"):
        unet = build_unet(enc_cfg, num_classes=2)
        head = QueryClassificationHead(ClsHeadConfig(enc_cfg.features_per_stage[-1], len(CT_RATE_LABELS),
                                                     cfg["stage2"]["num_heads"]))
        exp = experiments(cfg)[cfg["main_experiment"]]
        mcfg = own_model_config(enc_cfg, grid, s3["decoder"], s3["vocab_size"], special, exp,
                                  s3["max_text_tokens"], s3["injection"]["stage_to_layer"])
        model = ReportGenerator(mcfg, unet.encoder)
    dec = model.decoder
    emb = _n(dec.tok_emb)  # the LM head is tied to these embeddings (Decoder.lm_head)
    rows = [
        ("Stage 1", "U-Net encoder (ResEnc)", _n(unet.encoder)),
        ("Stage 1", "U-Net decoder (segmentation only)", _n(unet) - _n(unet.encoder)),
        ("Stage 2", "query classification head", _n(head)),
        ("Stage 3", f"token embeddings = tied LM head ({mcfg.decoder.vocab_size} x {mcfg.decoder.dim})", emb),
        ("Stage 3", f"decoder layers ({mcfg.decoder.n_layers} x {mcfg.decoder.dim}) + final norm", _n(dec) - emb),
        ("Stage 3", f"visual projections ({len(model.injector.proj)} stages)", _n(model.injector)),
    ]
    df = pd.DataFrame(rows, columns=["stage", "part", "parameters"])
    df = df[df["parameters"] > 0].reset_index(drop=True)
    decoder_total = int(df.loc[df["stage"] == "Stage 3", "parameters"].sum())
    df.loc[len(df)] = ["Stage 3", "report decoder total (without encoder)", decoder_total]
    df["millions"] = (df["parameters"] / 1e6).round(2)
    df.attrs["n_visual_tokens"] = mcfg.n_visual_tokens
    df.attrs["stage_shapes"] = [list(s) for s in enc_cfg.stage_shapes(grid)]
    df.attrs["grid_voxels"] = math.prod(grid)
    return df
