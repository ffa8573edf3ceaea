"""The rule-based label extractor: exact on the demo, sensible on CT-RATE-like phrasing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uvlm.constants import CT_RATE_LABELS
from uvlm.demo.abnormalities import LOBES
from uvlm.demo.ct_rate_writer import DemoConfig, write_demo_ct_rate
from uvlm.demo.phantom import PhantomConfig
from uvlm.demo.reports import make_report
from uvlm.evaluation.extract_rules import extract_label_matrix, extract_labels


def _text(findings: str, impressions: str) -> str:
    return f"Findings: {findings} Impressions: {impressions}"  # the authors' report text


def test_reproduces_demo_label_csv(tmp_path: Path) -> None:
    cfg = DemoConfig(n_patients=12, seed=7, phantom=PhantomConfig().with_shape((16, 32, 32)))
    write_demo_ct_rate(tmp_path, cfg, progress=False)
    for table, labels in (("train", "train"), ("validation", "valid")):
        reports = pd.read_csv(tmp_path / "radiology_text_reports" / f"{table}_reports.csv")
        expected = pd.read_csv(tmp_path / "multi_abnormality_labels" / f"{labels}_predicted_labels.csv")
        got = extract_label_matrix([_text(f, i) for f, i in zip(reports.Findings_EN, reports.Impressions_EN,
                                                                  strict=True)])
        np.testing.assert_array_equal(got, expected[list(CT_RATE_LABELS)].to_numpy())


def test_exact_on_many_generated_reports() -> None:
    """Every template, negation pair and follow-up phrasing of reports.py, with varied details."""
    rng = np.random.default_rng(0)
    for _ in range(1500):
        abnormalities = {x for x in CT_RATE_LABELS if rng.random() < 0.3}
        side = str(rng.choice(["right", "left", "bilateral"]))
        lobe = str(rng.choice(LOBES))
        kind = str(rng.choice(["pacemaker", "sternotomy wires", "port catheter"]))
        nodules = [{"size_mm": 14, "lobe": lobe}, {"size_mm": 20, "lobe": LOBES[0]}]
        details = {"Lung nodule": {"nodules": nodules},
                   "Pleural effusion": {"side": side, "thickness_mm": 31}, "Bronchiectasis": {"side": side},
                   "Consolidation": {"lobe": lobe, "extent": "lobar"},
                   "Lung opacity": {"lobes": [lobe, LOBES[1]]}, "Medical material": {"kind": kind},
                   "previous": {x for x in CT_RATE_LABELS if rng.random() < 0.5}}
        findings, impressions = make_report(rng, abnormalities, details)
        got = extract_labels(_text(findings, impressions))
        assert got == {x: int(x in abnormalities) for x in CT_RATE_LABELS}, (findings, impressions)


@pytest.mark.parametrize(("text", "positives"), [
    ("No pleural or pericardial effusion was detected.", set()),
    ("Pleural and pericardial effusion were not observed.", set()),
    ("Pleural effusion-thickening was not detected.", set()),
    ("Bilateral pleural effusion is observed, more prominent on the right.", {"Pleural effusion"}),
    ("Heart size is normal.", set()),
    ("Heart contour, size are normal.", set()),
    ("The heart is not enlarged.", set()),
    ("The heart is enlarged.", {"Cardiomegaly"}),
    ("Increased cardiothoracic ratio.", {"Cardiomegaly"}),
    ("Cardiomegaly and pericardial effusion were not observed.", set()),
    ("Minimal pericardial effusion is present.", {"Pericardial effusion"}),
    ("No mass or nodule was detected in the lungs.", set()),
    ("A 7 mm nodule is seen in the right upper lobe.", {"Lung nodule"}),
    ("There is a hypodense nodule in the left lobe of the thyroid gland.", set()),
    ("No significant change in the 8 mm nodule in the left lower lobe.", {"Lung nodule"}),
    ("The previously described consolidation has resolved.", set()),
    ("Pleural effusion is no longer seen.", set()),
    ("Free of consolidation.", set()),
    ("Negative for pulmonary embolism or consolidation.", set()),
    ("No emphysema, but bronchiectasis is seen in both lower lobes.", {"Bronchiectasis"}),
    ("Ground-glass opacities in both lungs; no consolidation.", {"Lung opacity"}),
    ("Atherosclerotic changes in the aorta and coronary arteries.",
     {"Arterial wall calcification", "Coronary artery wall calcification"}),
    ("Calcified plaques in the coronary arteries.", {"Coronary artery wall calcification"}),
    ("Calcific atherosclerotic plaques were observed in the aortic arch.", {"Arterial wall calcification"}),
    ("No lymph node was detected in mediastinal and hilar regions at pathological size.", set()),
    ("No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral hilar-axillary "
     "pathological dimensions were detected.", set()),
    ("Mediastinal lymphadenopathy is present.", {"Lymphadenopathy"}),
    ("Sternotomy wires and a cardiac pacemaker are observed.", {"Medical material"}),
    ("Linear atelectasis in the right lower lobe.", {"Atelectasis"}),
    ("Mosaic attenuation pattern is noted.", {"Mosaic attenuation pattern"}),
    ("Interlobular septal thickening and peribronchial thickening are observed.",
     {"Interlobular septal thickening", "Peribronchial thickening"}),
    ("Sliding type hiatal hernia.", {"Hiatal hernia"}),
    ("Emphysematous changes in both lungs.", {"Emphysema"}),
    ("Sequelae fibrotic changes in the left upper lobe.", {"Pulmonary fibrotic sequela"}),
    ("Trachea, both main bronchi are open. Mediastinal main vascular structures, heart contour, size are "
     "normal. "
     "Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected. "
     "When examined in the lung parenchyma window; No mass lesion with distinguishable borders was detected "
     "in both lungs. Upper abdominal organs included in the sections are normal.", set()),
])
def test_hand_written_sentences(text: str, positives: set[str]) -> None:
    assert extract_labels(text) == {x: int(x in positives) for x in CT_RATE_LABELS}


def test_matrix_shape_and_order() -> None:
    assert extract_label_matrix([]).shape == (0, len(CT_RATE_LABELS))
    m = extract_label_matrix(["Cardiomegaly.", "No cardiomegaly. Bronchiectasis."])
    assert m.dtype.kind == "i" and m.shape == (2, 18)
    assert m[0].tolist() == [int(x == "Cardiomegaly") for x in CT_RATE_LABELS]
    assert m[1].tolist() == [int(x == "Bronchiectasis") for x in CT_RATE_LABELS]
