"""Report-to-label extraction, one entry point for every backend (config `evaluation`).

rules    deterministic keyword and negation rules (uvlm.evaluation.extract_rules)
llm      an OpenAI-compatible endpoint through the openai client (uvlm.evaluation.extract_llm)
radbert  the CT-RATE RadBERT text classifier from local files (uvlm.evaluation.extract_radbert)
Every backend returns an (N, L) int8 matrix; -1 marks a report whose labels could not be obtained.
A label set (the manifest names it: `ct_rate`, `abdomen_atlas`, or a CSV dataset's own) picks the rules
(extract_rules.LABEL_SETS) and the LLM prompt (<prompt_dir>/<label set>_v1.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from uvlm.evaluation.extract_rules import LABEL_SETS, extract_label_matrix

log = logging.getLogger(__name__)


def prompt_name(label_set: str) -> str:
    """The versioned prompt file of a label set, under evaluation.llm.prompt_dir."""
    return f"{label_set}_v1.md"


def extract(texts: list[str], label_set: str, backend: str, settings: dict, cache_dir: str | Path,
            labels: list[str] | None = None) -> np.ndarray:
    """(N, L) labels of `texts`, columns in the label set's order (`labels`, default the rules' own)."""
    if label_set not in LABEL_SETS and (backend != "llm" or labels is None):
        raise ValueError(f"label set '{label_set}' has no extraction rules (uvlm/evaluation/extract_rules.py knows "
                         f"{sorted(LABEL_SETS)}): use evaluation.extractor llm with a prompt "
                         f"{prompt_name(label_set)} in evaluation.llm.prompt_dir")
    labels = list(labels or LABEL_SETS[label_set][0])
    if backend == "rules":
        if labels != list(LABEL_SETS[label_set][0]):
            raise ValueError(f"label set '{label_set}': the rules extract {list(LABEL_SETS[label_set][0])}, "
                             f"the manifest has {labels}")
        return extract_label_matrix(texts, label_set).astype(np.int8)
    if backend == "llm":
        from uvlm.evaluation.extract_llm import LLMConfig, extract_with_llm

        llm = dict(settings["llm"])
        llm["prompt_file"] = str(Path(llm.pop("prompt_dir")) / prompt_name(label_set))
        result = extract_with_llm(texts, labels, LLMConfig.from_mapping(llm), Path(cache_dir) / "llm_cache.sqlite",
                                  Path(cache_dir) / "llm_calls.jsonl")
        for f in result.failures:
            log.error("report %d: no labels from the LLM: %s", f["index"], f["reason"])
        return result.labels
    if backend == "radbert":
        from uvlm.evaluation.extract_radbert import RadBertExtractor

        rb = settings["radbert"]
        if label_set != "ct_rate":
            raise ValueError("the RadBERT classifier knows the 18 CT-RATE labels only")
        return RadBertExtractor(rb["model_dir"], rb.get("head_file") or None, labels,
                                threshold=rb.get("threshold", 0.5)).extract(texts)
    raise ValueError(f"unknown extractor '{backend}' (rules, llm, radbert)")
