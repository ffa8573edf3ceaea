"""TotalSegmentator through its Python API, safe to run as many cluster jobs at once.

- Weights come from a shared folder (`TOTALSEG_WEIGHTS_PATH`), read only; missing weights are an
  error naming the folder and the download command, never a download attempt from a compute node.
- Each job gets its own home folder (`TOTALSEG_HOME_DIR`): TotalSegmentator rewrites config.json
  there without a lock. Usage statistics are switched off in that config before the first call.
- Class names are TotalSegmentator's own `class_map[task]`, never retyped.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from uvlm.io import atomic_path

_ENV_KEYS = ("TOTALSEG_WEIGHTS_PATH", "TOTALSEG_HOME_DIR", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class WeightsMissingError(RuntimeError):
    """TotalSegmentator weights are not in the configured folder."""


def class_table(task: str) -> dict[int, str]:
    from totalsegmentator.map_to_binary import class_map

    if task not in class_map:
        raise ValueError(f"TotalSegmentator has no task '{task}' with a class map")
    return {int(k): v for k, v in class_map[task].items()}


def required_weight_folders(task: str, fast: bool) -> list[str]:
    """Folder names under the weights path that `task` (fast or not) reads."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.python_api import get_task_config

    cfg = get_task_config(task, fast=fast, quiet=True)
    ids = list(cfg["task_id"]) if isinstance(cfg["task_id"], list) else [cfg["task_id"]]
    if cfg.get("crop") is not None and cfg.get("crop_model") is None:
        ids.append(297 if cfg.get("robust_crop") else 298)  # the rough total model that finds the crop
    return [str(Path(TASK_ID_WEIGHTS_CONFIGS[i].get("rel_path") or "") / TASK_ID_WEIGHTS_CONFIGS[i]["foldername"])
            for i in ids]


@contextmanager
def totalseg_environment(weights_dir: str | Path, home_dir: str | Path):
    """Point TotalSegmentator at the shared weights and a private home; restore the environment after."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    home = Path(home_dir)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.json").write_text(json.dumps({"totalseg_id": "uvlm", "send_usage_stats": False,
                                                  "statistics_disclaimer_shown": True, "prediction_counter": 0}))
    os.environ["TOTALSEG_WEIGHTS_PATH"] = str(Path(weights_dir).resolve())
    os.environ["TOTALSEG_HOME_DIR"] = str(home.resolve())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TotalSegmentatorLabeler:
    """One TotalSegmentator task over many volumes of a job."""

    def __init__(self, task: str, fast: bool, weights_dir: str | Path, home_dir: str | Path, device: str = "cpu",
                 threads: int = 1) -> None:
        weights = Path(weights_dir)
        missing = [f for f in required_weight_folders(task, fast) if not (weights / f).is_dir()]
        if missing:
            raise WeightsMissingError(
                f"TotalSegmentator weights for task '{task}' (fast={fast}) are missing from {weights}: {missing}. "
                f"Run `TOTALSEG_WEIGHTS_PATH={weights} totalseg_download_weights -t {task}` on a machine with "
                "network access.")
        self.task, self.fast, self.weights, self.home = task, fast, weights, Path(home_dir)
        self.device = "gpu" if device in ("cuda", "gpu") else device
        self.threads = threads
        self.classes = class_table(task)

    def predict(self, image_path: str | Path, out_path: Path) -> None:
        import nibabel as nib
        from totalsegmentator.python_api import totalsegmentator

        with totalseg_environment(self.weights, self.home):
            seg = totalsegmentator(str(image_path), None, ml=True, task=self.task, fast=self.fast,
                                   device=self.device, quiet=True, nr_thr_resamp=self.threads, nr_thr_saving=1)
        with atomic_path(out_path, suffix=".nii.gz") as tmp:
            nib.save(seg, str(tmp))
