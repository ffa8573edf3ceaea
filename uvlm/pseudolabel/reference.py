"""Which labeler the pseudo-label QC scores the sources against: the one place that decides it.

The default reference, `truth`, is a `folder` labeler reading <CT-RATE root>/anatomy_masks: the demo
phantoms' ground truth. A real CT-RATE copy has no such folder, so a folder reference whose folder is
absent is dropped (the workflow plans no job for it) and the QC tables say why, instead of the whole run
failing on a folder that only the demo has. The workflow (to plan the jobs) and `uvlm pseudolabel-qc` (to
explain their absence) both ask `qc_reference`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANATOMY_MASKS = "anatomy_masks"  # the demo writer's ground-truth anatomy, under the CT-RATE root


def label_folder(spec: dict[str, Any], ct_rate_root: str | Path) -> Path:
    """Where a `folder` labeler reads: its `path`, or "" = <CT-RATE root>/anatomy_masks."""
    return Path(spec.get("path") or Path(ct_rate_root) / ANATOMY_MASKS)


@dataclass(frozen=True)
class QCReference:
    """The reference labeler (`labeler`, "" = none) and, when there is none, why (`note`)."""

    labeler: str
    note: str = ""


def qc_reference(cfg: dict[str, Any]) -> QCReference:
    """The reference the QC uses under `cfg`: `pseudolabels.reference`, unless it is a `folder` labeler
    whose folder does not exist.

    With `ct_rate_root: ""` the workflow generates the demo, whose anatomy_masks/ is written by a job that
    has not run yet when the DAG is built: the default folder then counts as present. Model labelers are
    kept as configured (missing weights fail their job, naming the folder).
    """
    pl = cfg["pseudolabels"]
    name = pl["reference"]
    if not name:
        return QCReference("", "no reference labeler is configured (pseudolabels.reference is empty)")
    spec = pl["labelers"][name]
    if spec["backend"] != "folder" or (not spec.get("path") and not cfg["ct_rate_root"]):
        return QCReference(name)
    folder = label_folder(spec, cfg["ct_rate_root"])
    if folder.is_dir():
        return QCReference(name)
    why = f" (a real CT-RATE copy has no {ANATOMY_MASKS}/; the demo writes one)" if not spec.get("path") else ""
    return QCReference("", f"the reference labeler '{name}' reads {folder}, which does not exist{why}, "
                           "so it was not run")
