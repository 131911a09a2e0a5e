"""Progress bars: forced on in a job's log file, and drawn by every loop that can run for minutes on a cluster."""

import math

import pytest

import sftlab.progress
from sftlab.compose.disperse import response_embeddings
from sftlab.compose.fisher import diagonal_fisher
from sftlab.data.tokenize import encode_example
from sftlab.progress import progress
from sftlab.training.trainer import heldout_sums


def test_the_bar_is_drawn_into_a_log_file_that_is_no_terminal(capsys):
    assert list(progress(range(5), "scoring", total=5)) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "scoring" in err and "5/5" in err  # tqdm alone would stay silent off a terminal


@pytest.fixture
def bars(monkeypatch):
    """(desc, total) of every bar opened through the project's helper."""
    opened = []
    real = sftlab.progress.tqdm

    def recording(iterable, desc, total, **kwargs):
        opened.append((desc, total))
        return real(iterable, desc=desc, total=total, **kwargs)

    monkeypatch.setattr(sftlab.progress, "tqdm", recording)
    return opened


@pytest.fixture(scope="module")
def tiny():
    from sftlab.models.random_init import build_random_model

    model, tokenizer = build_random_model(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return model.eval(), tokenizer


def examples(n):
    return [{"id": f"ex{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                          {"role": "assistant", "content": f"answer {i} " * (i + 1)}]}
            for i in range(n)]


def test_held_out_evaluation_fisher_and_embeddings_show_their_progress(tiny, bars):
    model, tokenizer = tiny
    features = [encode_example(tokenizer, e["messages"], 64) for e in examples(7)]
    heldout_sums(model, tokenizer.pad_token_id, features, [True] * 7, batch_size=3)
    names = [n for n, _ in model.named_parameters()][:1]
    diagonal_fisher(model, features[:4], names)
    response_embeddings(model, tokenizer, examples(5), batch_size=2)
    assert bars == [("held-out evaluation", math.ceil(7 / 3)), ("Fisher", 4), ("response embeddings", 3)]


def test_vllm_draws_its_own_bar_the_way_ours_are_drawn(monkeypatch, capsys):
    """vLLM's LLM.generate takes a tqdm factory as ``use_tqdm`` and opens its bars with it (vllm/entrypoints/llm.py)."""
    import sys
    import types

    from sftlab.evaluation.generation import GenerationRequest, SamplingParams, VLLMGenerator
    from sftlab.models.random_init import build_tokenizer

    class FakeLLM:
        def generate(self, prompts, params, use_tqdm=True):
            assert callable(use_tqdm), "generation on vLLM without a progress bar"
            for _ in use_tqdm(prompts, desc="Adding requests"):
                pass
            bar = use_tqdm(total=len(prompts), desc="Processed prompts", dynamic_ncols=True)
            bar.update(len(prompts))
            bar.close()
            done = types.SimpleNamespace(text="ok", token_ids=[1], logprobs=None)
            return [types.SimpleNamespace(outputs=[done]) for _ in prompts]

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kwargs: kwargs
    vllm.inputs = types.SimpleNamespace(TokensPrompt=lambda prompt_token_ids: prompt_token_ids)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", vllm.inputs)
    generator = VLLMGenerator.__new__(VLLMGenerator)
    generator.llm, generator.tokenizer, generator.seed = FakeLLM(), build_tokenizer(), 0
    generator.stop_token_ids, generator.stop_at_eos = [2], True
    request = GenerationRequest([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=4))
    assert [g.text for g in generator.generate([request] * 3)] == ["ok"] * 3
    assert "Processed prompts: 100%" in capsys.readouterr().err
