"""Generate reports for one split with a trained Stage 3 model (greedy, beam or sampling; KV cache; batched)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from uvlm.data.volumes import VolumeDataset, collate
from uvlm.device import pick_device
from uvlm.io import write_parquet
from uvlm.models.decoding import DecodingConfig
from uvlm.models.report_factory import load_report_model
from uvlm.text.tokenizer import load_tokenizer
from uvlm.train.feature_cache import FeatureStore

log = logging.getLogger(__name__)


def decoding_from_config(section: dict) -> DecodingConfig:
    """The `generate` config section as a DecodingConfig (keys it does not name are ignored)."""
    fields = DecodingConfig.__dataclass_fields__
    return DecodingConfig(**{k: v for k, v in section.items() if k in fields})


def generate_reports(model_dir: str | Path, data: VolumeDataset, out_path: str | Path, max_new_tokens: int,
                     batch_size: int, device_name: str, threads: int,
                     decoding: DecodingConfig | None = None, features: str | Path | None = None) -> pd.DataFrame:
    """Write <out>.parquet: volume_name, reference, generated, n_tokens.

    features: the split's stored features of the model's frozen encoder (uvlm.train.feature_cache), read
    instead of the volumes; refused when they were made by another encoder."""
    torch.set_num_threads(threads)
    device = pick_device(device_name)
    model, config = load_report_model(model_dir, device)
    stored = None
    if features:
        store = FeatureStore(features)
        store.check(model.encoder, model.injector.ref_stage)
        stored = store.view(data.names) if store.usable else None
    extra = {"decoding": decoding}
    if config.get("kind") == "hf":
        if decoding is not None and decoding.strategy != "greedy":
            raise ValueError(f"generate.strategy '{decoding.strategy}' is implemented for our own decoder; the "
                             "Hugging Face decoder decodes greedily")
        if decoding is not None and decoding.static_cache != "none":
            raise ValueError(f"generate.static_cache '{decoding.static_cache}' is implemented for our own decoder; "
                             "the Hugging Face decoder uses its dynamic cache")
        extra = {}
    tok = load_tokenizer(Path(model_dir) / "tokenizer.json")
    rows, start, n_tokens = [], time.monotonic(), 0
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(s + batch_size, len(data))))
        visual = stored.aligned(idx, device) if stored else collate([data[i] for i in idx])["image"].to(device)
        with torch.no_grad():
            outs = model.generate(visual, max_new_tokens=max_new_tokens, use_cache=True, **extra)
        for name, ref, ids in zip([data.names[i] for i in idx], [data.texts[i] for i in idx], outs, strict=True):
            rows.append({"volume_name": name, "reference": ref, "generated": tok.decode(ids).strip(),
                         "n_tokens": len(ids)})
            n_tokens += len(ids)
        elapsed = time.monotonic() - start
        log.info("generated %d/%d reports, %.0f tokens/s", len(rows), len(data), n_tokens / max(elapsed, 1e-9))
    df = pd.DataFrame(rows)
    write_parquet(df, out_path)
    return df
