"""`uvlm evaluate` end to end with the LLM extractor: real openai client, a local chat-completions
server, a planted API key that must end up in no file; plus the two label comparisons and CIs, and the
BLEU keys of the metrics (the authors' convention under bleu*, the lowercase variant under *_lower)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from uvlm.constants import CT_RATE_LABELS
from uvlm.data.manifest import with_label_set

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-PLANTED-0123456789"


def _inputs(work: Path) -> None:
    rng = np.random.default_rng(0)
    rows, reports = [], []
    for i in range(12):
        present = [c for c in CT_RATE_LABELS if rng.random() < 0.3]
        text = "Findings: " + " ".join(f"{c} is seen." for c in present) or "Findings: normal."
        rows.append({"volume_name": f"valid_{i}_a_1", "split": "valid", "report_text": text,
                     "labels_known": True, "has_report": True, **{c: int(c in present) for c in CT_RATE_LABELS}})
        keep = present[: max(len(present) - 1, 0)]  # the "generated" report misses one finding
        reports.append({"volume_name": f"valid_{i}_a_1", "generated": "Findings: " + " ".join(f"{c} is seen." for c in keep),
                        "reference": text})
    (work / "results" / "reports").mkdir(parents=True)
    with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS).to_parquet(work / "manifest.parquet")
    pd.DataFrame(reports).to_parquet(work / "results" / "reports" / "exp.parquet")


def test_llm_extraction_keeps_the_key_out_of_every_file(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import FakeOpenAIServer

    _inputs(tmp_path)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with FakeOpenAIServer(list(CT_RATE_LABELS)) as server:
        cfg["evaluation"].update(extractor="llm", bootstrap_resamples=50)
        cfg["evaluation"]["llm"].update(base_url=server.base_url, allowed_hosts=["127.0.0.1"], api_key_env="UVLM_TEST_KEY",
                                        prompt_dir=str(REPO / "config" / "prompts"), timeout_s=5)
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "UVLM_TEST_KEY": KEY}
        cmd = [sys.executable, "-m", "uvlm.cli", "--config", str(tmp_path / "cfg.yaml"), "evaluate", "--reports",
               "results/reports/exp.parquet", "--manifest", str(tmp_path / "manifest.parquet"), "--out",
               "results/metrics/exp.json"]
        (tmp_path / "results" / "logs").mkdir()
        for run in (1, 2):
            with open(tmp_path / "results" / "logs" / f"evaluate_{run}.log", "w") as log:
                done = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
            assert done.returncode == 0, (tmp_path / "results" / "logs" / f"evaluate_{run}.log").read_text()[-3000:]
            if run == 1:
                calls = server.count
                assert calls >= 12  # generated + reference reports, deduplicated
        assert server.count == calls  # the second run answered everything from the cache
        assert any(KEY in str(r.get("headers", "")) for r in server.requests)  # the key was really sent
    metrics = json.loads((tmp_path / "results" / "metrics" / "exp.json").read_text())
    assert metrics["extractor"] == "llm" and metrics["n_extraction_failures"] == 0
    # against the extractor on the references the generated reports only miss findings: precision 1
    assert metrics["vs_reference_extraction"]["macro_precision"] == pytest.approx(
        np.mean([1.0 for _ in CT_RATE_LABELS]), abs=0.06)
    lo, hi = metrics["macro_f1_ci"]
    assert lo <= metrics["macro_f1"] <= hi
    assert metrics["bleu_convention"].startswith("authors") and "bleu_mean_lower" in metrics
    for root in (tmp_path / "results", tmp_path / ".dvc"):
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


CASED = [  # (generated, reference): capitals, full stops, commas, decimals, a quote, a newline, ".."
    ("No pleural effusion. A 12 mm nodule in the right upper lobe.",
     "No pleural or pericardial effusion.\nA 12.5 mm solid nodule in the right upper lobe."),
    ("Cardiomegaly.. Pericardial effusion is present.", "Cardiomegaly. Pericardial effusion is present."),
    ('Emphysema in both lungs, no "consolidation".', "Centrilobular emphysema in both lungs. No consolidation."),
    ("The trachea is patent.", "Trachea and both main bronchi are patent."),
    ("Hiatal hernia.", "Hiatal hernia. Liver cyst 2.1 cm."),
    ("Bronchiectasis in the lower lobes.", "Cylindrical bronchiectasis in both lower lobes."),
]


def _cased_manifest() -> pd.DataFrame:
    rows = []
    for i, (_, ref) in enumerate(CASED):
        rows.append({"volume_name": f"valid_{i}_a_1", "split": "valid", "image_exists": True, "report_text": ref,
                     "labels_known": True, "has_report": True,
                     **{c: int(i % 3 == k % 3) for k, c in enumerate(CT_RATE_LABELS)}})
    for i in range(3):
        rows.append({"volume_name": f"train_{i}_a_1", "split": "train", "image_exists": True,
                     "report_text": "Hiatal hernia. Heart size is normal.", "labels_known": True, "has_report": True,
                     **{c: int(c == "Hiatal hernia") for c in CT_RATE_LABELS}})
    return with_label_set(pd.DataFrame(rows), "ct_rate", CT_RATE_LABELS)


def _assert_bleu_keys(metrics: dict, generated: list[str], references: list[str], min_gap: float) -> None:
    from uvlm.evaluation.metrics import bleu_mean_ci, bleu_scores, bleu_scores_lowercase, clean_text_authors

    authors, lower = bleu_scores(generated, references), bleu_scores_lowercase(generated, references)
    for key, value in {**authors, **lower}.items():
        assert metrics[key] == pytest.approx(value, abs=1e-15), key
    assert metrics["bleu_convention"] == ("authors: light cleaning (clean_text_authors), case and punctuation kept, "
                                          "pycocoevalcap Bleu(4)")
    assert "lowercase" in metrics["bleu_lower_convention"]
    assert metrics["bleu_mean_lower"] > metrics["bleu_mean"] + min_gap  # the two conventions really differ here
    assert metrics["bleu_mean_ci"] == pytest.approx(list(bleu_mean_ci(generated, references, n_resamples=30)))
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu

    coco, _ = Bleu(4).compute_score({i: [clean_text_authors(r)] for i, r in enumerate(references)},
                                    {i: [clean_text_authors(h)] for i, h in enumerate(generated)}, verbose=0)
    assert [metrics[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(coco, abs=1e-12)


def test_score_writes_authors_bleu_and_lowercase_variant(tmp_path: Path) -> None:
    from uvlm.evaluation.evaluate import score

    manifest = _cased_manifest()
    names = [f"valid_{i}_a_1" for i in range(len(CASED))]
    generated = [g for g, _ in CASED]
    metrics = score(names, generated, manifest, "rules", cache_dir=tmp_path, n_resamples=30)
    json.dumps(metrics)  # what `uvlm evaluate` writes must serialise
    _assert_bleu_keys(metrics, generated, [r for _, r in CASED], 0.05)


def test_most_frequent_baseline_writes_the_same_bleu_keys(tmp_path: Path) -> None:
    from uvlm.evaluation.evaluate import most_frequent_baseline

    _cased_manifest().to_parquet(tmp_path / "manifest.parquet")
    metrics = most_frequent_baseline(tmp_path / "manifest.parquet", extractor="rules", cache_dir=tmp_path,
                                     n_resamples=30)
    references = [r for _, r in CASED]
    _assert_bleu_keys(metrics, ["Hiatal hernia. Heart size is normal."] * len(references), references, 1e-3)


def test_grounding_shuffle_lowers_f1_only_for_image_dependent_reports() -> None:
    from uvlm.evaluation.evaluate import grounding
    from uvlm.evaluation.metrics import label_scores

    rng = np.random.default_rng(0)
    y = (rng.random((60, 18)) < 0.3).astype(int)
    grounded = grounding([f"report {i}" for i in range(60)], y, y.copy())
    assert grounded["distinct_reports"] == 60
    assert grounded["shuffled_macro_f1"] < 0.5 < label_scores(y, y)["macro_f1"]
    same = np.tile(y[0], (60, 1))  # one report for every volume: the shuffle changes nothing
    template = grounding(["the  same report"] * 30 + ["the same report "] * 30, y, same)
    assert template["distinct_reports"] == 1
    assert template["shuffled_macro_f1"] == pytest.approx(label_scores(y, same)["macro_f1"])
