"""The llm extraction backend through the real openai client against a local fake endpoint."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer, keyword_truth

from uvlm.constants import ABDOMEN_LESION_LABELS, CT_RATE_LABELS
from uvlm.evaluation.extract_llm import LLMConfig, LLMExtractionError, LLMExtractor
from uvlm.evaluation.llm_prompt import AnswerError, load_prompt, validate_answer

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
CT_PROMPT = ROOT / "config" / "prompts" / "ct_rate_v1.md"
ABD_PROMPT = ROOT / "config" / "prompts" / "abdomen_atlas_v1.md"
LABELS = list(CT_RATE_LABELS)
KEY_ENV = "UVLM_TEST_LLM_KEY"
PLANTED = "sk-test-PLANTED-123"

# (report text, scripted failures for its first calls); the server answers by keyword.
REPORTS = [
    ("Findings: Cardiomegaly. Pleural effusion on the right.", []),
    ("Emphysema and a Lung nodule in the right upper lobe.", ["http_429"]),
    ("Atelectasis in both lower lobes.", ["http_500", "http_500"]),
    ("Consolidation with Bronchiectasis.", ["timeout"]),
    ("Small Hiatal hernia.", ["empty"]),
    ("Mediastinal Lymphadenopathy.", ["invalid_json"]),
    ("Medical material: pacemaker leads.", ["missing_label"]),
    ("Patchy Lung opacity.", ["string_values"]),
    ("Mosaic attenuation pattern in both lungs.", ["disconnect"]),
    ("PERMANENTLY FAILING report about Emphysema.", []),
    ("No acute findings.", []),
    ("Findings: Cardiomegaly. Pleural effusion on the right.", []),  # same text as report 0: one call
]
TEXTS = [t for t, _ in REPORTS]
PERMANENT = 9


def make_config(base_url: str, prompt: Path = CT_PROMPT, **kw) -> LLMConfig:
    opts = dict(base_url=base_url, model="fake-model-2025-01-01", api_key_env=KEY_ENV, prompt_file=str(prompt),
                allowed_hosts=["127.0.0.1"], max_concurrency=4, max_retries=3, timeout_s=0.5, backoff_s=0.01,
                backoff_cap_s=0.05)
    opts.update(kw)
    return LLMConfig(**opts)


@pytest.fixture
def server():
    with FakeOpenAIServer(LABELS, timeout_sleep_s=1.5) as srv:
        for text, script in REPORTS:
            if script:
                srv.per_text[text] = script
        srv.permanent[TEXTS[PERMANENT]] = "http_500"
        yield srv


@pytest.fixture
def out(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(KEY_ENV, PLANTED)
    return tmp_path / "out"


def truth(texts: list[str]) -> np.ndarray:
    return np.array([[int(keyword_truth(t, LABELS)[n]) for n in LABELS] for t in texts], dtype=np.int8)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_failure_kind_recovers_or_fails_per_report(server, out):
    ex = LLMExtractor(make_config(server.base_url), out / "cache.sqlite", out / "calls.jsonl")
    res = ex.extract(TEXTS, LABELS)

    ok = [i for i in range(len(TEXTS)) if i != PERMANENT]
    assert res.labels.dtype == np.int8 and res.labels.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_array_equal(res.labels[ok], truth(TEXTS)[ok])
    assert (res.labels[PERMANENT] == -1).all()
    assert [f["index"] for f in res.failures] == [PERMANENT]
    assert "http_500" in res.failures[0]["reason"] and "4 attempts" in res.failures[0]["reason"]
    assert [res.response_models[i] for i in ok] == [server.model] * len(ok)
    assert res.response_models[PERMANENT] is None

    log = read_log(out / "calls.jsonl")
    assert len(log) == res.n_calls == server.count
    statuses = {r["status"] for r in log}
    assert {"ok", "http_429", "http_500", "timeout", "empty", "invalid_json", "invalid_labels",
            "connection_error"} <= statuses
    perm = [r for r in log if r["index"] == PERMANENT]
    assert [r["attempt"] for r in perm] == [1, 2, 3, 4] and {r["status"] for r in perm} == {"http_500"}
    atel = sorted((r["attempt"], r["status"]) for r in log if r["index"] == 2)
    assert atel == [(1, "http_500"), (2, "http_500"), (3, "ok")]
    timed = next(r for r in log if r["status"] == "timeout")
    assert 0.4 < timed["latency_s"] < 1.4
    okrow = next(r for r in log if r["status"] == "ok")
    assert okrow["prompt_tokens"] > 0 and okrow["completion_tokens"] == 20 and okrow["model"] == server.model
    # Identical texts shared one call; the log holds no report text.
    assert sum(1 for r in server.requests if r["body"]["messages"][1]["content"] == TEXTS[0]) == 1
    raw = (out / "calls.jsonl").read_text()
    assert not any(t in raw for t in TEXTS)

    # Only validated answers were cached: one entry per successful distinct text.
    with sqlite3.connect(out / "cache.sqlite") as db:
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM answers")]
    assert len(values) == len(set(TEXTS)) - 1
    assert all(set(v["labels"]) == set(LABELS) and all(isinstance(x, bool) for x in v["labels"].values())
               for v in values)


def test_second_run_makes_zero_calls(server, out):
    texts = [t for i, t in enumerate(TEXTS) if i != PERMANENT]
    cfg = make_config(server.base_url)
    first = LLMExtractor(cfg, out / "cache.sqlite").extract(texts, LABELS)
    n = server.count
    second = LLMExtractor(cfg, out / "cache.sqlite").extract(texts, LABELS)
    assert server.count == n and second.n_calls == 0 and second.n_cached == len(texts)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.failures == [] and second.response_models == first.response_models
    # Label column order follows the caller, the cache does not care.
    rev = LLMExtractor(cfg, out / "cache.sqlite").extract(texts, LABELS[::-1])
    np.testing.assert_array_equal(rev.labels, first.labels[:, ::-1])
    assert server.count == n
    # A failed report is not cached: it is tried again (and only it).
    again = LLMExtractor(cfg, out / "cache.sqlite").extract(TEXTS, LABELS)
    assert server.count - n == again.n_calls == 4
    assert {r["body"]["messages"][1]["content"] for r in server.requests[n:]} == {TEXTS[PERMANENT]}


def test_changed_model_or_prompt_version_calls_again(server, out, tmp_path):
    texts = ["Cardiomegaly.", "Emphysema."]
    LLMExtractor(make_config(server.base_url), out / "c.sqlite").extract(texts, LABELS)
    n = server.count
    assert n == 2
    res = LLMExtractor(make_config(server.base_url, model="fake-model-2025-06-01"), out / "c.sqlite").extract(
        texts, LABELS)
    assert server.count == n + 2 and res.n_calls == 2
    v2 = tmp_path / "ct_rate_v2.md"
    v2.write_text(CT_PROMPT.read_text().replace("version: ct_rate_v1", "version: ct_rate_v2"))
    assert load_prompt(v2).version == "ct_rate_v2"
    LLMExtractor(make_config(server.base_url, prompt=v2), out / "c.sqlite").extract(texts, LABELS)
    assert server.count == n + 4
    LLMExtractor(make_config(server.base_url, seed=7), out / "c.sqlite").extract(texts, LABELS)
    assert server.count == n + 6 and server.requests[-1]["body"]["seed"] == 7


def test_host_not_allowed_is_refused_before_any_call(server, out):
    with pytest.raises(ValueError, match="not in allowed_hosts"):
        make_config(server.base_url, allowed_hosts=["api.deepseek.com"])
    with pytest.raises(ValueError, match="plain http"):
        make_config("http://10.0.0.5:8000/v1", allowed_hosts=["10.0.0.5"])
    with pytest.raises(ValueError, match="credentials"):
        make_config("https://u:p@api.example.com/v1", allowed_hosts=["api.example.com"])
    with pytest.raises(ValueError, match="must not be in the config"):
        LLMConfig.from_mapping({"base_url": server.base_url, "api_key": PLANTED})
    with pytest.raises(ValueError, match="NAME of an environment variable") as err:
        make_config(server.base_url, api_key_env=PLANTED)
    assert PLANTED not in str(err.value)
    assert server.count == 0


def test_request_holds_only_the_report_text(server, out):
    cfg = make_config(server.base_url)
    ex = LLMExtractor(cfg, out / "c.sqlite")
    ex.extract(["Cardiomegaly.", "Bronchiectasis."], LABELS)
    assert server.count == 2
    system = load_prompt(CT_PROMPT).render()
    for req in server.requests:
        body = req["body"]
        assert req["path"] == "/v1/chat/completions"
        assert set(body) == {"model", "messages", "temperature", "response_format"}
        assert body["model"] == cfg.model and body["temperature"] == 0
        assert body["response_format"] == {"type": "json_object"}
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == system
        assert body["messages"][1]["content"] in {"Cardiomegaly.", "Bronchiectasis."}


def test_planted_key_reaches_server_but_no_output_file(server, out):
    LLMExtractor(make_config(server.base_url), out / "cache.sqlite", out / "calls.jsonl").extract(TEXTS, LABELS)
    assert {r["headers"].get("authorization") for r in server.requests} == {f"Bearer {PLANTED}"}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"cache.sqlite", "calls.jsonl"}
    for p in files:
        assert PLANTED.encode() not in p.read_bytes(), p


def test_missing_key_names_the_variable(server, out, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMExtractionError, match=KEY_ENV):
        LLMExtractor(make_config(server.base_url), out / "c.sqlite").extract(["Cardiomegaly."], LABELS)
    assert server.count == 0


def test_auth_error_stops_the_run_and_bad_request_fails_one_report(server, out):
    server.permanent["Emphysema."] = "http_400"
    res = LLMExtractor(make_config(server.base_url), out / "c.sqlite").extract(["Emphysema.", "Cardiomegaly."],
                                                                               LABELS)
    assert res.failures == [{"index": 0, "reason": "http_400 (not retried)"}] and server.count == 2
    server.permanent["Atelectasis."] = "http_401"
    with pytest.raises(LLMExtractionError, match=KEY_ENV) as err:
        LLMExtractor(make_config(server.base_url, max_concurrency=1), out / "c.sqlite").extract(
            ["Atelectasis.", "Consolidation."], LABELS)
    assert PLANTED not in str(err.value) and server.count == 3


def test_prompt_files():
    ct, abd = load_prompt(CT_PROMPT), load_prompt(ABD_PROMPT)
    assert ct.version == "ct_rate_v1" and list(ct.labels) == LABELS
    assert abd.version == "abdomen_atlas_v1" and list(abd.labels) == list(ABDOMEN_LESION_LABELS)
    for p in (ct, abd):
        text = p.render()
        assert "json" in text.lower() and "{{labels}}" not in text
        assert all(f'"{name}"' in text for name in p.labels)


def test_prompt_labels_must_match(server, out):
    with pytest.raises(ValueError, match="do not match prompt"):
        LLMExtractor(make_config(server.base_url), out / "c.sqlite").extract(["x"], list(ABDOMEN_LESION_LABELS))
    assert server.count == 0


def test_bad_prompt_file_is_refused(tmp_path):
    bad = tmp_path / "p.md"
    bad.write_text(CT_PROMPT.read_text().replace("JSON", "answer").replace("json", "answer"))
    with pytest.raises(ValueError, match="JSON"):
        load_prompt(bad)
    shutil.copy(CT_PROMPT, bad)
    bad.write_text(bad.read_text().replace("version: ct_rate_v1\n", ""))
    with pytest.raises(ValueError, match="version"):
        load_prompt(bad)


@pytest.mark.parametrize(("content", "status"), [
    (None, "empty"), ("  ", "empty"), ("{bad", "invalid_json"), ("[true, false]", "invalid_json"),
    ('{"a": true}', "invalid_labels"), ('{"a": true, "b": "yes"}', "invalid_labels"),
    ('{"a": true, "b": 1}', "invalid_labels"), ('{"A": true, "b": false}', "invalid_labels"),
])
def test_validate_answer_rejects(content, status):
    with pytest.raises(AnswerError) as err:
        validate_answer(content, ["a", "b"])
    assert err.value.status == status


def test_validate_answer_accepts():
    assert validate_answer('{"a": true, "b": false, "extra": 3}', ["a", "b"]) == {"a": True, "b": False}
    assert validate_answer('```json\n{"a": false, "b": true}\n```', ["a", "b"]) == {"a": False, "b": True}


def test_failure_by_call_number(server, out):
    server.per_call.update({1: "http_503", 2: "empty"})
    res = LLMExtractor(make_config(server.base_url, max_concurrency=1), out / "c.sqlite", out / "l.jsonl").extract(
        ["Cardiomegaly."], LABELS)
    np.testing.assert_array_equal(res.labels, truth(["Cardiomegaly."]))
    assert [r["status"] for r in read_log(out / "l.jsonl")] == ["http_503", "empty", "ok"]
