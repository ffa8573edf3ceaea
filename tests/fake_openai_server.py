"""A real HTTP server speaking enough of the OpenAI chat-completions protocol for the openai client.

Answers are decided from the report text (a label is true iff its name appears in the text, case-
insensitive), so extracted labels are checkable. Every request is recorded (headers with lower-case
names, incl. authorization; parsed body), and failures can be scripted per report text (a list of
failure kinds for its first calls, or ``permanent``) or per global call number (1-based).

Failure kinds: http_429, http_500 (any http_<code> works), timeout (sleeps ``timeout_sleep_s`` before
answering), empty, invalid_json, missing_label, string_values, disconnect (closes the socket unanswered).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAILURE_KINDS = ("http_429", "http_500", "timeout", "empty", "invalid_json", "missing_label", "string_values",
                 "disconnect")


def keyword_truth(text: str, labels: Sequence[str]) -> dict[str, bool]:
    """The server's ground truth: label name contained in the text, case-insensitive."""
    low = text.lower()
    return {name: name.lower() in low for name in labels}


class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer(labels) as srv:``; ``srv.base_url`` ends in /v1."""

    def __init__(self, labels: Sequence[str], model: str = "fake-model-2025-01-01",
                 timeout_sleep_s: float = 2.0, reader: Callable[[str], dict[str, bool]] | None = None) -> None:
        self.labels = list(labels)
        self.reader = reader or (lambda text: keyword_truth(text, self.labels))  # how the "model" reads a report
        self.model = model
        self.timeout_sleep_s = timeout_sleep_s
        self.per_text: dict[str, list[str]] = {}  # report text -> kinds for its 1st, 2nd, ... call
        self.permanent: dict[str, str] = {}  # report text -> kind returned on every call
        self.per_call: dict[int, str] = {}  # global call number -> kind
        self.requests: list[dict[str, Any]] = []
        self._text_calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _plan(self, text: str) -> tuple[int, str | None]:
        """Record-keeping and failure choice for one request, under the lock."""
        with self._lock:
            n = len(self.requests)  # already appended: 1-based call number
            k = self._text_calls.get(text, 0)
            self._text_calls[text] = k + 1
            if text in self.permanent:
                return n, self.permanent[text]
            if n in self.per_call:
                return n, self.per_call[n]
            script = self.per_text.get(text, [])
            return n, script[k] if k < len(script) else None

    def _answer(self, text: str, kind: str | None) -> str:
        truth = dict(self.reader(text))
        if kind == "empty":
            return ""
        if kind == "invalid_json":
            return '{"' + self.labels[0] + '": tru'
        if kind == "missing_label":
            truth.pop(self.labels[-1])
        if kind == "string_values":
            return json.dumps({k: "yes" if v else "no" for k, v in truth.items()})
        return json.dumps(truth)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:  # the client may have given up (timeout test)
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
                text = users[-1] if users else ""
                n, kind = server._plan(text)
                if kind and kind.startswith("http_"):
                    code = int(kind[5:])
                    self._send(code, {"error": {"message": f"injected {code}", "type": "fake_error"}},
                               {"Retry-After": "0"} if code == 429 else None)
                    return
                if kind == "disconnect":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "timeout":
                    time.sleep(server.timeout_sleep_s)
                content = server._answer(text, kind)
                self._send(200, {
                    "id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()),
                    "model": server.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100 + len(text) // 4, "completion_tokens": 20,
                              "total_tokens": 120 + len(text) // 4}})

        return Handler
