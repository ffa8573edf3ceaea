"""Report pairs the metric tests score, and pycocoevalcap's scores of them (the independent reference)."""

from __future__ import annotations

import pytest

from uvlm.evaluation.metrics import clean_text_authors

# Report-like pairs: partial overlap, short hypotheses (brevity penalty), longer hypotheses, empty and
# punctuation-only texts, repeated words (clipping), numbers and exact matches.
PAIRS = [
    ("No pleural effusion. A 12 mm nodule is seen in the right upper lobe.",
     "No pleural or pericardial effusion. A 12.5 mm solid nodule is observed in the right upper lobe."),
    ("Heart size is enlarged. There is pericardial effusion.", "Cardiomegaly. Pericardial effusion is present."),
    ("Emphysema in both lungs, no consolidation.",
     "Centrilobular emphysema in both lungs. No consolidation or atelectasis."),
    ("The trachea is patent.", "Trachea and both main bronchi are patent."),
    ("Normal.", "Trachea and main bronchi are patent. Heart size is normal. No pleural effusion."),
    ("", "No lymphadenopathy in the mediastinum."),
    (".", "Mild atelectasis in the left lower lobe."),
    ("effusion effusion effusion effusion effusion", "Bilateral pleural effusion, larger on the right."),
    ("the the the the the the the", "The heart and the great vessels are normal in the study."),
    ("Hiatal hernia.", "Hiatal hernia."),
    ("Coronary artery wall calcification is present. Arterial wall calcification in the aorta.",
     "Calcified atherosclerotic plaques in the coronary arteries and the aortic wall."),
    ("Ground glass opacities in both lungs with interlobular septal thickening and mosaic attenuation "
     "pattern, consistent with an infectious process. No pleural effusion. No pericardial effusion. "
     "Heart size is normal. Mediastinal lymph nodes are not enlarged.",
     "Ground glass opacities in both lungs. Interlobular septal thickening."),
    ("Lung nodule 4 mm in the right middle lobe.", "A 4 mm nodule in the right middle lobe."),
    ("Bronchiectasis and peribronchial thickening in the lower lobes.",
     "Cylindrical bronchiectasis and peribronchial thickening in both lower lobes."),
    ("Pulmonary fibrotic sequela in the left upper lobe.", "Fibrotic sequelae in the left upper lobe apex."),
    ("No consolidation.", "No consolidation. No pleural effusion. No pneumothorax."),
    ("Medical material: a central venous catheter and a pacemaker.",
     "Pacemaker leads in the right heart chambers. Central venous catheter tip in the superior vena cava."),
    ("Thyroid normal", "The thyroid gland is normal in size."),
    ("lymphadenopathy lymphadenopathy mediastinal", "Mediastinal lymphadenopathy, the largest node 15 mm."),
    ("Liver, spleen and pancreas are normal.", "Liver, spleen and pancreas are normal."),
    ("Atelectasis in the lower lobes. Small pleural effusion on the left. Heart normal.",
     "Bilateral lower lobe atelectasis. Small left pleural effusion."),
    ("x", "x y"),
]


# A second corpus with what real generated and reference reports carry: newlines, quotes, decimals,
# double full stops, glued sentences, the end-of-turn token, capitals and commas.
PAIRS_RAW = [
    ("Findings:\nNo pleural effusion.. Heart size is normal.<|eot_id|>",
     "Findings:\nNo pleural effusion. Heart size is normal. Trachea is patent."),
    ('A 12.5 mm nodule in the "right upper lobe".', "A 12.5 mm solid nodule in the right upper lobe, unchanged."),
    ("Emphysema.Bronchiectasis in both lower lobes.", "Emphysema. Bronchiectasis in both lower lobes."),
    ("Normal.", "Mediastinal lymph nodes up to 9.8 mm.\nNo consolidation.\nNo pleural effusion. Heart normal."),
    ("Aorta 3.5 cm , ectatic . Coronary calcification .", "Ascending aorta 3.5 cm, ectatic. Coronary calcification."),
    ("IMPRESSION: Ground-glass opacities, bilateral.  Atelectasis.",
     "Impression: Ground-glass opacities, bilateral. Atelectasis."),
    ("Thyroid normal", "The thyroid gland is normal in size."),
    ("Hiatal hernia. Hiatal hernia. Hiatal hernia. Liver cyst 2.1 cm. Spleen normal. Pancreas normal.",
     "Hiatal hernia."),
]


def pycoco_scores(hyps: list[str], refs: list[str], clean=clean_text_authors) -> tuple[list[float], float]:
    """pycocoevalcap's Bleu(4) (closest ref length) and Rouge on `clean`ed texts."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    gts = {i: [clean(r)] for i, r in enumerate(refs)}
    res = {i: [clean(h)] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge = Rouge().compute_score(gts, res)[0] if gts else float("nan")
    return bleu, float(rouge)


def split_pairs(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]
