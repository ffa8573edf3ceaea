"""The pseudo-label cost benchmark's arithmetic: sliding-window tile counts, planned architectures and the
plan's totals (benchmarks/pseudolabel_models.py, benchmarks/pseudolabel_plan.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import pseudolabel_models as pm  # noqa: E402
import pseudolabel_plan as pp  # noqa: E402


def test_tile_count_follows_nnunet_step_rule() -> None:
    # per axis: ceil((size - patch) / (patch * step)) + 1, an axis smaller than the patch is one tile
    assert pm.n_tiles([200, 239, 239], [128, 128, 128], 0.8) == 2 * 3 * 3
    assert pm.n_tiles([300, 512, 512], [96, 160, 160], 0.5) == 6 * 6 * 6
    assert pm.n_tiles([50, 128, 128], [128, 128, 128], 0.5) == 1
    assert pm.resampled_shape((300, 512, 512), (1.0, 0.7, 0.7), (1.5, 1.5, 1.5)) == [200, 239, 239]


def test_default_planner_at_1_5_mm_gives_the_128_cube_unet() -> None:
    cfg = pm.planned_config((1.5, 1.5, 1.5), (200, 239, 239), 26)
    kw = cfg["architecture"]["arch_kwargs"]
    assert cfg["patch_size"] == [128, 128, 128]
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["n_conv_per_stage"] == [2] * 6
    tiny = pm.tiny_config(cfg)
    assert tiny["patch_size"] == cfg["patch_size"] and tiny["architecture"]["arch_kwargs"]["strides"] == kw["strides"]
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32  # the copy left cfg alone


def _cpu(threads: int = 2) -> dict:
    fw = {"real": {"gflop": 1000.0}, "stage1_resenc": {"gflop": 1000.0}}
    lab = {"models": 1, "tiles": 10, "non_network_s": 5.0, "forward": fw, "peak_rss_gb": {"full_volume_estimate": 3.0},
           "tta_passes": {"no TTA (NoMirroring trainer)": 1, "mirroring TTA (configured default)": 8,
                          "mirroring: false": 1},
           "cpu_s_per_volume": {"no TTA (NoMirroring trainer)": 100.0, "mirroring TTA (configured default)": 800.0,
                                "mirroring: false": 100.0}}
    return {"machine": {"threads": threads}, "volume": {"shape_zyx": [300, 512, 512], "spacing_mm": [1.0, 0.7, 0.7]},
            "labelers": {"totalseg": lab, "nnunet": lab},
            "phases": [{"phase": "classical", "seconds": 4.0, "peak_rss_gb": 1.1}]}


def test_plan_totals_are_volumes_times_seconds() -> None:
    gpu = {"paper_scale_steps": {"stage1": {"step_s": 0.06, "batch": 2, "patch": [96, 128, 128]}}}
    p = pp.plan(_cpu(), gpu, shard_size=192)
    tile_s = 0.06 / 3 / 2  # same FLOPs as the Stage 1 patch: one forward = a third of a step, per patch
    assert p["per_volume"]["airway"]["gpu_s"] == pytest.approx(5.0 + 10 * 8 * tile_s, abs=0.05)
    assert p["per_volume"]["airway, vessels with mirroring: false"]["gpu_s"] == pytest.approx(5.0 + 10 * tile_s,
                                                                                               abs=0.05)
    stage1 = p["totals"]["Stage 1 (ReXGroundingCT training volumes)"]
    assert stage1["shards"] == math.ceil(2628 / 192) == 14
    air = stage1["labelers"]["airway"]
    assert air["gpu_h"] == pytest.approx(2628 * p["per_volume"]["airway"]["gpu_s"] / 3600, abs=0.05)
    assert air["cpu_core_h"] == pytest.approx(2628 * 800.0 * 2 / 3600, abs=0.05)
    assert stage1["labelers"]["classical"]["gpu_h"] is None
    assert stage1["labelers"]["classical"]["job_min"] == pytest.approx(192 * 4.0 / 60, abs=0.05)
    both = stage1["labelers"]["configured sources (totalseg + airway + vessels)"]
    assert both["gpu_h"] == pytest.approx(sum(stage1["labelers"][s]["gpu_h"] for s in ("totalseg", "airway",
                                                                                        "vessels")), abs=0.05)
    assert "| airway |" in pp.markdown(p)
