"""Any trained nnU-Net v2 model folder as a labeler (the ATM22 airway and HiPaS vessel models are such).

The folder holds plans.json, dataset.json and fold_X/<checkpoint>. Checkpoints are read with
torch's weights-only unpickler (tensors, containers, numbers and the numpy scalar types nnU-Net's
logger stores), never with the general pickle loader, so a tampered checkpoint cannot run code.
Prediction goes through nnU-Net's own `nnUNetPredictor` (its preprocessing, sliding window and
export) with `predict_from_files_sequential`, i.e. without worker processes.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

# Globals nnU-Net checkpoints contain besides tensors and containers (numpy scalars in the logs).
_SAFE_NUMPY = [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType,
               np.dtypes.Int64DType, np.dtypes.Int32DType, np.dtypes.BoolDType]


class ModelFolderError(ValueError):
    """The model folder is incomplete or inconsistent; the message names the file."""


def load_checkpoint(path: str | Path) -> dict:
    """An nnU-Net checkpoint dict, loaded without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"nnU-Net checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError for unsafe or broken files
        raise ModelFolderError(f"{path}: not loadable as a weights-only checkpoint: {str(err)[:300]}") from None
    for key in ("network_weights", "trainer_name", "init_args"):
        if key not in ckpt:
            raise ModelFolderError(f"{path}: not an nnU-Net checkpoint (no '{key}')")
    return ckpt


def _labels_of(dataset_json: dict, folder: Path) -> dict[int, str]:
    table = {}
    for name, value in dataset_json["labels"].items():
        if isinstance(value, (list, tuple)):
            raise ModelFolderError(f"{folder}/dataset.json: region-based label '{name}' is not supported")
        if int(value) != 0:
            table[int(value)] = name
    return table


class NnunetLabeler:
    """Predict label maps with one nnU-Net model folder; classes renamed through `rename`."""

    def __init__(self, model_dir: str | Path, folds: list[int | str], checkpoint: str = "checkpoint_final.pth",
                 rename: dict[int, str] | None = None, device: str = "cpu", tile_step_size: float = 0.5,
                 mirroring: bool = True) -> None:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        folder = Path(model_dir)
        for name in ("plans.json", "dataset.json"):
            if not (folder / name).is_file():
                raise ModelFolderError(f"nnU-Net model folder {folder} has no {name}")
        dataset_json = json.loads((folder / "dataset.json").read_text())
        plans = PlansManager(json.loads((folder / "plans.json").read_text()))
        ckpts = [load_checkpoint(folder / f"fold_{f}" / checkpoint) for f in folds]
        config = plans.get_configuration(ckpts[0]["init_args"]["configuration"])
        trainer_class = recursive_find_trainer_class_by_name(ckpts[0]["trainer_name"])
        n_in = determine_num_input_channels(plans, config, dataset_json)
        n_out = plans.get_label_manager(dataset_json).num_segmentation_heads
        if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
            network = trainer_class.build_network_architecture(plans, config, n_in, n_out,
                                                               enable_deep_supervision=False)
        else:  # trainers written against the older signature
            network = trainer_class.build_network_architecture(
                config.network_arch_class_name, config.network_arch_init_kwargs,
                config.network_arch_init_kwargs_req_import, n_in, n_out, enable_deep_supervision=False)
        params = [c["network_weights"] for c in ckpts]
        network.load_state_dict(params[0])  # strict: a mismatching folder fails here, naming keys
        dev = torch.device("cuda" if device in ("cuda", "gpu") else device)
        self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                         perform_everything_on_device=dev.type == "cuda", device=dev,
                                         verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.manual_initialization(network, plans, config, params, dataset_json,
                                             ckpts[0]["trainer_name"],
                                             ckpts[0].get("inference_allowed_mirroring_axes"))
        self.file_ending = dataset_json.get("file_ending", ".nii.gz")
        native = _labels_of(dataset_json, folder)
        rename = {int(k): v for k, v in (rename or {}).items()}
        unknown = sorted(set(rename) - set(native))
        if unknown:
            raise ModelFolderError(f"{folder}/dataset.json has no label values {unknown} (has {sorted(native)})")
        self.classes = {v: rename.get(v, n) for v, n in native.items()}

    def predict(self, image_path: str | Path, out_path: Path, work_dir: Path) -> None:
        """Write the label map of one image to out_path (.nii.gz), via a private temporary folder."""
        tmp = work_dir / f".nnunet_{out_path.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self.predictor.predict_from_files_sequential([[str(image_path)]], [str(tmp / "case")],
                                                         save_probabilities=False, overwrite=True)
            produced = tmp / f"case{self.file_ending}"
            if self.file_ending != ".nii.gz":
                import SimpleITK as sitk
                sitk.WriteImage(sitk.ReadImage(str(produced)), str(tmp / "case.nii.gz"), useCompression=True)
                produced = tmp / "case.nii.gz"
            produced.replace(out_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
