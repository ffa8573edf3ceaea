"""A corpus of bad inputs in the CT-RATE layout: each kind damages a fresh small root one way, and says what
the pipeline must do with it (fail naming the problem, repair it as documented, or leave the volume out of
what it cannot serve and count it). tests/test_bad_inputs.py runs every kind through ingest, preprocessing,
pseudo-labels and label maps; `python tests/bad_inputs.py` writes the table in docs/bad_inputs.md.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from damage import (
    VICTIM,
    add_lesions,
    body_hu,
    copy_file,
    corrupt_middle,
    edit_csv,
    hu_with_padding,
    image_of,
    labels,
    lesion_mask,
    metadata,
    npz_bytes,
    remove_tree,
    reports,
    rewrite_gz,
    set_cell,
    set_pixdim,
    set_voxels,
    volume_path,
    write_image,
    write_volume,
)


@dataclass(frozen=True)
class Kind:
    """One kind of bad input. expect: 'ingest error', 'rejected', 'repaired', 'left out' or 'accepted';
    pattern: a regex the error (or the problems column) must match; check: extra assertions on the run."""

    name: str
    area: str  # volume | metadata | reports | labels | masks | folders
    what: str
    damage: Callable[[Path], None]
    expect: str
    pattern: str = ""
    outcome: str = ""  # the documented outcome, in words (the docs table)
    check: Callable[[Run], None] | None = None


@dataclass
class Run:
    """What the steps made of a damaged root (filled by tests/test_bad_inputs.py)."""

    manifest: pd.DataFrame
    unlisted: pd.DataFrame
    preprocessed: pd.DataFrame  # index.parquet of the preprocessing shard
    errors: dict[str, dict[str, str]]  # step -> {case: error}


def rejected_by_every_reader(run: Run) -> None:
    """A rejected training volume is rejected by preprocessing and the pseudo-labeler alike (one loader)."""
    assert VICTIM in run.errors["preprocess"] and VICTIM in run.errors["pseudolabel"]
    assert VICTIM not in set(run.preprocessed["volume_name"])


def repaired(**facts) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        row = run.preprocessed.set_index("volume_name").loc[VICTIM]
        for key, want in facts.items():
            got = row[key]
            assert (np.isnan(got) and np.isnan(want)) if isinstance(want, float) and np.isnan(want) else got == want, \
                (key, got, want)
        assert not run.errors["pseudolabel"], run.errors["pseudolabel"]

    return check


def flag(column: str, value: bool) -> Callable[[Run], None]:
    """The victim's manifest column is `value`."""
    def check(run: Run) -> None:
        assert bool(run.manifest.set_index("volume_name").loc[VICTIM, column]) == value

    return check


def not_found(run: Run) -> None:
    assert not run.manifest.set_index("volume_name").loc[VICTIM, "image_exists"]
    assert VICTIM in run.errors["preprocess"]


