"""Nothing trains, selects or tunes on the split that is scored.

The Stage 2 and Stage 3 commands (what Snakemake runs), and the tokenizer, are run on a tiny manifest;
then every label and report of the validation split (the one the reports are scored on) is poisoned and
they are run again: the trained weights and the tokenizer are byte-identical. Stage 2's Table 4 metrics,
which score the selected weights on that split, do change, so the poison really reached the manifest;
and poisoning one training label does change the weights, so the comparison can fail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from uvlm.cli.main import main
from uvlm.config import REPO_ROOT
from uvlm.constants import CT_RATE_LABELS
from uvlm.data.manifest import with_label_set

GRID = [8, 8, 8]
TEXTS = ["Findings: no effusion. Impressions: normal.", "Findings: small nodule in the left lung.",
         "Findings: cardiomegaly and pleural effusion.", "Findings: emphysema. Impressions: copd."]


def tiny_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    cfg["preprocess"]["grid"] = GRID
    cfg["encoder"].update(features_per_stage=[4, 8, 8], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1],
                          n_conv_per_stage_decoder=[1, 1])
    cfg["stage2"].update(steps=4, batch_size=2, eval_every=2, checkpoint_every=0)
    cfg["stage3"].update(steps=4, batch_size=2, eval_every=2, checkpoint_every=0, vocab_size=64,
                         max_text_tokens=24, decoder={"dim": 16, "n_layers": 2, "n_heads": 2, "dropout": 0.0})
    cfg["experiments"] = {"cls_rep_sc": {"title": "Cls Rep, SC", "seg": None, "cls": True,
                                         "freeze_encoder": False, "injection": "multi_layer"}}
    cfg.update(run=["cls_rep_sc"], main_experiment="cls_rep_sc", stage2_runs=["none"], threads=1, device="cpu")
    cfg["abdomen_atlas"]["enabled"] = False  # its overrides name the demo's experiments
    cfg["model_selection"]["holdout_fraction"] = 0.34
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_data(tmp: Path) -> tuple[pd.DataFrame, Path]:
    """12 training volumes of 6 patients and 6 validation volumes: a manifest and one array shard."""
    rng = np.random.default_rng(0)
    shard = tmp / "preprocessed" / "shard_0"
    shard.mkdir(parents=True)
    rows = []
    for split, n in (("train", 12), ("valid", 6)):
        for i in range(n):
            name = f"{split}_{i // 2}_a_{i % 2 + 1}"
            np.save(shard / f"{name}.npy", rng.normal(size=GRID).astype(np.float16))
            rows.append({"volume_name": name, "split": split, "patient_id": f"{split}_{i // 2}",
                         "report_text": TEXTS[i % 4], "labels_known": True, "has_report": True,
                         **{c: int(rng.random() < 0.4) for c in CT_RATE_LABELS}})
    manifest = with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS)
    pd.DataFrame({"volume_name": manifest["volume_name"], "array_file": manifest["volume_name"] + ".npy"}).to_parquet(
        shard / "index.parquet", index=False)
    return manifest, shard


def run_training(tmp: Path, manifest: pd.DataFrame, shard: Path, config: Path) -> dict[str, str]:
    """tokenizer -> Stage 2 -> Stage 3 through the command line; sha256 of what they wrote."""
    tmp.mkdir(parents=True)
    path = tmp / "manifest.parquet"
    manifest.to_parquet(path, index=False)
    common = ["--manifest", str(path), "--preprocessed", str(shard)]
    main(["--config", str(config), "tokenizer", "--manifest", str(path), "--out", str(tmp / "tokenizer.json")])
    main(["--config", str(config), "stage2", *common, "--out", str(tmp / "stage2")])
    main(["--config", str(config), "stage3", *common, "--tokenizer", str(tmp / "tokenizer.json"),
          "--init", str(tmp / "stage2"), "--experiment", "cls_rep_sc", "--out", str(tmp / "stage3")])
    files = {"tokenizer": tmp / "tokenizer.json", "stage2": tmp / "stage2" / "model.safetensors",
             "stage3": tmp / "stage3" / "model.safetensors", "table4": tmp / "stage2" / "metrics.json"}
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}


def test_poisoning_the_scored_split_changes_no_weight(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    manifest, shard = tiny_data(tmp_path)
    clean = run_training(tmp_path / "clean", manifest, shard, config)

    poisoned = manifest.copy()
    valid = poisoned["split"] == "valid"
    for c in CT_RATE_LABELS:
        poisoned.loc[valid, c] = 1 - poisoned.loc[valid, c]
    poisoned.loc[valid, "report_text"] = "Findings: POISON poison poison. Impressions: never learn this."
    after = run_training(tmp_path / "poisoned", poisoned, shard, config)
    assert {k: after[k] == clean[k] for k in ("tokenizer", "stage2", "stage3")} == \
        {"tokenizer": True, "stage2": True, "stage3": True}
    assert after["table4"] != clean["table4"]  # the scored split's labels did reach the scoring

    control = manifest.copy()
    first_train = control.index[control["split"] == "train"][0]
    control.loc[first_train, CT_RATE_LABELS[0]] = 1 - control.loc[first_train, CT_RATE_LABELS[0]]
    changed = run_training(tmp_path / "control", control, shard, config)
    assert changed["stage2"] != clean["stage2"]  # a training label does reach the weights
