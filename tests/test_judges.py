"""Judge backends and the judgment cache, against a real local HTTP server speaking the OpenAI protocol."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from _openai_stub import OpenAIStub
from sftlab.evaluation.cache import JudgmentCache, request_key
from sftlab.evaluation.judges import HFJudge, JudgeError, JudgeRequest, OpenAIJudge, build_judge, run_judge
from sftlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
KEY = "sk-test-0d9f8e7c6b5a-never-write-me"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requests_(n: int, top_logprobs: int = 0) -> list[JudgeRequest]:
    return [
        JudgeRequest([{"role": "user", "content": f"grade answer number {i}"}], max_tokens=16, top_logprobs=top_logprobs)
        for i in range(n)
    ]


def openai_judge(stub: OpenAIStub, monkeypatch, **options) -> OpenAIJudge:
    monkeypatch.setenv("SFTLAB_TEST_JUDGE_KEY", KEY)
    return OpenAIJudge(model="judge-model", base_url=stub.base_url, api_key_env="SFTLAB_TEST_JUDGE_KEY", **options)


def test_request_key_depends_on_judge_prompt_and_decoding_only():
    messages = [{"role": "user", "content": "hi"}]
    key = request_key("openai:a", messages, {"max_tokens": 5, "temperature": 0.0})
    assert key == request_key("openai:a", [{"content": "hi", "role": "user"}], {"temperature": 0.0, "max_tokens": 5})
    assert len(key) == 64
    assert key != request_key("openai:b", messages, {"max_tokens": 5, "temperature": 0.0})
    assert key != request_key("openai:a", [{"role": "user", "content": "hi!"}], {"max_tokens": 5, "temperature": 0.0})
    assert key != request_key("openai:a", messages, {"max_tokens": 6, "temperature": 0.0})


def test_cache_drops_a_torn_last_line_and_keeps_appending(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = JudgmentCache(path)
    cache.put({"key": "a", "response": {"text": "1"}})
    cache.put({"key": "b", "response": {"text": "2"}})
    with open(path, "a") as fh:
        fh.write('{"key": "c", "resp')  # a job killed in the middle of a write
    reloaded = JudgmentCache(path)
    assert len(reloaded) == 2 and "c" not in reloaded
    assert path.read_text().endswith("}\n")
    reloaded.put({"key": "d", "response": {"text": "4"}})
    assert sorted(r["key"] for r in map(json.loads, path.read_text().splitlines())) == ["a", "b", "d"]
    assert len(JudgmentCache(path)) == 3


def test_cache_load_waits_for_a_write_in_progress_in_another_job(tmp_path):
    """A job loading the shared cache while another job is half-way through a record must not cut it off."""
    import fcntl
    import threading
    import time

    path = tmp_path / "cache.jsonl"
    JudgmentCache(path).put({"key": "a", "response": {"text": "1"}})
    line = json.dumps({"key": "b", "response": {"text": "2" * 5000}}) + "\n"
    loaded = {}
    with open(path, "ab") as writer:  # another job's append, holding the lock as JudgmentCache.put does
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        writer.write(line[:100].encode())
        writer.flush()
        reader = threading.Thread(target=lambda: loaded.setdefault("cache", JudgmentCache(path)))
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive(), "the reader did not wait for the lock"
        writer.write(line[100:].encode())
        writer.flush()
        fcntl.flock(writer.fileno(), fcntl.LOCK_UN)
    reader.join(timeout=10)
    assert sorted(r["key"] for r in map(json.loads, path.read_text().splitlines())) == ["a", "b"]
    assert "b" in loaded["cache"] and len(loaded["cache"]) == 2


def test_cache_rejects_a_corrupt_complete_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(DataError, match="cache.jsonl:2"):
        JudgmentCache(path)


def test_second_run_makes_zero_backend_calls(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        judge = openai_judge(stub, monkeypatch)
        first = run_judge(judge, requests_(6), JudgmentCache(tmp_path / "c.jsonl"))
        assert (stub.calls, first.usage.calls, first.usage.cached) == (6, 6, 0)
        second = run_judge(judge, requests_(6), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.calls == 6
        assert (second.usage.calls, second.usage.cached) == (0, 6)
        assert [r.text for r in second.responses] == [r.text for r in first.responses]
        assert second.keys == first.keys
        # tokens are what the judgments cost when paid for: 6 × (11 prompt + 3 completion) from the stub
        assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (66, 18)


def test_interrupted_job_resumes_where_it_stopped(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        judge = openai_judge(stub, monkeypatch, max_concurrency=1, max_retries=0)
        stub.fail_calls = {4: 400}  # the fourth call fails for good: the job dies there
        with pytest.raises(JudgeError, match="HTTP 400"):
            run_judge(judge, requests_(6), JudgmentCache(tmp_path / "c.jsonl"))
        # calls 1-3 answered before the failure; with one request at a time none is sent after it
        kept = len(JudgmentCache(tmp_path / "c.jsonl"))
        assert kept == 3 and stub.calls == 4
        resumed = run_judge(judge, requests_(6), JudgmentCache(tmp_path / "c.jsonl"))
        assert (resumed.usage.calls, resumed.usage.cached) == (6 - kept, kept)
        assert stub.completions == 6  # nothing answered was paid for twice


def test_transient_errors_are_retried(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: 500, 2: 429}
        judge = openai_judge(stub, monkeypatch)
        judged = run_judge(judge, requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        assert judged.responses[0].text.startswith("Rating: [[")
        assert (stub.calls, stub.completions) == (3, 1)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_waits_for_the_servers_retry_after(tmp_path, monkeypatch, status):
    """Retry-After: 2 is longer than any first backoff of the SDK (at most 0.5 s): the gap shows whose wait it was."""
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: status}
        stub.retry_after = {1: "2"}
        judge = openai_judge(stub, monkeypatch)
        judged = run_judge(judge, requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        assert judged.responses[0].text.startswith("Rating: [[")
        assert (stub.calls, stub.completions) == (2, 1)
        assert 2.0 <= stub.arrivals[1] - stub.arrivals[0] < 4.0


def test_retries_back_off_exponentially_without_retry_after(tmp_path, monkeypatch):
    # the SDK's backoff: 0.5 s · 2^retry, less up to 25 % jitter → gaps in [0.375, 0.5] then [0.75, 1.0]
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: 502, 2: 502}
        run_judge(openai_judge(stub, monkeypatch), requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        first, second = (b - a for a, b in zip(stub.arrivals, stub.arrivals[1:]))
        assert 0.3 <= first < 0.7 and 0.7 <= second < 1.3


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_a_200_that_is_not_json_fails_naming_the_url(tmp_path, monkeypatch, content_type):
    with OpenAIStub(api_key=KEY) as stub:
        stub.non_json_calls = {1: content_type}
        judge = openai_judge(stub, monkeypatch, max_concurrency=1)
        with pytest.raises(JudgeError, match=f"{stub.base_url}/chat/completions answered HTTP 200 with"):
            run_judge(judge, requests_(2), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.calls == 1  # not retried, and nothing sent after it


def test_no_key_sends_no_authorization_header(tmp_path):
    with OpenAIStub() as stub:
        judge = OpenAIJudge("judge-model", base_url=stub.base_url + "/", api_key_env=None)
        run_judge(judge, requests_(2), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.authorizations == [None, None] and stub.completions == 2


def test_timeouts_are_retried(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        stub.slow_calls = {1: 0.6}
        judge = openai_judge(stub, monkeypatch, timeout_s=0.15)
        judged = run_judge(judge, requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        assert judged.responses[0].text.startswith("Rating: [[")
        assert stub.calls == 2


def test_gives_up_after_max_retries(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: 503, 2: 503, 3: 503}
        judge = openai_judge(stub, monkeypatch, max_retries=2)
        with pytest.raises(JudgeError, match="giving up after 3 attempts"):
            run_judge(judge, requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.calls == 3


def test_concurrency_is_bounded(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY, delay_s=0.05) as stub:
        judge = openai_judge(stub, monkeypatch, max_concurrency=3)
        run_judge(judge, requests_(12), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.completions == 12
        assert 2 <= stub.max_in_flight <= 3


def test_logprobs_are_requested_and_parsed(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        judge = openai_judge(stub, monkeypatch)
        judged = run_judge(judge, requests_(1, top_logprobs=5), JudgmentCache(tmp_path / "c.jsonl"))
        assert stub.payloads[0]["logprobs"] is True and stub.payloads[0]["top_logprobs"] == 5
        top = judged.responses[0].top_logprobs[0]
        assert math.isclose(math.exp(top["m"]), 0.25) and math.isclose(math.exp(top["M"]), 0.75)


def test_missing_key_variable_is_named_without_a_value(monkeypatch):
    monkeypatch.delenv("SFTLAB_NO_SUCH_KEY", raising=False)
    with pytest.raises(JudgeError, match="SFTLAB_NO_SUCH_KEY"):
        build_judge({"backend": "openai", "model": "m", "api_key_env": "SFTLAB_NO_SUCH_KEY"})


def test_error_bodies_echoing_the_key_are_redacted(tmp_path, monkeypatch):
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: 403}  # the stub's error body repeats the Authorization header
        judge = openai_judge(stub, monkeypatch)
        with pytest.raises(JudgeError) as info:
            run_judge(judge, requests_(1), JudgmentCache(tmp_path / "c.jsonl"))
        assert KEY not in str(info.value) and "[api key]" in str(info.value)
        assert KEY not in repr(judge)


def test_api_key_never_reaches_results_or_logs(tmp_path, monkeypatch, caplog, capsys):
    results, logs = tmp_path / "results", tmp_path / "logs"
    monkeypatch.setenv("SFTLAB_TEST_JUDGE_KEY", KEY)
    eval_set = json.loads((FIXTURES / "alpaca_eval" / "eval_set.json").read_text())
    outputs = [{"instruction": e["instruction"], "output": f"my answer {i}", "generator": "tiny", "dataset": e["dataset"]} for i, e in enumerate(eval_set)]
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    judge_script = load_script("judge")
    caplog.set_level("DEBUG")
    with OpenAIStub(api_key=KEY) as stub:
        stub.fail_calls = {1: 500}  # a retried error is logged: its body echoes the header
        config = {"backend": "openai", "model": "judge-model", "base_url": stub.base_url,
                  "api_key_env": "SFTLAB_TEST_JUDGE_KEY"}
        judge_script.main([
            "--benchmark-type", "alpacaeval", "--answers", str(tmp_path / "outputs.json"),
            "--data", str(FIXTURES / "alpaca_eval"), "--judge", json.dumps(config),
            "--cache", str(results / "cache.jsonl"), "--judgments", str(results / "judgments.jsonl"),
            "--scores", str(results / "scores.json"), "--n-resamples", "200",
        ])
    captured = capsys.readouterr()
    logs.mkdir()
    (logs / "judge.log").write_text(caplog.text + captured.err + captured.out)
    assert "answered HTTP 500" in caplog.text and "retry 1 of" in caplog.text  # the log did record the failed call
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"cache.jsonl", "judgments.jsonl", "scores.json", "judge.log"}
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from sftlab.models.random_init import save_random_model

    path = tmp_path_factory.mktemp("tiny_judge")
    save_random_model(path)
    return path


def test_hf_judge_runs_batched_and_is_cached(tiny_model_dir, tmp_path):
    judge = build_judge({"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2, "device": "cpu", "max_tokens": 99})
    assert isinstance(judge, HFJudge) and judge.id == f"hf:{tiny_model_dir}"
    cache = JudgmentCache(tmp_path / "c.jsonl")
    judged = run_judge(judge, requests_(3, top_logprobs=2), cache)
    assert judged.usage.calls == 3
    for response in judged.responses:
        assert isinstance(response.text, str)
        assert 1 <= response.completion_tokens <= 16
        assert len(response.top_logprobs) == response.completion_tokens
        assert all(len(position) <= 2 for position in response.top_logprobs)
        assert all(lp <= 0 for position in response.top_logprobs for lp in position.values())
    fresh = build_judge({"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2, "device": "cpu"})
    again = run_judge(fresh, requests_(3, top_logprobs=2), JudgmentCache(tmp_path / "c.jsonl"))
    assert (again.usage.calls, again.usage.cached) == (0, 3)
    assert fresh._generator is None, "a rerun answered from the cache must not load the judge model"
