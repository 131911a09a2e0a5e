"""LLM judges, registered by backend name, and the cached way every benchmark calls them.

A judge config is plain data, e.g.::

    {"backend": "openai", "model": "gpt-4-1106-preview", "base_url": "https://api.openai.com/v1",
     "api_key_env": "OPENAI_API_KEY", "max_concurrency": 8}
    {"backend": "hf", "model": "resources/models/smollm2-135m-instruct", "batch_size": 8,
     "max_tokens": 256, "demo_quality": true}

``api_key_env`` is the *name* of the environment variable holding the key: the key itself is read at
run time, sent only in the Authorization header, and never written anywhere (cache, judgments, scores,
logs, error messages). ``max_tokens`` (cap on judge output) and ``demo_quality`` (label for the report)
are read by the benchmarks, not by the backend.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, ClassVar, Iterator, Sequence

from sftlab.progress import progress
from sftlab.evaluation.cache import JudgmentCache, request_key
from sftlab.registry import registrar
from sftlab.secrets import looks_like_secret, redact_url
from sftlab.evaluation.generation import GenerationRequest, SamplingParams, TransformersGenerator

log = logging.getLogger(__name__)

#: judge-config keys that describe how benchmarks use a judge rather than how to reach it
META_KEYS = ("max_tokens", "demo_quality", "repeats", "repeat_temperature")


class JudgeError(RuntimeError):
    """A judge backend failed for good (after retries, or with an error retrying cannot fix)."""


@dataclass(frozen=True)
class JudgeRequest:
    messages: tuple[dict, ...] | list[dict]
    max_tokens: int
    temperature: float = 0.0
    #: how many alternatives per output position to return with log-probabilities; 0 = none
    top_logprobs: int = 0

    def decoding(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_logprobs": self.top_logprobs}


@dataclass
class JudgeResponse:
    text: str
    top_logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "JudgeResponse":
        return cls(**d)


@dataclass
class JudgeUsage:
    """What judging one benchmark cost: backend calls made now, answers from the cache, and tokens
    (summed over all responses, cached or not: what the judgments cost when they were paid for); and how the
    judge was asked: the distinct decoding settings of its requests (part of the judge's identity, not of the cost)."""

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decodings: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "decodings"}

    def add_decoding(self, decoding: dict) -> None:
        if decoding not in self.decodings:
            self.decodings.append(dict(decoding))

    def merged(self, other: "JudgeUsage") -> "JudgeUsage":
        """The usage of both batches together."""
        usage = JudgeUsage(**{k: v + getattr(other, k) for k, v in self.to_dict().items()})
        for decoding in self.decodings + other.decodings:
            usage.add_decoding(decoding)
        return usage


JUDGES: dict[str, type["Judge"]] = {}


register_judge = registrar(JUDGES, "judge backend", attribute="backend")


def build_judge(config: dict[str, Any]) -> "Judge":
    """A judge from its config (see the module docstring); benchmark-side keys are left out."""
    options = {k: v for k, v in config.items() if k not in META_KEYS}
    backend = options.pop("backend", None)
    if backend not in JUDGES:
        raise ValueError(f"unknown judge backend {backend!r}; known: {sorted(JUDGES)}")
    return JUDGES[backend](**options)


class Judge(abc.ABC):
    backend: ClassVar[str]
    #: whether responses can carry top log-probabilities (needed by the weighted AlpacaEval annotator)
    supports_logprobs: ClassVar[bool] = False
    #: whether the backend decodes greedily whatever a request's temperature (its recorded decoding says so)
    greedy_only: ClassVar[bool] = False
    #: the judge's identity in cache keys and reports: backend and model, never a secret or a host
    id: str

    @abc.abstractmethod
    def complete(self, requests: Sequence[JudgeRequest]) -> Iterator[tuple[int, JudgeResponse]]:
        """Yield (request index, response) as responses arrive, in any order."""


class _Stopped(Exception):
    """A request left unsent because another one had failed for good."""


