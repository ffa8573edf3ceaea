"""LLM backend for report -> label extraction through an OpenAI-compatible chat-completions endpoint.

The paper extracted AbdomenAtlas lesion labels with an LLM (DeepSeek) and published no prompt, so the
prompt is a versioned file of ours (config/prompts/*.md) and every answer is checked before use.
Design choices, each for reproducibility or safety:

- Only the report text is sent (user message); the system message is the rendered prompt file. No
  image paths, volume names or ids leave the machine.
- The endpoint's host must be listed in ``allowed_hosts`` (checked when the config is built), and the
  API key is read from the environment variable named in the config at run time, so it never sits in
  config files, logs, results or the cache.
- The openai client's own retries are off (``max_retries=0``): this module retries 408/409/429/5xx,
  timeouts, connection errors, empty content and invalid answers with exponential backoff + jitter,
  counts every attempt against ``max_retries`` and logs each one. 401/403/404 are configuration errors
  (key, model id, URL): the run stops and raises instead of failing every report the same way.
  Other 4xx (e.g. a report over the context length) fail that report without retries.
- Answers must be a JSON object with every label as key and a JSON boolean as value (no "yes"/"no"
  mapping: a model that answers strings is not following the prompt, and guessing hides that). Extra
  keys are ignored. A single surrounding Markdown code fence is tolerated (some compatible servers add
  one without JSON mode).
- Validated answers only are cached (SQLite, keyed on sha256 of base_url, model, prompt version, the
  exact messages and sampling parameters), so a rerun makes no calls and a changed prompt/model does.
  Identical report texts share one call. The cache stores label dicts, response.model and usage only.
- Each attempt is one JSONL row in the call log (report index, sha256 prefix of the text, attempt,
  status, latency, token counts, response model): never the key, never the report text.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from uvlm.evaluation.llm_cache import CallLog, LabelCache, cache_key, now_utc
from uvlm.evaluation.llm_prompt import AnswerError, load_prompt, validate_answer

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
RETRYABLE_HTTP = frozenset({408, 409, 429})
FATAL_HTTP = frozenset({401, 403, 404})
RETRYABLE_STATUSES = frozenset({"timeout", "connection_error", "empty", "invalid_json", "invalid_labels",
                                "invalid_response"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")



class LLMExtractionError(RuntimeError):
    """The run cannot go on (missing key, endpoint refusing the key/model/URL)."""


@dataclass
class LLMConfig:
    """Endpoint, model and retry settings. Holds the NAME of the key's environment variable, never the key.

    Validated on construction, so a host outside ``allowed_hosts`` is refused before any call.
    """

    base_url: str
    model: str  # a pinned model id (a dated snapshot, not a moving alias); response.model is logged too
    api_key_env: str
    prompt_file: str
    allowed_hosts: list[str]
    max_concurrency: int = 4
    max_retries: int = 5  # retries after the first attempt, for any retryable outcome
    timeout_s: float = 60.0
    backoff_s: float = 1.0  # first delay; doubles per retry, jittered, capped at backoff_cap_s
    backoff_cap_s: float = 30.0
    temperature: float = 0.0
    seed: int | None = None
    allow_insecure_http: bool = False  # plain http to a non-loopback host would send the key in clear

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts must be a list of host names, not a string")
        self.allowed_hosts = [str(h) for h in self.allowed_hosts]
        if not _ENV_NAME.fullmatch(self.api_key_env or ""):
            # Do not echo the value: someone may have pasted the key itself here.
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, "
                             "underscore) that holds the key, not the key itself")
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {self.base_url!r}")
        if url.username or url.password:
            raise ValueError("base_url must not carry credentials; put the key in the variable named by "
                             "api_key_env")
        host = url.hostname.lower()
        if host not in {h.lower() for h in self.allowed_hosts}:
            raise ValueError(f"host {host!r} of base_url is not in allowed_hosts {self.allowed_hosts}; "
                             "add it there if report text may be sent to it")
        if url.scheme == "http" and host not in LOOPBACK_HOSTS and not self.allow_insecure_http:
            raise ValueError(f"base_url uses plain http to {host!r}: use https, or set allow_insecure_http "
                             "for a trusted private network")
        if not self.model:
            raise ValueError("model must be a pinned model id")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0")

    @property
    def host(self) -> str:
        return (urlparse(self.base_url).hostname or "").lower()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LLMConfig:
        """Build from a config section; refuses unknown keys and any attempt to put the key itself there."""
        if any("key" in k and k != "api_key_env" for k in values):
            raise ValueError("the API key must not be in the config: name its environment variable in "
                             "api_key_env")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LLM config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


@dataclass
class ExtractionResult:
    """Labels (N, L) int8: 1/0, and -1 on the whole row of a report that failed (see ``failures``)."""

    labels: np.ndarray
    label_names: list[str]
    failures: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}
    response_models: list[str | None] = field(default_factory=list)
    n_calls: int = 0  # HTTP attempts made in this run
    n_cached: int = 0  # reports answered from the cache


@dataclass
class _Outcome:
    answer: dict[str, Any] | None = None
    reason: str | None = None


class LLMExtractor:
    """Runs one prompt against one endpoint with a persistent cache and a per-call log."""

    def __init__(self, config: LLMConfig, cache_path: str | Path, log_path: str | Path | None = None) -> None:
        self.config = config
        self.prompt = load_prompt(config.prompt_file)
        self.cache_path = Path(cache_path)
        self.log_path = Path(log_path) if log_path is not None else self.cache_path.with_name("llm_calls.jsonl")
        self._calls = 0
        self._count_lock = threading.Lock()
        self._abort = threading.Event()
        self._fatal: str | None = None

    def params(self) -> dict[str, Any]:
        """Sampling parameters sent with every request (and hashed into the cache key)."""
        p: dict[str, Any] = {"temperature": self.config.temperature, "response_format": {"type": "json_object"}}
        if self.config.seed is not None:
            p["seed"] = self.config.seed
        return p

    def messages(self, text: str) -> list[dict[str, str]]:
        """System = rendered prompt, user = the report text and nothing else."""
        return [{"role": "system", "content": self.prompt.render()}, {"role": "user", "content": text}]

    def api_key(self) -> str:
        """The key from the environment at call time; the error names the variable, never a value."""
        key = os.environ.get(self.config.api_key_env, "")
        if not key.strip():
            raise LLMExtractionError(f"environment variable {self.config.api_key_env} is not set (or empty): "
                                     f"it must hold the API key for {self.config.host}")
        return key.strip()

    def extract(self, texts: list[str], labels: list[str]) -> ExtractionResult:
        """Labels for each report; reports that fail after all retries get -1 rows and a failure entry."""
        self.config.__post_init__()  # re-check host/URL in case the config was edited after construction
        names = list(labels)
        if len(set(names)) != len(names):
            raise ValueError("labels contain duplicates")
        if set(names) != set(self.prompt.labels):
            raise ValueError(f"labels do not match prompt {self.prompt.version} ({self.prompt.path}): "
                             f"missing from prompt {sorted(set(names) - set(self.prompt.labels))}, "
                             f"not requested {sorted(set(self.prompt.labels) - set(names))}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"report {i} is {type(t).__name__}, not str")
        prompt_labels = list(self.prompt.labels)
        params = self.params()
        groups: dict[str, list[int]] = {}
        msgs: dict[str, list[dict[str, str]]] = {}
        for i, t in enumerate(texts):
            m = self.messages(t)
            k = cache_key(self.config.base_url, self.config.model, self.prompt.version, m, params)
            groups.setdefault(k, []).append(i)
            msgs[k] = m

        out = np.full((len(texts), len(names)), -1, dtype=np.int8)
        models: list[str | None] = [None] * len(texts)
        failures: list[dict[str, Any]] = []
        cache = LabelCache(self.cache_path)
        try:
            answers: dict[str, _Outcome] = {}
            todo = []
            for k in groups:
                hit = cache.get(k)
                if hit is not None and _cached_ok(hit, prompt_labels):
                    answers[k] = _Outcome(hit)
                else:
                    todo.append(k)
            n_cached = sum(len(groups[k]) for k in answers)
            self._calls, self._fatal = 0, None
            self._abort.clear()
            if todo:
                key = self.api_key()
                log = CallLog(self.log_path, secret=key)
                client = _make_client(self.config, key)
                try:
                    with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
                        futures = {k: pool.submit(self._one, client, cache, log, k, msgs[k], groups[k],
                                                  texts[groups[k][0]], prompt_labels, params) for k in todo}
                        answers.update({k: f.result() for k, f in futures.items()})
                finally:
                    client.close()
            if self._fatal:
                raise LLMExtractionError(self._fatal)
            for k, idx in groups.items():
                res = answers[k]
                for i in idx:
                    if res.answer is None:
                        failures.append({"index": i, "reason": res.reason})
                    else:
                        out[i] = [int(res.answer["labels"][n]) for n in names]
                        models[i] = res.answer.get("model")
        finally:
            cache.close()
        failures.sort(key=lambda f: f["index"])
        return ExtractionResult(out, names, failures, models, self._calls, n_cached)

    def _one(self, client: Any, cache: LabelCache, log: CallLog, key: str, messages: list[dict[str, str]],
             indices: list[int], text: str, labels: list[str], params: dict[str, Any]) -> _Outcome:
        import openai

        cfg = self.config
        text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        status = "not_called"
        for attempt in range(1, cfg.max_retries + 2):
            if self._abort.is_set():
                return _Outcome(reason=f"aborted: {self._fatal}")
            retry_after: float | None = None
            detail = ""
            model = None
            usage: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
            answer = None
            t0 = time.monotonic()
            with self._count_lock:
                self._calls += 1
            try:
                resp = client.chat.completions.create(model=cfg.model, messages=messages, **params)
            except openai.APITimeoutError:
                status = "timeout"
            except openai.APIConnectionError as e:
                status, detail = "connection_error", type(e).__name__
            except openai.APIStatusError as e:
                status = f"http_{e.status_code}"
                retry_after = _retry_after(e.response.headers)
            except openai.APIResponseValidationError:
                status = "invalid_response"
            else:
                model = getattr(resp, "model", None)
                if resp.usage is not None:
                    usage = {k: getattr(resp.usage, k, None) for k in usage}
                content = resp.choices[0].message.content if resp.choices else None
                try:
                    answer = validate_answer(content, labels)
                    status = "ok"
                except AnswerError as e:
                    status, detail = e.status, e.detail
            latency = time.monotonic() - t0
            log.write({"ts": now_utc(), "index": indices[0], "n_same_text": len(indices), "text_sha256": text_hash,
                       "attempt": attempt, "status": status, "detail": detail, "latency_s": round(latency, 4),
                       "model": model, "request_model": cfg.model, "prompt_version": self.prompt.version,
                       "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"]})
            if answer is not None:
                value = {"labels": answer, "model": model, "usage": usage, "prompt_version": self.prompt.version}
                cache.put(key, value)  # the only write: validated answers only
                return _Outcome(value)
            code = int(status[5:]) if status.startswith("http_") else None
            if code in FATAL_HTTP:
                self._fatal = (f"endpoint {cfg.host} answered {status} for model {cfg.model!r}: check the key in "
                               f"${cfg.api_key_env}, the model id and base_url")
                self._abort.set()
                return _Outcome(reason=status)
            retryable = status in RETRYABLE_STATUSES or (code is not None and (code in RETRYABLE_HTTP or code >= 500))
            if not retryable:
                return _Outcome(reason=f"{status} (not retried)")
            if attempt <= cfg.max_retries:
                time.sleep(_backoff(cfg, attempt, retry_after))
        return _Outcome(reason=f"{status} after {cfg.max_retries + 1} attempts")


def extract_with_llm(texts: list[str], labels: list[str], config: LLMConfig, cache_path: str | Path,
                     log_path: str | Path | None = None) -> ExtractionResult:
    """One-call form of ``LLMExtractor(config, cache_path, log_path).extract(texts, labels)``."""
    return LLMExtractor(config, cache_path, log_path).extract(texts, labels)


def _make_client(cfg: LLMConfig, key: str) -> Any:
    try:
        import openai
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise LLMExtractionError("the llm extractor needs the openai package (pip install openai==3.57.0)") from e
    return openai.OpenAI(api_key=key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout_s)


def _cached_ok(value: Mapping[str, Any], labels: Sequence[str]) -> bool:
    got = value.get("labels")
    return isinstance(got, dict) and all(isinstance(got.get(n), bool) for n in labels)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


def _backoff(cfg: LLMConfig, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter, at least the server's Retry-After, capped."""
    base = min(cfg.backoff_cap_s, cfg.backoff_s * 2 ** (attempt - 1))
    delay = base / 2 + random.uniform(0, base / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cfg.backoff_cap_s)
