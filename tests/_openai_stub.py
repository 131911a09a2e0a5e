"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, for judge tests.

It counts calls, tracks how many requests are in flight at once, records when each call arrived and its
Authorization header, lists its ``models`` (GET /v1/models), can answer chosen calls (by their 1-based number) with
scripted error statuses (with a Retry-After header where given) or with a body that is not JSON, and echoes a wrong
Authorization header in its 401 body (as a careless server might) so tests can check that the key is redacted.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def default_responder(payload: dict) -> tuple[str, list[dict] | None]:
    """'Rating: [[n]]' with n = 1 + (prompt length mod 10); with logprobs, m/M alternatives."""
    prompt = "".join(m["content"] for m in payload["messages"])
    if payload.get("logprobs"):
        return "M", [{"m": -1.3862943611198906, "M": -0.2876820724587607, "x": -5.0}]
    return f"Rating: [[{1 + len(prompt) % 10}]]", None


class OpenAIStub:
    def __init__(self, api_key: str | None = None, responder: Callable = default_responder, delay_s: float = 0.0,
                 models: tuple[str, ...] = (), port: int = 0):
        self.api_key = api_key
        #: the model ids GET /v1/models lists
        self.models = models
        self.responder = responder
        self.delay_s = delay_s
        self.fail_calls: dict[int, int] = {}
        #: call number -> Retry-After header value sent with its scripted error
        self.retry_after: dict[int, str] = {}
        #: call number -> Content-Type of a 200 answer whose body is an HTML page, as a misconfigured proxy's
        self.non_json_calls: dict[int, str] = {}
        #: per call, arrival time (time.monotonic) and Authorization header (None when absent)
        self.arrivals: list[float] = []
        self.authorizations: list[str | None] = []
        #: call number -> seconds to stall before answering (to provoke client timeouts)
        self.slow_calls: dict[int, float] = {}
        self.calls = 0
        self.completions = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # a client that timed out and left
                    pass

            def _done(self) -> None:
                """This request stops counting as in flight, once: before its response is written, since a client
                may send its next request as soon as it has read the response (keep-alive), possibly before this
                thread runs again."""
                if getattr(self, "_in_flight", False):
                    self._in_flight = False
                    with stub._lock:
                        stub.in_flight -= 1

            def _send(self, status: int, body: dict | str, headers: dict | None = None) -> None:
                self._done()
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                """The model list (``client.models.list()``), behind the same key check as completions."""
                auth = self.headers.get("Authorization", "")
                if not self.path.endswith("/models"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if stub.api_key is not None and auth != f"Bearer {stub.api_key}":
                    return self._send(401, {"error": {"message": f"bad credentials: {auth}"}})
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                             "owned_by": "stub"} for m in stub.models]})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.calls += 1
                    call = stub.calls
                    stub.arrivals.append(time.monotonic())
                    stub.authorizations.append(self.headers.get("Authorization"))
                    stub.in_flight += 1
                    self._in_flight = True
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    status = stub.fail_calls.get(call, 200)
                    delay = stub.slow_calls.get(call, stub.delay_s)
                try:
                    time.sleep(delay)
                    if not self.path.endswith("/chat/completions"):
                        return self._send(404, {"error": {"message": f"no route {self.path}"}})
                    auth = self.headers.get("Authorization", "")
                    if stub.api_key is not None and auth != f"Bearer {stub.api_key}":
                        return self._send(401, {"error": {"message": f"bad credentials: {auth}"}})
                    if status != 200:
                        retry_after = {"Retry-After": stub.retry_after[call]} if call in stub.retry_after else {}
                        return self._send(status, {"error": {"message": f"scripted {status}; you sent {auth}"}}, retry_after)
                    if call in stub.non_json_calls:
                        page = "<html><body>Welcome to the proxy</body></html>"
                        return self._send(200, page, {"Content-Type": stub.non_json_calls[call]})
                    text, top = stub.responder(payload)
                    logprobs = None
                    if top is not None:
                        logprobs = {
                            "content": [
                                {
                                    "token": text,
                                    "logprob": position.get(text, -9.0),
                                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in position.items()],
                                }
                                for position in top
                            ]
                        }
                    with stub._lock:
                        stub.completions += 1
                        stub.payloads.append(payload)
                    self._send(
                        200,
                        {
                            "id": f"chatcmpl-{stub.completions}",
                            "object": "chat.completion",
                            "model": payload["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "logprobs": logprobs,
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                        },
                    )
                finally:
                    self._done()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "OpenAIStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


ARENA_HARD_VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def rehearsal_responder(payload: dict) -> tuple[str, list[dict] | None]:
    """Answers in the format of whichever judge protocol asks: AlpacaEval's and the preference annotator's m/M
    log-probabilities, Arena-Hard's ``[[A>B]]`` verdicts (its system prompt names them), MT-Bench's ``[[n]]`` rating;
    the verdict and rating vary with the prompt, so that scores are not constant."""
    prompt = "".join(m["content"] for m in payload["messages"])
    if payload.get("logprobs"):
        return default_responder(payload)
    if "[[A>>B]]" in prompt:
        return f"Both answers are short. My final verdict is: [[{ARENA_HARD_VERDICTS[len(prompt) % 5]}]]", None
    return default_responder(payload)


def serve(argv: list[str] | None = None) -> None:
    """``python tests/_openai_stub.py --port 8765``: the rehearsal's judge (sftlab.rehearsal) until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=serve.__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None, help="the key requests must carry (default: any)")
    args = parser.parse_args(argv)
    stub = OpenAIStub(api_key=args.api_key, responder=rehearsal_responder, port=args.port)
    print(f"rehearsal judge at {stub.base_url}", flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    serve()
