"""A hospital's own data as `csv_datasets` reads it: a CSV of cases whose CTs are NIfTI files or DICOM series
folders, with reports, 0/1 lesion labels and TotalSegmentator-style mask folders. The CTs, masks and reports are
the synthetic AbdomenAtlas demo's, moved into a hospital's layout, plus a row a hospital's export gets wrong
(an empty report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import SimpleITK as sitk
from dicom_writer import write_dicom_series

from uvlm.constants import ABDOMEN_LESION_LABELS
from uvlm.data.abdomen_atlas import LESION_VOLUME_COLUMNS, META_CSV
from uvlm.demo.abdomen_writer import write_demo_abdomen_atlas

NO_REPORT = "H_no_report"  # a limited row: trained on in Stages 1-2, listed as rejected for Stage 3 with its reason


def write_hospital(root: Path, n_cases: int = 10, seed: int = 3, shape=(24, 32, 32),
                   spacing_mm=(10.0, 12.0, 12.0)) -> Path:
    """Write root/cases.csv and the files it names; every other case's CT is a DICOM series folder. Returns the
    CSV's path. Its labels are the demo's real lesions (the ones its reports mention)."""
    atlas = root / "source"
    write_demo_abdomen_atlas(atlas, n_cases, seed, shape, spacing_mm)
    meta = pd.read_csv(atlas / META_CSV, keep_default_na=False)
    rows = []
    for k, r in enumerate(meta.to_dict("records")):
        case = r["BDMAP ID"]
        ct = atlas / case / "ct.nii.gz"
        image = str(ct.relative_to(root))
        if k % 2:  # a DICOM series folder on the CT's grid (identity direction, as the demo writes)
            img = sitk.ReadImage(str(ct))
            write_dicom_series(root / "dicom" / case, sitk.GetArrayFromImage(img), series=f"1.2.3.{k}",
                               spacing=img.GetSpacing(), origin=img.GetOrigin())
            image = f"dicom/{case}"
        rows.append({"case_id": case, "patient_id": f"patient_{case[-3:]}", "split": "test" if k % 4 == 3 else "train",
                     "image": image, "report": r["structured report"],
                     "masks": str((atlas / case / "segmentations").relative_to(root)),
                     **{lesion: int(float(r[col] or 0) > 0) for lesion, col in LESION_VOLUME_COLUMNS.items()}})
    first = rows[0]
    rows.append({**first, "case_id": NO_REPORT, "patient_id": "patient_nr", "split": "train", "report": ""})
    path = root / "cases.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def hospital_entry(csv: Path) -> dict:
    """The `csv_datasets` entry of the hospital: its Stage 1 from its masks, one experiment through all stages."""
    return {"source": {"csv": str(csv), "labels": list(ABDOMEN_LESION_LABELS), "label_set": "abdomen_atlas",
                       "mask_column": "masks", "label_map": "config/labels/abdomen.yaml"},
            "overrides": {"run": ["seg_cl_cls_rep_sc"], "main_experiment": "seg_cl_cls_rep_sc", "stage2_runs": []}}
