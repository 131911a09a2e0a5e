"""Random tiny models of real families: each tokenizer has the properties of the real family's (Llama-2 / Mistral-v0.1:
template-less SentencePiece with <s> </s> <unk> and BOS added; Llama-3.1: its special tokens and template; Qwen2:
ChatML), the model its architecture, and a materialised entry reloads with them."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from sftlab.models.materialise import materialise
from sftlab.models.random_init import build_random_model

SMALL = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
CHATML = ("<|im_start|>", "<|im_end|>")
TURN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family materialised from a models entry (random, seed 0) and loaded back, as every later job loads it."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in ("llama2", "mistral", "llama3", "qwen2"):
        entry = {"source": "random", "family": family, "seed": 0, **SMALL}
        if family in ("llama2", "mistral"):
            entry["prompt_format"] = "chatml"  # a template-less family needs one named; chatml adds no pad token
        materialise(entry, root / family)
        out[family] = (AutoTokenizer.from_pretrained(root / family),
                       AutoModelForCausalLM.from_pretrained(root / family),
                       GenerationConfig.from_pretrained(root / family))
    return out


@pytest.mark.parametrize("family,architecture", [("llama2", "LlamaForCausalLM"), ("mistral", "MistralForCausalLM")])
def test_sentencepiece_families_are_template_less_like_llama2_and_mistral(family, architecture):
    model, tok = build_random_model(family=family, seed=0)
    assert type(model).__name__ == architecture
    assert not tok.chat_template
    vocab = tok.get_vocab()
    assert not any(t in vocab for t in CHATML)
    # <unk> <s> </s> at 0, 1, 2, then the byte-fallback tokens
    assert [tok.unk_token, tok.bos_token, tok.eos_token] == ["<unk>", "<s>", "</s>"]
    assert [vocab["<unk>"], vocab["<s>"], vocab["</s>"], vocab["<0x00>"], vocab["<0x0A>"]] == [0, 1, 2, 3, 13]
    assert tok.pad_token is None
    ids = tok("Hi there\nWhat")["input_ids"]
    assert ids[0] == 1  # BOS added
    tokens = tok.convert_ids_to_tokens(ids)
    # SentencePiece's word-start marker and a newline as its byte
    assert tokens[1].startswith("▁") and "<0x0A>" in tokens and "▁there" in "".join(tokens)
    assert tok.decode(ids, skip_special_tokens=True) == "Hi there\nWhat"
    assert len(tok) <= 1024 and sum(p.numel() for p in model.parameters()) < 5e6


def test_llama3_family_has_llama31_tokens_and_template():
    model, tok = build_random_model(family="llama3", seed=0)
    assert type(model).__name__ == "LlamaForCausalLM"
    vocab = tok.get_vocab()
    for token in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"):
        assert token in vocab
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|end_of_text|>", None)
    assert tok("Hi")["input_ids"][0] == vocab["<|begin_of_text|>"]
    assert tok.apply_chat_template(TURN, tokenize=False) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>")
    # byte-level: no unknown token, any text round-trips
    assert tok.unk_token is None and tok.decode(tok("é\tx")["input_ids"], skip_special_tokens=True) == "é\tx"


def test_qwen2_family_has_chatml_tokens_and_qwen2_template():
    model, tok = build_random_model(family="qwen2", seed=0)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (None, "<|im_end|>", "<|endoftext|>")
    assert tok("Hi")["input_ids"] == tok("Hi", add_special_tokens=False)["input_ids"]  # no BOS
    assert tok.apply_chat_template(TURN, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n")
    # Qwen2-7B-Instruct's generation config stops at <|im_end|> and <|endoftext|>
    assert sorted(model.generation_config.eos_token_id) == sorted(tok.convert_tokens_to_ids(list(CHATML[1:]) + ["<|endoftext|>"]))


def test_families_are_deterministic():
    a, ta = build_random_model(family="llama2", seed=3, **SMALL)
    b, tb = build_random_model(family="llama2", seed=3, **SMALL)
    assert ta.get_vocab() == tb.get_vocab()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_materialised_families_keep_their_properties(saved):
    tok, model, gen = saved["llama3"]
    assert tok("Hi")["input_ids"][0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
    # 'model' (the default when the tokenizer has a template): Llama-3's own; generation stops at <|eot_id|> too
    assert "<|start_header_id|>" in tok.apply_chat_template(TURN, tokenize=False)
    assert tok.convert_tokens_to_ids("<|eot_id|>") in gen.eos_token_id
    tok, model, gen = saved["qwen2"]
    assert tok.apply_chat_template(TURN, tokenize=False).startswith("<|im_start|>system\nYou are a helpful")
    for family in ("llama2", "mistral"):
        tok, model, gen = saved[family]
        assert tok("Hi")["input_ids"][0] == tok.bos_token_id == 1
        assert tok.convert_ids_to_tokens(tok("Hi there")["input_ids"])[1].startswith("▁")
