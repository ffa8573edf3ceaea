"""`uvlm evaluate` end to end with the LLM extractor: real openai client, a local chat-completions
server, a planted API key that must end up in no file; plus the two label comparisons and CIs."""

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

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-PLANTED-0123456789"


def _inputs(work: Path) -> None:
    rng = np.random.default_rng(0)
    rows, reports = [], []
    for i in range(12):
        present = [c for c in CT_RATE_LABELS if rng.random() < 0.3]
        text = "Findings: " + " ".join(f"{c} is seen." for c in present) or "Findings: normal."
        rows.append({"volume_name": f"valid_{i}_a_1", "split": "valid", "report_text": text,
                     **{c: int(c in present) for c in CT_RATE_LABELS}})
        keep = present[: max(len(present) - 1, 0)]  # the "generated" report misses one finding
        reports.append({"volume_name": f"valid_{i}_a_1", "generated": "Findings: " + " ".join(f"{c} is seen." for c in keep),
                        "reference": text})
    (work / "results" / "reports").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(work / "manifest.parquet")
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
    for root in (tmp_path / "results", tmp_path / ".dvc"):
        for path in root.rglob("*") if root.exists() else []:
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