@register_judge("openai")
class OpenAIJudge(Judge):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, a proxy), through the ``openai`` SDK.

    ``base_url`` includes the version prefix (``https://api.openai.com/v1``). Requests run on a thread pool of
    ``max_concurrency`` sharing one client. The SDK retries 408, 409, 429, 5xx, timeouts and dropped connections up
    to ``max_retries`` times, waiting the server's Retry-After (up to two minutes) or else its exponential backoff
    (0.5 s doubling up to 8 s, jittered); other errors fail at once.
    """

    supports_logprobs = True

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 120.0,
    ) -> None:
        import openai

        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be positive, got {max_concurrency}")
        self.model = model
        # what messages and logs print: credentials in the URL masked (the client gets the URL as given)
        self.url = redact_url(base_url.rstrip("/") + "/chat/completions")
        self.max_concurrency = max_concurrency
        self.id = f"openai:{model}"
        self._api_key = None
        if api_key_env:
            self._api_key = os.environ.get(api_key_env)
            if not self._api_key:
                shown = "named by api_key_env" if looks_like_secret(api_key_env) else api_key_env
                raise JudgeError(f"environment variable {shown} (the judge's API key) is not set")
        # without a key no Authorization header is sent at all; the SDK insists on some key to construct a client
        self._extra_headers = {} if self._api_key else {"Authorization": openai.Omit()}
        self._client = openai.OpenAI(
            api_key=self._api_key or "no-key",
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout_s,
            http_client=openai.DefaultHttpxClient(event_hooks={"response": [self._log_failed_attempt]}),
        )

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, url={self.url!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[api key]") if self._api_key else text

    def _log_failed_attempt(self, response) -> None:
        # the SDK logs that it retries, not why
        if response.status_code >= 400:
            log.warning("judge %s: %s answered HTTP %d", self.id, self.url, response.status_code)

    def _payload(self, request: JudgeRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": 1,
        }
        if request.top_logprobs:
            payload.update(logprobs=True, top_logprobs=request.top_logprobs)
        return payload

    @staticmethod
    def _attempts(request) -> int:
        """Attempts made for a request, from the retry counter the SDK puts in each request's headers."""
        return int(request.headers.get("x-stainless-retry-count", 0)) + 1

    def _call(self, request: JudgeRequest) -> JudgeResponse:
        import openai

        try:
            completion = self._client.chat.completions.create(**self._payload(request), extra_headers=self._extra_headers)
        except openai.APIStatusError as exc:
            # ``from None``: the SDK's own message quotes the body unredacted
            body = self._redact(exc.response.text[:500])
            attempts = self._attempts(exc.response.request)
            if attempts > 1:
                raise JudgeError(
                    f"{self.url}: giving up after {attempts} attempts; last error HTTP {exc.status_code}: {body}"
                ) from None
            raise JudgeError(f"{self.url} answered HTTP {exc.status_code}: {body}") from None
        except openai.APIConnectionError as exc:  # timeouts included
            raise JudgeError(
                f"{self.url}: giving up after {self._attempts(exc.request)} attempts; last error "
                f"{type(exc).__name__}: {self._redact(str(exc))[:200]}"
            ) from None
        except ValueError as exc:  # a 200 whose body is not JSON (json.JSONDecodeError)
            raise JudgeError(f"{self.url} answered HTTP 200 with a body that is not JSON ({exc})") from None
        return self._parse(completion)

    def _parse(self, completion) -> JudgeResponse:
        import openai.types.chat

        # the SDK hands back whatever a 200 carried: plain text from a proxy's HTML page, a list, an empty object
        choices = getattr(completion, "choices", None) if isinstance(completion, openai.types.chat.ChatCompletion) else None
        if not choices or choices[0].message is None:
            raise JudgeError(f"{self.url} answered HTTP 200 with something other than a chat completion: "
                             f"{self._redact(str(completion))[:300]}")
        choice = choices[0]
        top = None
        if choice.logprobs is not None and choice.logprobs.content:
            top = [{alt.token: alt.logprob for alt in position.top_logprobs or []} for position in choice.logprobs.content]
        usage = completion.usage
        return JudgeResponse(
            text=choice.message.content or "",
            top_logprobs=top,
            prompt_tokens=int(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=int(usage.completion_tokens or 0) if usage else 0,
        )

    def complete(self, requests_: Sequence[JudgeRequest]) -> Iterator[tuple[int, JudgeResponse]]:
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="judge")
        stop = threading.Event()

        def call(request: JudgeRequest) -> JudgeResponse:
            # after a failure no worker sends another request, even before this thread has seen the failure
            if stop.is_set():
                raise _Stopped()
            try:
                return self._call(request)
            except BaseException:
                stop.set()
                raise

        error: BaseException | None = None
        try:
            futures = {pool.submit(call, r): i for i, r in enumerate(requests_)}
            for future in as_completed(futures):
                if future.cancelled() or isinstance(future.exception(), _Stopped):
                    continue
                if future.exception() is not None:
                    # stop what has not started, but still hand over what was already paid for
                    if error is None:
                        error = future.exception()
                        for pending in futures:
                            pending.cancel()
                    continue
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error


@register_judge("hf")
class HFJudge(Judge):
    """A local Hugging Face causal LM, batched and always greedy (a request's temperature is not used);
    log-probabilities come from its logits."""

    supports_logprobs = True
    greedy_only = True

    def __init__(
        self, model: str, batch_size: int = 8, device: str = "auto", dtype: str = "auto", fingerprint: str | None = None
    ) -> None:
        self.model = model
        # a path alone does not say which weights lie there: the workflow adds a fingerprint of the model's
        # config, so regenerated weights at the same path never meet the old judgments in the cache
        self.id = f"hf:{model}" + (f"@{fingerprint}" if fingerprint else "")
        self.batch_size = batch_size
        self._options = {"device": device, "dtype": dtype, "batch_size": batch_size}
        self._generator: TransformersGenerator | None = None

    @property
    def generator(self) -> TransformersGenerator:
        # loaded on first use: a rerun answered wholly from the cache never loads the judge model
        if self._generator is None:
            self._generator = TransformersGenerator.from_pretrained(self.model, **self._options)
        return self._generator

    def complete(self, requests_: Sequence[JudgeRequest]) -> Iterator[tuple[int, JudgeResponse]]:
        # one batch per call, so every finished batch reaches the cache before the next starts
        for start in range(0, len(requests_), self.batch_size):
            chunk = requests_[start : start + self.batch_size]
            k = max(r.top_logprobs for r in chunk)
            generations = self.generator.generate(
                [GenerationRequest(r.messages, SamplingParams(max_new_tokens=r.max_tokens)) for r in chunk],
                top_logprobs=k,
            )
            for offset, (r, g) in enumerate(zip(chunk, generations)):
                top = None
                if r.top_logprobs:
                    top = [dict(list(position.items())[: r.top_logprobs]) for position in g.top_logprobs]
                yield start + offset, JudgeResponse(
                    text=g.text, top_logprobs=top, prompt_tokens=g.prompt_tokens, completion_tokens=len(g.token_ids)
                )


class RepeatedJudge(Judge):
    """Repeat ``repeat`` (1, 2, …) of ``judge``: the same backend asked again, under its own cache entries (its id
    carries the repeat), at ``temperature`` where given, else at each request's own (a judge at temperature 0 is
    still not deterministic behind an API: that spread is what the repeats measure)."""

    def __init__(self, judge: Judge, repeat: int, temperature: float | None = None) -> None:
        if repeat < 1:
            raise ValueError(f"a repeat counts from 1 (0 is the judge itself), got {repeat}")
        self.inner, self.repeat, self.temperature = judge, repeat, temperature
        self.backend, self.supports_logprobs = judge.backend, judge.supports_logprobs
        self.model = getattr(judge, "model", judge.id)
        self.id = f"{judge.id}#repeat{repeat}" + ("" if temperature is None else f"@t{temperature:g}")

    def complete(self, requests: Sequence[JudgeRequest]) -> Iterator[tuple[int, JudgeResponse]]:
        if self.temperature is not None:
            requests = [replace(r, temperature=self.temperature) for r in requests]
        return self.inner.complete(requests)


def repeat_spread(values: Sequence[float | None]) -> dict[str, Any]:
    """The judge's spread over repeats of one benchmark's judging: the scores, their mean, standard deviation
    (n − 1) and range; None where fewer than two repeats have a score."""
    scored = [v for v in values if v is not None]
    spread = {"n": len(values), "values": list(values), "mean": None, "std": None, "range": None}
    if len(scored) >= 2:
        mean = sum(scored) / len(scored)
        spread.update(mean=mean, std=(sum((v - mean) ** 2 for v in scored) / (len(scored) - 1)) ** 0.5,
                      range=max(scored) - min(scored))
    return spread


def judge_identity(judge: Judge, config: dict[str, Any], name: str | None, usage: JudgeUsage, prompt_version: str,
                   paper_judge: str | None = None) -> dict[str, Any]:
    """What a Scores file records of the judge that produced it: its config name, id (backend and model), model,
    the judge prompt's version, the decoding settings of its requests (temperature 0 where the backend only decodes
    greedily), and the judge of the paper's numbers (if given). Two scores are comparable only when all but the name
    and the paper's judge agree."""
    identity = {"name": name or judge.id, "id": judge.id, "backend": judge.backend,
                "model": getattr(judge, "model", judge.id),
                "prompt_version": prompt_version,
                "decoding": [{**d, "temperature": 0.0} if judge.greedy_only else d for d in usage.decodings],
                "demo_quality": bool(config.get("demo_quality", False))}
    if paper_judge:
        identity["paper_judge"] = paper_judge
    return identity


@dataclass
class JudgedBatch:
    responses: list[JudgeResponse]
    #: per request, the cache key (the prompt hash recorded in judgments)
    keys: list[str]
    usage: JudgeUsage = field(default_factory=JudgeUsage)


def run_judge(judge: Judge, requests_: Sequence[JudgeRequest], cache: JudgmentCache) -> JudgedBatch:
    """Responses to ``requests_``, from the cache where present; each new response is cached as it arrives."""
    keys = [request_key(judge.id, r.messages, r.decoding()) for r in requests_]
    usage = JudgeUsage()
    for r in requests_:
        usage.add_decoding(r.decoding())
    missing: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in cache:
            usage.cached += 1
        elif key not in missing:
            missing[key] = i
    todo = list(missing.values())
    if todo:
        log.info("judge %s: %d requests, %d from the cache, %d to send", judge.id, len(keys), usage.cached, len(todo))
    for j, response in progress(judge.complete([requests_[i] for i in todo]), f"judge {judge.id}", total=len(todo),
                                unit="judgment"):
        i = todo[j]
        cache.put({"key": keys[i], "judge": judge.id, "decoding": requests_[i].decoding(), "response": asdict(response)})
        usage.calls += 1
    responses = [JudgeResponse.from_dict(cache.get(key)["response"]) for key in keys]
    for r in responses:
        usage.prompt_tokens += r.prompt_tokens
        usage.completion_tokens += r.completion_tokens
    return JudgedBatch(responses=responses, keys=keys, usage=usage)
