"""Rule-based, negation-aware extraction of labels from report text: the 18 CT-RATE labels and the
3 AbdomenAtlas lesion labels (``LABEL_SETS``).

CT-RATE's own label classifier (RadBERT + linear head) is not public, so this deterministic
extractor is the transparent fallback: it reproduces the demo's labels exactly and gives sensible
labels on real CT-RATE phrasing. Patterns are data; add synonyms below, not code.

A label is positive when one of its patterns matches a clause without being negated. A match is
negated by a pre-negation cue before its end ("No pleural or pericardial effusion"), a
post-negation cue after its start ("... were not observed"), or a clause-wide cue ("resolved").
Hedged findings ("possible consolidation", "a nodule cannot be excluded") count as positive, like
uncertain mentions in CheXpert's "U-ones" convention; change UNCERTAIN_AS_POSITIVE to flip that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from uvlm.constants import ABDOMEN_LESION_LABELS, CT_RATE_LABELS

_CALC = r"(?:calcif\w*|atherosclero\w*|atherom\w*|plaques?)"
LABEL_PATTERNS: dict[str, list[str]] = {
    "Medical material": [
        r"pacemaker", r"sternotomy wires?", r"\bcatheters?\b", r"\bstents?\b", r"prosthe\w*",
        r"surgical clips?", r"\bmetallic\b", r"medical (?:material|device)", r"foreign (?:body|material)",
        r"\bimplants?\b", r"\bICD\b"],
    "Arterial wall calcification": [
        _CALC + r"[^.;]*?\b(?:aort\w*|arterial walls?|arch|main arteries|vascular structures)",
        r"\baort\w*[^.;]*?" + _CALC, r"\barterial wall calcif\w*"],
    "Cardiomegaly": [
        r"cardiomegaly", r"\b(?:heart|cardiac (?:silhouette|contour|size))\b[^.;]*?\benlarg(?:ed|ement)",
        r"\benlarged (?:heart|cardiac)", r"cardiac enlargement",
        r"(?:increased|enlarged) cardiothoracic ratio",
        r"cardiothoracic ratio (?:is |was )?increased", r"heart size (?:is |was )?increased",
        r"increased heart size"],
    "Pericardial effusion": [
        r"pericardial (?:effusion|fluid)",
        r"(?:fluid|effusion)[^.;]*?\bpericardi(?:um|al (?:space|cavity|sac))"],
    "Coronary artery wall calcification": [r"\bcoronar\w*[^.;]*?" + _CALC, _CALC + r"[^.;]*?\bcoronar"],
    "Hiatal hernia": [r"hiat(?:al|us) hernia"],
    "Lymphadenopathy": [
        r"lymphadenopath\w*", r"\b(?:enlarged|pathologic(?:al)?(?:ly enlarged)?)(?: \w+){0,3} lymph nodes?",
        r"\blymph nodes?\b[^.;]*?\b(?:enlarged|pathologic(?:al)? (?:size|dimensions?)|"
        r"increased (?:size|dimensions?))"],
    "Emphysema": [r"emphysema\w*", r"\bbullae\b", r"\bbullous\b", r"\bbulla\b"],
    "Atelectasis": [r"atelecta\w*", r"\b(?:lobar|segmental|lobe) collapse\b", r"collapsed? (?:lobe|lung)"],
    "Lung nodule": [r"\b(?:micro)?nodul(?:e|es|ar)\b", r"\bmass(?:es)?\b"],
    "Lung opacity": [r"ground[- ]glass", r"\bopacit(?:y|ies)\b", r"\binfiltrat\w*"],
    "Pulmonary fibrotic sequela": [
        r"\bfibro(?:sis|tic)\b", r"\bsequela\w*", r"parenchymal bands?", r"\bfibrous\b"],
    "Pleural effusion": [
        r"pleural (?:effusions?|fluid)", r"pleural (?:and|or|/) pericardial (?:effusions?|fluid)",
        r"(?:fluid|effusion)[^.;]*?\bpleural (?:space|cavit)"],
    "Mosaic attenuation pattern": [r"mosaic (?:attenuation|perfusion|pattern|oligemia)"],
    "Peribronchial thickening": [
        r"peribronchial (?:wall )?(?:thickening|cuffing)", r"bronchial wall thicken\w*",
        r"thicken\w* (?:of )?(?:the )?(?:peri)?bronchial walls?", r"thickened (?:peri)?bronchial walls?"],
    "Consolidation": [r"consolidat\w*"],
    "Bronchiectasis": [
        r"bronchiectas\w*", r"bronchiolectas\w*", r"dilat\w* bronch(?:i|us|ial)\b",
        r"bronch(?:i|ial)\w* dilat\w*"],
    "Interlobular septal thickening": [
        r"septal thickening", r"thicken\w* (?:of )?(?:the )?interlobular sept\w*",
        r"thickened interlobular sept\w*"],
}
_LESION = r"(?:lesions?|mass(?:es)?|tumou?rs?|cysts?|metasta\w*|nodules?|hypo(?:attenuating|dense|enhancing) (?:focus|foci|area|lesion)s?)"
ABDOMEN_PATTERNS: dict[str, list[str]] = {
    "liver_lesion": [r"\b(?:liver|hepatic|segment [1-8]|segments [1-8])\b[^.;:]*?\b" + _LESION,
                     r"\b" + _LESION + r"[^.;:]*?\b(?:liver|hepatic|segment [1-8])\b",
                     r"hepatocellular carcinoma", r"\bHCC\b", r"hemangioma"],
    "kidney_lesion": [r"\b(?:kidneys?|renal)\b[^.;:]*?\b" + _LESION,
                      r"\b" + _LESION + r"[^.;:]*?\b(?:kidneys?|renal)\b",
                      r"renal cell carcinoma", r"\bRCC\b", r"angiomyolipoma"],
    "pancreatic_lesion": [r"\bpancrea\w*[^.;:]*?\b" + _LESION, r"\b" + _LESION + r"[^.;:]*?\bpancrea\w*",
                          r"\bPDAC\b", r"\bIPMN\b", r"\bPNET\b"],
}
# A match does not count when its clause is about another organ (e.g. a thyroid nodule).
LABEL_EXCLUDE: dict[str, str] = {
    "Lung nodule": r"thyroid|liver|hepatic|adrenal|renal|kidney|spleen|splenic|breast|pancrea|axilla|lymph",
}
PRE_NEGATION = [r"\bno\b", r"\bnot\b", r"\bwithout\b", r"\bnegative for\b", r"\bfree of\b", r"\babsence of\b",
                r"\bnor\b", r"\bneither\b", r"\bnone\b"]
POST_NEGATION = [r"\bnot (?:been )?(?:detected|observed|seen|present|identified|noted|visuali[sz]ed|evident|"
                 r"found|demonstrated|apparent)\b", r"\babsent\b", r"\bexcluded\b", r"\bruled out\b"]
CLAUSE_NEGATION = [r"\bresolved\b", r"\bno longer\b", r"\bdisappeared\b", r"\bcompletely regressed\b",
                   r"\bregressed completely\b"]
PSEUDO_NEGATION = [r"\bno (?:significant |marked |interval |appreciable )?"
                   r"(?:change|progression|increase|growth|difference)\b", r"\bnot only\b"]
UNCERTAIN_AS_POSITIVE = True
UNCERTAINTY = [r"\bcan ?not be (?:excluded|ruled out)\b", r"\bcould not be (?:excluded|ruled out)\b",
               r"\bnot (?:be )?(?:definitely|entirely|completely) (?:excluded|ruled out)\b"]
CLAUSE_SPLIT = r"[;:]|,\s*(?:and|but|while|whereas|however)\b|\b(?:but|however|whereas|although|though)\b"

# dataset -> (label names in column order, patterns, exclusions)
LABEL_SETS: dict[str, tuple[tuple[str, ...], dict[str, list[str]], dict[str, str]]] = {
    "ct_rate": (CT_RATE_LABELS, LABEL_PATTERNS, LABEL_EXCLUDE),
    "abdomen_atlas": (ABDOMEN_LESION_LABELS, ABDOMEN_PATTERNS, {}),
}
_COMPILED = {name: ({label: [re.compile(p, re.I) for p in pats[label]] for label in labels},
                    {label: re.compile(p, re.I) for label, p in excl.items()})
             for name, (labels, pats, excl) in LABEL_SETS.items()}
_PRE, _POST, _CLAUSE, _PSEUDO, _UNCERTAIN = (re.compile("|".join(p), re.I) for p in (
    PRE_NEGATION, POST_NEGATION, CLAUSE_NEGATION, PSEUDO_NEGATION, UNCERTAINTY))
_SPLIT = re.compile(CLAUSE_SPLIT, re.I)


_LIST_NONE = re.compile(r"([^.;:\n]+):\s*(?:none|absent|negative|not (?:seen|present))\b", re.I)


def _clauses(text: str) -> list[str]:
    text = _LIST_NONE.sub(r"no \1", text)  # "Pleural effusion: none." -> "no Pleural effusion."
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return [c for s in sentences for c in _SPLIT.split(s) if c.strip()]


def _negated(clause: str, start: int, end: int) -> bool:
    return bool(_PRE.search(clause[:end]) or _POST.search(clause, start))


def extract_labels(text: str, dataset: str = "ct_rate") -> dict[str, int]:
    """{label: 0/1} for the dataset's labels (LABEL_SETS order)."""
    patterns_of, exclude = _COMPILED[dataset]
    out = dict.fromkeys(LABEL_SETS[dataset][0], 0)
    for raw in _clauses(text):
        clause = _PSEUDO.sub(" ", raw)
        if UNCERTAIN_AS_POSITIVE:  # "cannot be excluded" is a hedge, not a negation
            clause = _UNCERTAIN.sub(" ", clause)
        if _CLAUSE.search(clause):
            continue
        for label, patterns in patterns_of.items():
            if out[label] or (label in exclude and exclude[label].search(clause)):
                continue
            if any(not _negated(clause, m.start(), m.end()) for p in patterns for m in p.finditer(clause)):
                out[label] = 1
    return out


def extract_label_matrix(texts: Sequence[str], dataset: str = "ct_rate") -> np.ndarray:
    """(N, L) int matrix of extracted labels, columns in the dataset's label order."""
    labels = LABEL_SETS[dataset][0]
    rows = [extract_labels(t, dataset) for t in texts]
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.int64).reshape(len(texts), len(labels))