def _kinds() -> list[Kind]:
    k: list[Kind] = []
    add = k.append
    # ---------------------------------------------------------------- volume files
    add(Kind("gz_truncated", "volume", "a .nii.gz cut in half (interrupted download)",
             lambda r: rewrite_gz(volume_path(r), lambda b: b[: len(b) // 2]), "rejected", r"truncated|cannot read",
             check=rejected_by_every_reader))
    add(Kind("gz_corrupt_small", "volume", "16 bytes flipped in the middle of a small .nii.gz (header unreadable)",
             lambda r: rewrite_gz(volume_path(r), corrupt_middle), "rejected", r"is truncated or corrupt",
             check=rejected_by_every_reader))
    add(Kind("gz_corrupt_voxels", "volume", "16 bytes flipped among the voxels of a .nii.gz (header and size intact)",
             lambda r: (write_volume(r, body_hu((24, 64, 64))), rewrite_gz(volume_path(r), corrupt_middle)),
             "rejected", r"is truncated or corrupt \(gzip: CRC check failed", check=rejected_by_every_reader))
    add(Kind("nii_truncated", "volume", "an uncompressed .nii missing its last 1000 bytes",
             lambda r: rewrite_gz(write_volume(r, body_hu(), suffix=".nii"), lambda b: b[:-1000]),
             "rejected", r"is truncated: \d+ bytes, its header announces", check=rejected_by_every_reader))
    add(Kind("empty_file", "volume", "a 0-byte file", lambda r: volume_path(r).write_bytes(b""), "rejected",
             r"file is empty", check=rejected_by_every_reader))
    add(Kind("not_nifti", "volume", "an HTML error page saved as .nii.gz",
             lambda r: volume_path(r).write_bytes(gzip.compress(b"<html>403 Forbidden</html>")), "rejected",
             r"cannot read|corrupt|truncated", check=rejected_by_every_reader))
    add(Kind("missing_file", "volume", "a report row whose volume file is absent",
             lambda r: volume_path(r).unlink(), "rejected", r"not found", check=not_found))
    add(Kind("two_d", "volume", "a single 2-D slice", lambda r: write_image(r, sitk.GetImageFromArray(
        body_hu()[0].astype(np.int16))), "rejected", r"has 2 dimensions", check=rejected_by_every_reader))
    add(Kind("four_d_single", "volume", "a 4-D export with one time point",
             lambda r: write_image(r, sitk.JoinSeries(image_of(body_hu()))), "repaired",
             outcome="squeezed to 3-D, then processed", check=repaired(hu_correction="none")))
    add(Kind("four_d_multi", "volume", "a 4-D series with 3 time points",
             lambda r: write_image(r, sitk.JoinSeries([image_of(body_hu())] * 3)), "rejected", r"has 4 dimensions",
             check=rejected_by_every_reader))
    add(Kind("rgb", "volume", "a colour (3-component) export",
             lambda r: write_image(r, sitk.Compose([image_of(body_hu())] * 3)), "rejected", r"3 components per voxel",
             check=rejected_by_every_reader))
    add(Kind("one_slice", "volume", "one axial slice stored as a 3-D volume",
             lambda r: write_volume(r, body_hu((1, 20, 20))), "rejected", r"at least 2 x 2 x 8 voxels",
             check=rejected_by_every_reader))
    add(Kind("few_slices", "volume", "4 slices", lambda r: write_volume(r, body_hu((4, 20, 20))), "rejected",
             r"size \(20, 20, 4\)", check=rejected_by_every_reader))
    add(Kind("thick_spacing", "volume", "50 mm slices in the header",
             lambda r: (write_volume(r, body_hu(), spacing=(1.5, 1.5, 50.0)),
                        set_cell(metadata(r), VICTIM, "ZSpacing", "")), "rejected",
             r"implausible spacing", check=rejected_by_every_reader))
    for value, label in ((0.0, "zero"), (-1.5, "negative")):
        add(Kind(f"{label}_spacing", "volume", f"a {label} x voxel size in the NIfTI header (ITK reads "
                 f"{'1 mm' if value == 0 else 'its absolute value'}), no metadata spacing",
                 lambda r, value=value: (set_pixdim(volume_path(r), 1, value), set_cell(metadata(r), VICTIM, "XYSpacing", "")),
                 "rejected", r"implausible spacing .* in its NIfTI header", check=rejected_by_every_reader))
    add(Kind("spacing_vs_metadata", "volume", "header spacing 0.75 mm, metadata XYSpacing 1.5 mm",
             lambda r: write_volume(r, body_hu(), spacing=(0.75, 0.75, 2.0)), "rejected",
             r"x spacing 0.75 mm in the header, 1.5 mm in the metadata", check=rejected_by_every_reader))
    add(Kind("nan_voxels", "volume", "NaN voxels in a float32 volume",
             lambda r: write_volume(r, set_voxels(body_hu(), (5, 5, 5), np.nan), np.float32), "rejected",
             r"1 NaN or infinite voxels", check=rejected_by_every_reader))
    add(Kind("inf_voxels", "volume", "+inf voxels in a float64 volume",
             lambda r: write_volume(r, set_voxels(body_hu(), (5, slice(0, 3), 5), np.inf), np.float64), "rejected",
             r"3 NaN or infinite voxels", check=rejected_by_every_reader))
    add(Kind("constant", "volume", "every voxel 0 (a failed export)",
             lambda r: write_volume(r, np.zeros((12, 20, 20))), "rejected", r"is constant",
             check=rejected_by_every_reader))
    add(Kind("air_only", "volume", "noisy air and nothing else",
             lambda r: write_volume(r, -1000 + np.random.default_rng(1).normal(0, 5, (12, 20, 20))), "rejected",
             r"no correction .* puts air near -1000 HU and tissue", check=rejected_by_every_reader))
    add(Kind("uint8_noise", "volume", "uint8 noise (not CT)",
             lambda r: write_volume(r, np.random.default_rng(2).integers(0, 255, (12, 20, 20)), np.uint8),
             "rejected", r"no correction", check=rejected_by_every_reader))
    for pad in (-2000, -2048, -3024):
        add(Kind(f"padding_{-pad}", "volume", f"HU with {pad} padding outside the field of view (intercept -1024)",
                 lambda r, pad=pad: write_volume(r, hu_with_padding(pad)), "repaired",
                 outcome="padding found and set to air; air measured inside the field of view; no rescaling",
                 check=repaired(hu_correction="none", padding=float(pad))))
    add(Kind("raw_uint16", "volume", "raw stored values (HU + 1024) as uint16, intercept -1024",
             lambda r: write_volume(r, np.clip(np.round(body_hu() + 1024), 0, None), np.uint16), "repaired",
             outcome="rescaled with the metadata's slope and intercept", check=repaired(hu_correction="rescaled")))
    add(Kind("raw_padded", "volume", "raw stored values padded with -2000 (raw), intercept -1024",
             lambda r: write_volume(r, hu_with_padding(-2000, "raw")), "repaired",
             outcome="padding set to air, then rescaled", check=repaired(hu_correction="rescaled", padding=-2000.0)))
    add(Kind("double_rescaled", "volume", "HU with the intercept applied twice (air at -2024)",
             lambda r: write_volume(r, np.round(body_hu()) - 1024), "repaired",
             outcome="un-rescaled once", check=repaired(hu_correction="unrescaled")))
    add(Kind("trap_intercept", "volume", "HU volume whose metadata says intercept -8192 (CT-RATE's trap)",
             lambda r: set_cell(metadata(r), VICTIM, "RescaleIntercept", "-8192"), "repaired",
             outcome="kept as stored (the data already hold HU)", check=repaired(hu_correction="none")))
    add(Kind("slope_half", "volume", "raw int32 values with slope 0.5", lambda r: (
        write_volume(r, np.round((body_hu() + 1024) / 0.5), np.int32),
        set_cell(metadata(r), VICTIM, "RescaleSlope", "0.5")), "repaired",
        outcome="rescaled with slope 0.5", check=repaired(hu_correction="rescaled")))
    add(Kind("float64_hu", "volume", "HU stored as float64", lambda r: write_volume(r, body_hu(), np.float64),
             "accepted", outcome="read as is", check=repaired(hu_correction="none")))
    add(Kind("clipped_air", "volume", "air clipped to exactly -1024 outside the body, no lungs",
             lambda r: write_volume(r, np.where(body_hu() < -500, -1024, np.round(body_hu()))), "accepted",
             outcome="-1024 is taken as air, not padding", check=repaired(hu_correction="none", padding=float("nan"))))
    # ---------------------------------------------------------------- metadata
    add(Kind("metadata_missing", "metadata", "no metadata CSV",
             lambda r: metadata(r).unlink(), "accepted",
             outcome="no spacing or rescale metadata: the header and the data decide", check=repaired(hu_correction="none")))
    add(Kind("metadata_row_missing", "metadata", "no metadata row for a volume",
             lambda r: edit_csv(metadata(r), lambda df: df[~df["VolumeName"].str.startswith(VICTIM)]), "accepted",
             outcome="as without metadata", check=repaired(hu_correction="none")))
    add(Kind("metadata_spacing_garbage", "metadata", "XYSpacing 'n/a'",
             lambda r: set_cell(metadata(r), VICTIM, "XYSpacing", "n/a"), "accepted",
             outcome="an unparsable value counts as absent", check=repaired(hu_correction="none")))
    # ---------------------------------------------------------------- reports
    add(Kind("reports_missing", "reports", "no train_reports.csv", lambda r: reports(r).unlink(),
             "ingest error", r"missing CT-RATE file: .*train_reports.csv"))
    add(Kind("reports_column_missing", "reports", "Findings_EN column missing",
             lambda r: edit_csv(reports(r), lambda df: df.drop(columns=["Findings_EN"])), "ingest error",
             r"missing columns \['Findings_EN'\]"))
    add(Kind("reports_duplicate_row", "reports", "a VolumeName listed twice",
             lambda r: edit_csv(reports(r), lambda df: pd.concat([df, df.iloc[:1]])), "ingest error",
             r"duplicate VolumeName rows \['train_1_a_1'\]"))
    add(Kind("reports_bad_name", "reports", "a VolumeName not of the form split_patient_scan_reconstruction",
             lambda r: set_cell(reports(r), VICTIM, "VolumeName", "train_1_a"), "ingest error",
             r"VolumeName train_1_a is not split_patient_scan_recon"))
    add(Kind("reports_wrong_split", "reports", "a validation volume in the training reports",
             lambda r: set_cell(reports(r), VICTIM, "VolumeName", "valid_9_a_1.nii.gz"), "ingest error",
             r"volume valid_9_a_1 does not belong to split 'train'"))
    add(Kind("report_empty", "reports", "findings and impressions both 'Not given.'", lambda r: (
        set_cell(reports(r), VICTIM, "Findings_EN", "Not given."),
        set_cell(reports(r), VICTIM, "Impressions_EN", "Not given.")), "left out", r"empty findings and impressions",
        outcome="has_report false: left out of Stage 3 targets, the tokenizer and scoring; counted",
        check=flag("has_report", False)))
    add(Kind("report_row_missing", "reports", "a volume file with no report row",
             lambda r: edit_csv(reports(r), lambda df: df[~df["VolumeName"].str.startswith(VICTIM)]), "left out",
             outcome="listed in results/manifest/ct_rate_unlisted.csv",
             check=lambda run: _assert(VICTIM in set(run.unlisted["volume_name"])
                                       and VICTIM not in set(run.manifest["volume_name"]))))
    # ---------------------------------------------------------------- labels
    add(Kind("labels_file_missing", "labels", "no train_predicted_labels.csv", lambda r: labels(r).unlink(),
             "left out", r"no labels file", outcome="labels_known false for the split: left out of Stage 2 and scoring",
             check=flag("labels_known", False)))
    add(Kind("labels_row_missing", "labels", "no labels row for a volume",
             lambda r: edit_csv(labels(r), lambda df: df[~df["VolumeName"].str.startswith(VICTIM)]), "left out",
             r"no labels row", outcome="labels_known false: left out of Stage 2 and scoring, never all-negative",
             check=flag("labels_known", False)))
    add(Kind("label_value_2", "labels", "a label value 2", lambda r: set_cell(labels(r), VICTIM, "Cardiomegaly", "2"),
             "left out", r"label 'Cardiomegaly' is '2', not 0 or 1", outcome="labels_known false", check=flag("labels_known", False)))
    add(Kind("label_value_text", "labels", "a label value 'yes'",
             lambda r: set_cell(labels(r), VICTIM, "Emphysema", "yes"), "left out", r"label 'Emphysema' is 'yes'",
             outcome="labels_known false", check=flag("labels_known", False)))
    add(Kind("label_value_empty", "labels", "an empty label cell",
             lambda r: set_cell(labels(r), VICTIM, "Atelectasis", ""), "left out", r"label 'Atelectasis' is ''",
             outcome="labels_known false", check=flag("labels_known", False)))
    add(Kind("label_value_float", "labels", "label values written as 1.0 / 0.0",
             lambda r: set_cell(labels(r), VICTIM, "Cardiomegaly", "1.0"), "accepted",
             outcome="read as 1 / 0",
             check=lambda run: _assert(run.manifest.set_index("volume_name").loc[VICTIM, "Cardiomegaly"] == 1)))
    add(Kind("labels_column_missing", "labels", "a label column missing",
             lambda r: edit_csv(labels(r), lambda df: df.drop(columns=["Hiatal hernia"])), "ingest error",
             r"missing columns \['Hiatal hernia'\]"))
    add(Kind("labels_duplicate_row", "labels", "a labels row listed twice",
             lambda r: edit_csv(labels(r), lambda df: pd.concat([df, df.iloc[:1]])), "ingest error",
             r"train_predicted_labels.csv: duplicate VolumeName rows"))
    # ---------------------------------------------------------------- folders
    add(Kind("duplicate_file", "folders", "the same VolumeName in two folders", lambda r: copy_file(
        volume_path(r), r / "dataset" / "train" / f"{VICTIM}.nii.gz"), "ingest error",
        r"1 VolumeNames have more than one file.*train_1_a_1: .*train_1_a_1.nii.gz, .*train_1_a_1.nii.gz"))
    add(Kind("nii_beside_gz", "folders", "a .nii beside the .nii.gz of the same volume",
             lambda r: sitk.WriteImage(sitk.ReadImage(str(volume_path(r))), str(volume_path(r).with_suffix(""))),
             "ingest error", r"more than one file"))
    add(Kind("hidden_partial", "folders", "a hidden half-written download (.train_1_a_1.nii.gz.part.nii.gz)",
             lambda r: (volume_path(r).parent / f".{VICTIM}.nii.gz.part.nii.gz").write_bytes(b"\x1f\x8b"), "accepted",
             outcome="hidden files are not volumes",
             check=lambda run: _assert(run.unlisted.empty and not run.errors["preprocess"])))
    add(Kind("no_dataset_folder", "folders", "no dataset/ folder", lambda r: remove_tree(r / "dataset"), "ingest error",
             r"no dataset/ folder"))
    # ---------------------------------------------------------------- lesion masks (ReXGroundingCT)
    add(Kind("mask_ok", "masks", "a valid lesion mask (control)", lambda r: add_lesions(r, lesion_mask(), {"1": "2d"}),
             "accepted", outcome="merged into C+L and F+L",
             check=lambda run: _assert(not run.errors["labels"])))
    add(Kind("mask_empty_file", "masks", "a 0-byte .npz", lambda r: add_lesions(r, None, {"1": "2d"}, file_bytes=b""),
             "rejected", r"cannot read lesion mask .*empty or truncated",
             check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_truncated", "masks", "a truncated .npz",
             lambda r: add_lesions(r, None, {"1": "2d"}, file_bytes=npz_bytes(mask=lesion_mask())[:200]), "rejected",
             r"cannot read lesion mask", check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_wrong_key", "masks", "an .npz whose array is not named 'mask'",
             lambda r: add_lesions(r, None, {"1": "2d"}, file_bytes=npz_bytes(seg=lesion_mask(), other=lesion_mask())),
             "rejected", r"expected one named 'mask'", check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_shape", "masks", "a mask of another image's size",
             lambda r: add_lesions(r, lesion_mask(shape_xyz=(20, 20, 10)), {"1": "2d"}), "rejected",
             r"differs from the", check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_channels", "masks", "2 mask channels, 1 category in the JSON",
             lambda r: add_lesions(r, lesion_mask(2), {"1": "2d"}), "rejected", r"has 2 channels, its JSON lists 1",
             check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_category", "masks", "a category code ReXGroundingCT does not have",
             lambda r: add_lesions(r, lesion_mask(), {"1": "7x"}), "rejected", r"unknown ReXGroundingCT categories",
             check=lambda run: _assert(VICTIM in run.errors["labels"])))
    add(Kind("mask_missing_file", "masks", "a dataset.json entry without its mask file",
             lambda r: add_lesions(r, None, {"1": "2d"}), "rejected", r"lesion mask not found",
             check=lambda run: _assert(VICTIM in run.errors["labels"])))
    return k


def _assert(ok: bool) -> None:
    assert ok


KINDS = _kinds()


def table() -> str:
    """The docs table: every kind, what it is and what the pipeline does with it."""
    lines = ["| # | area | bad input | outcome |", "|---|---|---|---|"]
    for i, kind in enumerate(KINDS, 1):
        if kind.expect in ("ingest error", "rejected"):
            where = "ingest fails" if kind.expect == "ingest error" else "the volume is rejected, the others go on"
            outcome = f"{where}; the error matches `{kind.pattern}`"
        else:
            outcome = f"{kind.expect}: {kind.outcome}" + (f" (problems: `{kind.pattern}`)" if kind.pattern else "")
        lines.append(f"| {i} | {kind.area} | {kind.what} | {outcome.replace('|', chr(92) + '|')} |")  # escape pipes
    return "\n".join(lines) + "\n"


HEADER = """# Bad inputs and what the pipeline does with them

Generated by `python tests/bad_inputs.py` from the corpus that `tests/test_bad_inputs.py` runs through
ingest, preprocessing, pseudo-labels (classical) and label maps; every row's outcome is asserted there.
"Rejected" volumes are listed with the case, the file and the reason in the step's `errors.csv`
(`on_volume_error: skip`) or fail their shard naming them (`fail`); "left out" volumes stay in the
manifest with the reason in its `problems` column.

"""

if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(HEADER + table())
    print(f"{len(KINDS)} kinds -> {out}", file=sys.stderr)
