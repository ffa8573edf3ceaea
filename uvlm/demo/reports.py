"""CT-RATE-style report text for the synthetic phantoms.

Reports must read like CT-RATE (anatomical order, explicit negations, varied phrasing) and agree
with the image: every positive label is described with the phantom's own details (nodule size and
lobe, effusion side, ...), and absent findings are only ever negated. The templates are data so
that extract_rules.py can be checked against all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uvlm.constants import CT_RATE_LABELS

SECTIONS = ("airway", "mediastinum", "oesophagus", "lungs", "pleura", "abdomen_bones")
SECTION_OF = {
    "Cardiomegaly": "mediastinum", "Pericardial effusion": "mediastinum",
    "Arterial wall calcification": "mediastinum", "Coronary artery wall calcification": "mediastinum",
    "Lymphadenopathy": "mediastinum", "Medical material": "mediastinum", "Hiatal hernia": "oesophagus",
    "Pleural effusion": "pleura",
}  # every other label: lungs

NEUTRAL = {
    "airway": [
        "Trachea and both main bronchi are open.",
        "Trachea and both main bronchi are in the midline and patent.",
        "The trachea and main bronchi are patent."],
    "mediastinum": [
        "Mediastinal main vascular structures are of normal calibre.",
        "Thoracic aorta diameter is normal.",
        "The diameter of the main pulmonary artery is normal."],
    "oesophagus": [
        "Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected."],
    "lungs": [],
    "pleura": [],
    "abdomen_bones": [
        "Upper abdominal organs included in the sections are normal.",
        "No space-occupying lesion was detected in the liver that entered the cross-sectional area.",
        "Bone structures in the study area are natural.",
        "Vertebral corpus heights are preserved.",
        "Degenerative changes are observed in the thoracic spine."],
}

POSITIVE = {
    "Lung nodule": [
        "A {size} mm solid nodule is observed in the {lobe}.",
        "A solid nodule measuring {size} mm was detected in the {lobe}.",
        "There is a {size} mm nodule in the {lobe}.",
        "A {size} mm pulmonary nodule with smooth contours is seen in the {lobe}."],
    "Pleural effusion": [
        "{Side} pleural effusion is observed, measuring {thick} mm in its thickest part.",
        "Pleural effusion is present {side_loc}.",
        "There is {side} pleural effusion reaching {thick} mm in thickness.",
        "Fluid {thick} mm thick is seen in the {side_space}."],
    "Cardiomegaly": [
        "Cardiomegaly is observed.",
        "The heart is enlarged, with a cardiothoracic ratio of {ctr}.",
        "Heart size is increased (cardiothoracic ratio {ctr}).",
        "Cardiac enlargement is noted."],
    "Pericardial effusion": [
        "Pericardial effusion reaching {thick} mm in thickness is observed.",
        "There is pericardial effusion with a thickness of {thick} mm.",
        "Fluid {thick} mm thick is seen in the pericardial space."],
    "Arterial wall calcification": [
        "Calcified atherosclerotic plaques are observed in the {sites}.",
        "Atherosclerotic calcifications are seen in the wall of the {sites}.",
        "Calcific atheroma plaques were observed in the {sites}."],
    "Coronary artery wall calcification": [
        "Calcified plaques are observed in the coronary arteries.",
        "Coronary artery calcifications are seen along the {vessel}.",
        "Calcific atherosclerosis is seen in the coronary arteries."],
    "Hiatal hernia": [
        "A hiatal hernia is observed.",
        "A sliding-type hiatal hernia measuring {size} mm is present.",
        "Hiatal hernia is noted at the esophagogastric junction."],
    "Lymphadenopathy": [
        "Enlarged lymph nodes are observed in the {stations} region, the largest measuring {short} mm in "
        "short axis.",
        "Mediastinal lymphadenopathy is present, with nodes up to {short} mm in short axis.",
        "Lymph nodes of pathological size are seen in the {stations} station."],
    "Emphysema": [
        "Centrilobular emphysematous changes are observed in both lungs, more prominent in the upper lobes.",
        "Emphysema is present in both lungs, with bullae up to {bulla} mm.",
        "Paraseptal and centrilobular emphysema is seen, predominantly in the upper lobes."],
    "Consolidation": [
        "Consolidation with air bronchograms is observed in the {lobe}.",
        "There is {extent} consolidation in the {lobe}.",
        "A consolidated area is seen in the {lobe}."],
    "Atelectasis": [
        "Atelectasis is observed in the posterobasal segment of the {lobe}.",
        "Subsegmental atelectatic changes are seen at the base of the {lobe}.",
        "Plate-like atelectasis is noted in the {lobe}."],
    "Bronchiectasis": [
        "Cylindrical bronchiectasis is observed in the {lower}.",
        "Bronchiectatic changes are seen in the {lower}.",
        "Dilated bronchi consistent with bronchiectasis are noted in the {lower}."],
    "Peribronchial thickening": [
        "Peribronchial thickening is observed in the {lower}.",
        "Bronchial wall thickening is noted in the {lower}.",
        "There is peribronchial wall thickening in the {lower}."],
    "Pulmonary fibrotic sequela": [
        "Sequelae fibrotic changes are observed in the {lobe}.",
        "Fibrotic bands are seen in the {lobe}.",
        "Parenchymal fibrotic densities consistent with sequelae are noted in the {lobe}."],
    "Lung opacity": [
        "Ground-glass opacities are observed in the {lobes}.",
        "Patchy ground glass densities are seen in the {lobes}.",
        "There are areas of ground-glass opacity in the {lobes}."],
    "Mosaic attenuation pattern": [
        "Mosaic attenuation pattern is observed in the {lobes}.",
        "Areas of mosaic attenuation are noted in both lungs."],
    "Interlobular septal thickening": [
        "Interlobular septal thickening is observed in the periphery of both lower lobes.",
        "Thickening of the interlobular septa is noted in the subpleural areas of both lower lobes."],
    "Medical material": ["{device}"],
}
DEVICE = {
    "pacemaker": [
        "A cardiac pacemaker is observed in the left anterior chest wall, with its lead extending into the "
        "right heart chambers."],
    "sternotomy wires": ["Sternotomy wires are observed.", "Median sternotomy wires are noted."],
    "port catheter": [
        "A port catheter is observed in the right anterior chest wall, with its tip in the superior "
        "vena cava."],
}
BOTH_CALCIFIED = ["Calcified atherosclerotic plaques are observed in the aorta and coronary arteries.",
                  "Atherosclerotic changes are seen in the thoracic aorta and coronary arteries."]

IMPRESSION = {
    "Lung nodule": ["{size} mm nodule in the {lobe}.", "Pulmonary nodule in the {lobe}."],
    "Pleural effusion": ["{Side} pleural effusion."],
    "Cardiomegaly": ["Cardiomegaly."],
    "Pericardial effusion": ["Pericardial effusion."],
    "Arterial wall calcification": ["Aortic atherosclerosis.", "Atherosclerotic changes in the aorta."],
    "Coronary artery wall calcification": ["Coronary artery calcification.", "Coronary atherosclerosis."],
    "Hiatal hernia": ["Hiatal hernia."],
    "Lymphadenopathy": ["Mediastinal lymphadenopathy.", "Enlarged mediastinal lymph nodes."],
    "Emphysema": ["Emphysema.", "Emphysematous changes in both lungs."],
    "Consolidation": ["Consolidation in the {lobe}.",
                      "{Extent} consolidation in the {lobe}, likely pneumonia."],
    "Atelectasis": ["Atelectasis in the {lobe}."],
    "Bronchiectasis": ["Bronchiectasis."],
    "Peribronchial thickening": ["Peribronchial thickening."],
    "Pulmonary fibrotic sequela": ["Fibrotic sequelae in the {lobe}."],
    "Lung opacity": ["Ground-glass opacities in the {lobes}."],
    "Mosaic attenuation pattern": ["Mosaic attenuation pattern."],
    "Interlobular septal thickening": ["Interlobular septal thickening."],
    "Medical material": ["{device_short}."],
}
NO_FINDINGS = ["No significant pathology.", "No acute pathology was detected in the thorax.",
               "Normal chest CT."]

NEGATIVE = {
    "Medical material": ["No medical device or foreign material is observed."],
    "Arterial wall calcification": [
        "No calcific atherosclerotic plaque was observed in the aorta.",
        "The thoracic aorta shows no atherosclerotic calcification."],
    "Cardiomegaly": [
        "Heart size is normal.", "Heart contour and size are normal.", "No cardiomegaly was observed.",
        "The heart is not enlarged."],
    "Pericardial effusion": [
        "No pericardial effusion.", "Pericardial effusion-thickening was not observed.",
        "There is no pericardial effusion."],
    "Coronary artery wall calcification": [
        "No calcification was observed in the coronary arteries.",
        "Coronary arteries show no calcified plaque."],
    "Hiatal hernia": ["No hiatal hernia was observed.", "There is no hiatal hernia."],
    "Lymphadenopathy": [
        "No lymphadenopathy.",
        "No lymph node was detected in mediastinal and hilar regions at pathological size.",
        "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral hilar-axillary "
        "pathological dimensions were detected."],
    "Emphysema": ["No emphysema was detected.", "There is no emphysema."],
    "Atelectasis": ["No atelectasis was observed.", "There is no atelectasis."],
    "Lung nodule": [
        "No mass or nodule was detected in the lungs.", "No pulmonary nodule was observed.",
        "No mass lesion with distinguishable borders was detected in both lungs."],
    "Lung opacity": [
        "No ground-glass opacity was observed.",
        "No infiltration or opacity is seen in the lung parenchyma."],
    "Pulmonary fibrotic sequela": ["No fibrotic changes are seen in the lungs."],
    "Pleural effusion": [
        "No pleural effusion.", "Pleural effusion-thickening was not detected.",
        "There is no pleural effusion."],
    "Mosaic attenuation pattern": ["No mosaic attenuation pattern is seen."],
    "Peribronchial thickening": ["No peribronchial thickening."],
    "Consolidation": ["No consolidation was observed in the lungs.", "No pneumonic consolidation is seen."],
    "Bronchiectasis": ["No bronchiectasis.", "Bronchiectasis was not observed."],
    "Interlobular septal thickening": ["No interlobular septal thickening."],
}
NEGATIVE_PAIRS = {
    ("Pleural effusion", "Pericardial effusion"): ["No pleural or pericardial effusion was detected.",
                                                   "Pleural and pericardial effusion were not observed."],
    ("Consolidation", "Lung opacity"): ["No consolidation or ground-glass opacity is seen.",
                                        "No infiltration or consolidation was detected in the lungs."],
    ("Emphysema", "Bronchiectasis"): ["There is no emphysema or bronchiectasis."],
    ("Cardiomegaly", "Pericardial effusion"): ["Cardiomegaly and pericardial effusion were not observed."],
    ("Lung nodule", "Consolidation"): ["No nodule, mass or consolidation was detected in the lungs."],
    ("Arterial wall calcification", "Coronary artery wall calcification"): [
        "No atherosclerotic calcification was observed in the aorta or coronary arteries."],
}
# Names used for follow-up comparisons ("resolved" only for findings that can resolve).
NAME = {"Pleural effusion": "pleural effusion", "Pericardial effusion": "pericardial effusion",
        "Consolidation": "consolidation", "Atelectasis": "atelectasis",
        "Lung opacity": "ground-glass opacity",
        "Lymphadenopathy": "mediastinal lymphadenopathy", "Lung nodule": "pulmonary nodule",
        "Peribronchial thickening": "peribronchial thickening", "Emphysema": "emphysema",
        "Bronchiectasis": "bronchiectasis", "Hiatal hernia": "hiatal hernia", "Cardiomegaly": "cardiomegaly"}
RESOLVABLE = ("Pleural effusion", "Pericardial effusion", "Consolidation", "Atelectasis", "Lung opacity",
              "Lymphadenopathy", "Lung nodule", "Peribronchial thickening")
RESOLVED = ["The previously described {name} has resolved.",
            "The {name} seen on the previous examination is no longer observed.",
            "Compared to the previous examination, the {name} has completely regressed."]
STABLE = ["Compared with the previous examination, the {name} is stable."]


# How often an absent finding is stated as negative, and an optional normal sentence is written.
# Kept moderate so demo reports stay ~200 tokens (CT-RATE's are longer; the demo trains on a CPU).
P_NEGATION = 0.35
P_NEUTRAL = 0.4


def _lobe(rng: np.random.Generator, lobe: str) -> str:
    _, part, _, side = lobe.split("_")
    return f"{part} lobe of the {side} lung" if rng.random() < 0.6 else f"{side} {part} lobe"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fields(rng: np.random.Generator, label: str, d: dict[str, Any]) -> list[dict[str, str]]:
    """Placeholder values for one label (a list: one entry per nodule, else one entry)."""
    if label == "Lung nodule":
        nodules = d.get("nodules") or [{"size_mm": 12, "lobe": "lung_upper_lobe_right"}]
        return [{"size": str(n["size_mm"]), "lobe": _lobe(rng, n["lobe"])} for n in nodules]
    side = d.get("side", "right")
    f = {"side": side, "Side": side.capitalize(), "thick": str(d.get("thickness_mm", 15)),
         "side_loc": "on both sides" if side == "bilateral" else f"on the {side} side",
         "side_space": "bilateral pleural spaces" if side == "bilateral" else f"{side} pleural space",
         "lower": "lower lobes of both lungs" if side == "bilateral" else f"lower lobe of the {side} lung",
         "ctr": f"{d.get('ctr', 0.6):.2f}", "sites": _join(d.get("sites", ["thoracic aorta"])),
         "vessel": d.get("vessel", "left anterior descending artery"), "size": str(d.get("size_mm", 40)),
         "stations": _join(d.get("stations", ["subcarinal"])), "short": str(d.get("short_axis_mm", 15)),
         "bulla": str(d.get("bulla_mm", 20)), "extent": d.get("extent", "segmental"),
         "lobe": _lobe(rng, d.get("lobe", "lung_lower_lobe_right")),
         "lobes": _join([_lobe(rng, x) for x in d.get("lobes", ["lung_lower_lobe_right"])])}
    f["Extent"] = f["extent"].capitalize()
    kind = d.get("kind", "sternotomy wires")
    f["device"] = str(rng.choice(DEVICE[kind]))
    f["device_short"] = {"pacemaker": "Cardiac pacemaker", "sternotomy wires": "Sternotomy wires",
                         "port catheter": "Port catheter"}[kind]
    return [f]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


STYLES = ("varied", "structured")


def make_report(rng: np.random.Generator, abnormalities: set[str], details: dict,
                style: str = "varied") -> tuple[str, str]:
    """(Findings_EN, Impressions_EN) for one scan; details come from Phantom.details (+ "previous").

    style "structured" states every label, present or absent, in one fixed place and wording (see
    structured_report); "varied" is CT-RATE-like:

    Sections and the findings within them follow a fixed anatomical order, as radiologists' report
    templates do (CT-RATE's reports are written that way); phrasing, optional sentences and
    negations vary. The order is what lets a small demo model learn where each finding is stated.
    """
    if style == "structured":
        return structured_report(rng, abnormalities, details)
    if style != "varied":
        raise ValueError(f"report style must be one of {STYLES}, got {style!r}")
    order = {label: i for i, label in enumerate(CT_RATE_LABELS)}
    sections: dict[str, list[tuple[int, str]]] = {s: [] for s in SECTIONS}  # (order key, sentence)
    previous = set(details.get("previous", ()))
    impressions: list[tuple[int, str]] = []
    both_calc = {"Arterial wall calcification", "Coronary artery wall calcification"} <= abnormalities
    joint_calc = both_calc and rng.random() < 0.5
    for label in sorted(abnormalities, key=order.get):
        section, key = SECTION_OF.get(label, "lungs"), order[label]
        for f in _fields(rng, label, details.get(label, {})):
            if joint_calc and label == "Arterial wall calcification":
                sections[section].append((key, _pick(rng, BOTH_CALCIFIED)))
            elif not (joint_calc and label == "Coronary artery wall calcification"):
                sections[section].append((key, _pick(rng, POSITIVE[label]).format(**f)))
            impressions.append((key, _pick(rng, IMPRESSION[label]).format(**f)))
        if label in previous and label in NAME and rng.random() < 0.3:
            sections[section].append((key, _pick(rng, STABLE).format(name=NAME[label])))

    absent = sorted(set(NEGATIVE) - abnormalities, key=order.get)
    resolved = [x for x in absent if x in previous and x in RESOLVABLE and rng.random() < 0.7]
    for label in resolved:
        sections[SECTION_OF.get(label, "lungs")].append((order[label], _pick(rng, RESOLVED).format(name=NAME[label])))
    negated = {x for x in absent if x not in resolved and rng.random() < P_NEGATION}
    for labels, options in NEGATIVE_PAIRS.items():
        if set(labels) <= negated and rng.random() < 0.6:
            key = min(order[x] for x in labels)
            sections[SECTION_OF.get(labels[0], "lungs")].append((key, _pick(rng, options)))
            negated -= set(labels)
    for label in sorted(negated, key=order.get):
        sections[SECTION_OF.get(label, "lungs")].append((order[label], _pick(rng, NEGATIVE[label])))

    for name, neutral in NEUTRAL.items():
        if name == "oesophagus" and "Hiatal hernia" in abnormalities:
            continue
        if name == "airway":  # one airway sentence, as in CT-RATE
            sections[name].append((-1, _pick(rng, neutral)))
        else:
            sections[name] += [(-1, s) for s in neutral if rng.random() < P_NEUTRAL]
    text = []
    for name in SECTIONS:
        sentences = [sentence for _, sentence in sorted(sections[name], key=lambda item: item[0])]
        if name == "lungs" and sentences and rng.random() < 0.3:
            sentences[0] = "When examined in the lung parenchyma window; " + sentences[0]
        text += sentences
    impression = [sentence for _, sentence in sorted(impressions, key=lambda item: item[0])]
    return " ".join(text), " ".join(impression or [_pick(rng, NO_FINDINGS)])


def structured_report(rng: np.random.Generator, abnormalities: set[str], details: dict) -> tuple[str, str]:
    """Every one of the 18 labels in its fixed place: the first positive template (with the phantom's
    sizes and lobes) or the first negation; no optional sentences. A report then carries a decision for
    every label in a known position, so the few tokens that hold the labels are not drowned in template
    variation: what a small decoder trained for minutes on a CPU can learn to read from the image."""
    order = {label: i for i, label in enumerate(CT_RATE_LABELS)}
    by_section = sorted(CT_RATE_LABELS, key=lambda x: (SECTIONS.index(SECTION_OF.get(x, "lungs")), order[x]))
    findings, impressions = [], []
    for label in by_section:
        if label not in abnormalities:
            findings.append(NEGATIVE[label][0])
            continue
        for f in _fields(rng, label, details.get(label, {})):
            findings.append(POSITIVE[label][0].format(**f))
            impressions.append((order[label], IMPRESSION[label][0].format(**f)))
    impression = [sentence for _, sentence in sorted(impressions)]
    return " ".join(findings), " ".join(impression or [NO_FINDINGS[0]])
