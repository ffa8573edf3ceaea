"""Demo data -> Stage 1 case list -> classical pseudo-labels -> label merge -> nnU-Net raw datasets that
nnU-Net itself accepts, with the same cases for every granularity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uvlm.data.ct_rate import ingest_ct_rate
from uvlm.data.manifest import stage1_cases
from uvlm.demo.ct_rate_writer import DemoConfig, write_demo_ct_rate
from uvlm.demo.phantom import PhantomConfig
from uvlm.labels.label_map import load_label_map
from uvlm.labels.shard import label_shard
from uvlm.pseudolabel.run import pseudolabel_shard
from uvlm.shards import read_shard_indexes
from uvlm.train.nnunet_export import export_nnunet_dataset, load_class_table, select_cases

CHEST = Path(__file__).resolve().parent.parent / "config" / "labels" / "chest.yaml"


@pytest.mark.slow  # nnU-Net's integrity check on three datasets
def test_exported_granularities_pass_nnunet_integrity_check(tmp_path: Path) -> None:
    root = tmp_path / "ct_rate"
    write_demo_ct_rate(root, DemoConfig(n_patients=6, seed=3, phantom=PhantomConfig(
        shape=(40, 80, 80), spacing_mm=(8.0, 4.48, 4.48))), progress=False)
    manifest = ingest_ct_rate(root, shard_size=64)
    train = manifest.index[manifest["split"] == "train"]
    manifest.loc[train[::2], "lesion_mask_path"] = ""  # as in CT-RATE: not every volume is in ReXGroundingCT
    # Stage 1 cases: the training volumes with lesion masks, one list for C, C+L and F+L
    cases = stage1_cases(manifest, lesions_complete=False, max_cases=0, seed=0, shard_size=64)
    assert sorted(cases["volume_name"]) == sorted(manifest.loc[train[1::2], "volume_name"])
    source = tmp_path / "pl" / "classical" / "shard_0"
    pseudolabel_shard(cases, "classical", {"backend": "classical"}, source, montages=False)
    maps = [load_label_map(CHEST, g) for g in ("C", "CL", "FL")]
    label_shard(cases, maps, [source], tmp_path / "labels" / "shard_0", lesions_complete=False)
    index = read_shard_indexes([tmp_path / "labels" / "shard_0"])

    raw = tmp_path / "nnUNet_raw"
    ids = {"C": 511, "CL": 512, "FL": 513}
    for gran, dataset_id in ids.items():
        rows = select_cases(cases, index, gran)
        assert rows["volume_name"].tolist() == sorted(cases["volume_name"])  # the same cases, only labels differ
        ds = export_nnunet_dataset(rows, gran, load_class_table([tmp_path / "labels" / "shard_0"], gran),
                                   dataset_id, raw)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(next((ds / "labelsTr").iterdir()))))
        assert labels.max() <= len(load_label_map(CHEST, gran).classes)
        assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [f"{v}_0000.nii.gz" for v in rows["volume_name"]]
    # classical anatomy feeds C: lung (6), trachea (8), spine (12), ribs (13), sternum (14) are present
    c = sitk.GetArrayFromImage(sitk.ReadImage(str(next((raw / "Dataset511_UVLMC" / "labelsTr").iterdir()))))
    assert set(np.unique(c).tolist()) >= {0, 6, 8, 12, 13, 14}

    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res"), "nnUNet_n_proc_DA": "1"}
    cli = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    done = subprocess.run([str(cli), "-d", *map(str, ids.values()), "--verify_dataset_integrity", "--no_pp",
                           "-npfp", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for gran, dataset_id in ids.items():  # nnU-Net wrote its fingerprint and plans for every dataset
        assert (tmp_path / "pre" / f"Dataset{dataset_id}_UVLM{gran}" / "dataset_fingerprint.json").is_file()

    # the check is real: a label value the dataset.json does not declare makes nnU-Net refuse the dataset
    bad = next((raw / "Dataset511_UVLMC" / "labelsTr").iterdir())
    img = sitk.ReadImage(str(bad))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = 200
    broken = sitk.GetImageFromArray(arr)
    broken.CopyInformation(img)
    sitk.WriteImage(broken, str(bad))
    done = subprocess.run([str(cli), "-d", "511", "--verify_dataset_integrity", "--no_pp", "-npfp", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
