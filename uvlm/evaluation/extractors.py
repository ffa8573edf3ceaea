"""Report-to-label extraction, one entry point for every backend (config `evaluation`).

rules    deterministic keyword and negation rules (uvlm.evaluation.extract_rules)
llm      an OpenAI-compatible endpoint through the openai client (uvlm.evaluation.extract_llm)
radbert  the CT-RATE RadBERT text classifier from local files (uvlm.evaluation.extract_radbert)
Every backend returns an (N, L) int8 matrix; -1 marks a report whose labels could not be obtained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from uvlm.evaluation.extract_rules import LABEL_SETS, extract_label_matrix

log = logging.getLogger(__name__)
PROMPTS = {"ct_rate": "ct_rate_v1.md", "abdomen_atlas": "abdomen_atlas_v1.md"}


def extract(texts: list[str], dataset: str, backend: str, settings: dict, cache_dir: str | Path) -> np.ndarray:
    labels = list(LABEL_SETS[dataset][0])
    if backend == "rules":
        return extract_label_matrix(texts, dataset).astype(np.int8)
    if backend == "llm":
        from uvlm.evaluation.extract_llm import LLMConfig, extract_with_llm

        llm = dict(settings["llm"])
        llm["prompt_file"] = str(Path(llm.pop("prompt_dir")) / PROMPTS[dataset])
        result = extract_with_llm(texts, labels, LLMConfig.from_mapping(llm), Path(cache_dir) / "llm_cache.sqlite",
                                  Path(cache_dir) / "llm_calls.jsonl")
        for f in result.failures:
            log.error("report %d: no labels from the LLM: %s", f["index"], f["reason"])
        return result.labels
    if backend == "radbert":
        from uvlm.evaluation.extract_radbert import RadBertExtractor

        rb = settings["radbert"]
        if dataset != "ct_rate":
            raise ValueError("the RadBERT classifier knows the 18 CT-RATE labels only")
        return RadBertExtractor(rb["model_dir"], rb.get("head_file") or None, labels,
                                threshold=rb.get("threshold", 0.5)).extract(texts)
    raise ValueError(f"unknown extractor '{backend}' (rules, llm, radbert)")
