"""Stage 1 end to end through nnU-Net's planner, preprocessor and trainer on tiny synthetic cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from uvlm.models.encoder import EncoderConfig, build_encoder, load_encoder
from uvlm.train.nnunet_export import export_nnunet_dataset
from uvlm.train.stage1 import Stage1Config, run_stage1

ENC = EncoderConfig(features_per_stage=[4, 8, 16], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1],
                    n_conv_per_stage_decoder=[1, 1])


def _case(folder: Path, name: str, rng: np.random.Generator) -> tuple[str, Path]:
    img = np.full((16, 24, 24), -1000, np.int16)
    lab = np.zeros_like(img, dtype=np.uint8)
    c = rng.integers(6, 10, size=3)
    img[c[0] - 4:c[0] + 4, c[1] - 5:c[1] + 5, c[2] - 5:c[2] + 5] = 40
    lab[c[0] - 4:c[0] + 4, c[1] - 5:c[1] + 5, c[2] - 5:c[2] + 5] = 1
    img[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 300
    lab[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 2
    for arr, sub in ((img, "images"), (lab, "labels")):
        sitk_img = sitk.GetImageFromArray(arr)
        sitk_img.SetSpacing((2.0, 2.0, 3.0))
        (folder / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk_img, str(folder / sub / f"{name}.nii.gz"))
    return str(folder / "images" / f"{name}.nii.gz"), folder / "labels"


@pytest.mark.slow  # nnU-Net's planner, preprocessor and trainer
def test_stage1_trains_with_nnunet_and_hands_over_encoder(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for p in range(1, 5):
        name = f"train_{p}_a_1"
        image, labels_dir = _case(tmp_path / "src", name, rng)
        # the exporter expects label maps under <shard_dir>/<granularity>/<case>.nii.gz
        (tmp_path / "shard" / "C").mkdir(parents=True, exist_ok=True)
        (labels_dir / f"{name}.nii.gz").rename(tmp_path / "shard" / "C" / f"{name}.nii.gz")
        rows.append({"volume_name": name, "patient_id": f"train_{p}", "image_path": image,
                     "shard_dir": str(tmp_path / "shard")})
    ds = export_nnunet_dataset(pd.DataFrame(rows), "C", {"0": "background", "1": "body", "2": "bone"}, 7,
                               tmp_path / "raw", val_fraction=0.25)
    assert json.loads((ds / "dataset.json").read_text())["labels"] == {"background": 0, "body": 1, "bone": 2}
    split = json.loads((ds / "uvlm_split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 3

    cfg = Stage1Config(spacing_mm=[3.0, 2.0, 2.0], patch_size=[16, 16, 16], batch_size=2, epochs=2,
                       iterations_per_epoch=2, val_iterations_per_epoch=1, initial_lr=0.01)
    out = tmp_path / "stage1"
    run_stage1(ds, tmp_path / "work", out, ENC, cfg, torch.device("cpu"))

    plans = json.loads((out / "plans.json").read_text())
    conf = plans["configurations"]["3d_fullres"]
    assert conf["patch_size"] == [16, 16, 16] and conf["spacing"] == [3.0, 2.0, 2.0]
    assert conf["architecture"]["arch_kwargs"]["features_per_stage"] == [4, 8, 16]
    assert len(pd.read_csv(out / "training_log.csv")) == 2
    # the encoder loads strictly into a freshly built one and differs from a random init
    encoder, cfg_loaded = load_encoder(out, expected=ENC)
    fresh = build_encoder(ENC).state_dict()
    trained = load_file(str(out / "encoder.safetensors"))
    assert set(trained) == set(fresh)
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if trained[k].is_floating_point())
    assert cfg_loaded == ENC
    feats = encoder(torch.zeros(1, 1, 16, 16, 16))
    assert [f.shape[1] for f in feats] == [4, 8, 16]

    # Same config and seed, fresh work folder: the same weights (nnU-Net's sampling and
    # augmentation draw from the global generators, which Stage 1 seeds).
    run_stage1(ds, tmp_path / "work2", tmp_path / "stage1_again", ENC, cfg, torch.device("cpu"))
    again = load_file(str(tmp_path / "stage1_again" / "encoder.safetensors"))
    assert all(torch.equal(trained[k], again[k]) for k in trained)


def test_standalone_nnunet_checkpoint_imports_as_stage1(tmp_path: Path) -> None:
    """A checkpoint_final.pth of a plain nnU-Net run with our architecture becomes a Stage 1 folder;
    another architecture is refused with the differing keys."""
    from uvlm.models.encoder import build_unet
    from uvlm.train.stage1 import import_stage1

    unet = build_unet(ENC, num_classes=3, deep_supervision=True)
    plans = {"configurations": {"3d_fullres": {"architecture": ENC.arch_kwargs()}}}
    ckpt = tmp_path / "fold_0" / "checkpoint_final.pth"
    ckpt.parent.mkdir()
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "liver_lesion": 2},
                    "numTraining": 4, "file_ending": ".nii.gz"}
    torch.save({"network_weights": unet.state_dict(), "trainer_name": "nnUNetTrainer", "current_epoch": 1000,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                              "dataset_json": dataset_json}}, ckpt)
    import_stage1(ckpt, tmp_path / "seg_FL", ENC)
    # the whole network as an nnU-Net model folder, as a trained Stage 1 keeps it (segmentation-based detection)
    model = tmp_path / "seg_FL" / "nnunet_model"
    assert json.loads((model / "dataset.json").read_text()) == dataset_json
    assert json.loads((model / "plans.json").read_text()) == plans
    assert (model / "fold_0" / "checkpoint_final.pth").read_bytes() == ckpt.read_bytes()
    encoder, cfg = load_encoder(tmp_path / "seg_FL", expected=ENC)
    for k, v in unet.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[k], v), k
    assert json.loads((tmp_path / "seg_FL" / "encoder_config.json").read_text())["imported_from"].endswith("final.pth")
    other = EncoderConfig(features_per_stage=[4, 8, 32], strides=[1, 2, 2], n_blocks_per_stage=[1, 1, 1],
                          n_conv_per_stage_decoder=[1, 1])
    with pytest.raises(ValueError, match=r"features_per_stage': \(\[4, 8, 16\], \[4, 8, 32\]\)"):
        import_stage1(ckpt, tmp_path / "other", other)


def test_stage1_trainer_is_found_by_name_like_nnunetv2_train() -> None:
    from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

    from uvlm.train.stage1 import find_trainer

    assert find_trainer("nnUNetTrainerAdam") is nnUNetTrainerAdam
    with pytest.raises(ValueError, match="no nnU-Net v2 trainer class named 'nnUNetTrainerNope'"):
        find_trainer("nnUNetTrainerNope")
