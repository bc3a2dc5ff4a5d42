"""A local OpenAI-compatible judge endpoint for the llm judge's tests (`FakeJudgeServer`), and an
`LLMJudge` on it that retries fast (`make_judge`). The `api_key` fixture (conftest.py) sets KEY_ENV."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from upo.judges import LLMJudge

KEY = "sk-test-very-secret-0123456789"
KEY_ENV = "UPO_TEST_JUDGE_KEY"

# where the two responses stand in the swap and the paper presets' questions
SHOWN = [re.compile(r"\[Response A\]\n(.*)\n\n\[Response B\]\n(.*)\n\nAnswer", re.S),
         re.compile(r"Response A:\n(.*)\n\(end of Response A\)\n\nResponse B:\n(.*)\n\(end of Response B\)", re.S)]


class FakeJudgeServer:
    """A /v1/chat/completions endpoint on 127.0.0.1 that prefers the shorter response, or always
    answers `fixed`; it fails its first `failures` requests with the given HTTP statuses and
    answers 401 without the right bearer token. Records (A, B) of every question it answered."""

    def __init__(self, failures: tuple[int, ...] = (), fixed: str | None = None):
        self.failures = list(failures)
        self.fixed = fixed
        self.requests = 0
        self.asked: list[tuple[str, str]] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                with server.lock:
                    server.requests += 1
                    status = server.failures.pop(0) if server.failures else None
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"error": "bad key"})
                if status is not None:
                    return self._send(status, {"error": "try again"})
                user = body["messages"][-1]["content"]
                a, b = next(m.groups() for m in (p.search(user) for p in SHOWN) if m)
                with server.lock:
                    server.asked.append((a, b))
                    server.bodies.append(body)
                answer = server.fixed or ("A" if len(a) <= len(b) else "B")
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)  # quick shutdown

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_judge(server, **kwargs) -> LLMJudge:
    options = dict(api_key_env=KEY_ENV, backoff=0.001, max_retries=4, timeout=5, concurrency=3)
    options.update(kwargs)
    return LLMJudge(server.base_url, "judge-model", **options)
