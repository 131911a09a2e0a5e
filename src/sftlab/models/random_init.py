"""Tiny randomly initialised models with tokenizers trained offline on a fixed text (tests, CI, rehearsals).

A ``family`` stands in for a real model family: its architecture, and a tokenizer with the properties of the real one.

- ``tiny`` (default): Llama architecture, byte-level BPE with ChatML tokens and a ChatML template (the test model).
- ``llama2`` / ``mistral``: Llama-2-7b-hf / Mistral-7B-v0.1 — SentencePiece-style BPE with byte fallback, ``<unk>``
  ``<s>`` ``</s>`` at ids 0-2 and the 256 byte tokens after them, BOS added, no pad token, no chat template, no
  ChatML tokens; Llama resp. Mistral architecture.
- ``llama3``: Llama-3.1-8B — byte-level BPE, its special tokens after the vocabulary, BOS ``<|begin_of_text|>``
  added, EOS ``<|end_of_text|>``, no pad token, and Llama-3.1's chat template (tools left out), which the base
  model's tokenizer ships.
- ``qwen2``: Qwen2-7B-Instruct — byte-level BPE with ``<|endoftext|>`` ``<|im_start|>`` ``<|im_end|>`` after the
  vocabulary, no BOS, EOS ``<|im_end|>``, pad ``<|endoftext|>``, Qwen2's ChatML template (default system prompt).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sftlab.models.prompt_formats import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A fixed training text: every printable character plus the chat roles and common English words,
# so the tokenizer is deterministic and never depends on the data set it will later see.
_TOKENIZER_TEXT = [
    string.printable,
    "system user assistant the of and to in is that for it as with was on be by this are answer question",
    "What is Reverse the word Sort these numbers Uppercase Count letters Add multiply plus minus equals",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 Yes No True False A B C D",
]

#: Llama-3.1's chat template without its tool-calling branches (the date line is the template's own default)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\n' }}"
    "{{- 'Today Date: ' + date_string + '\n\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

LLAMA3_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                         "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]

#: Qwen2-7B-Instruct's chat template
QWEN2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _train_bpe(vocab_size: int, special_tokens: list[str] = (), byte_level: bool = True, text=None):
    """A BPE ``tokenizers.Tokenizer`` trained on the fixed text (byte-level, or SentencePiece-style words)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator((text or _TOKENIZER_TEXT) * 20, trainer=trainer)
    return tok


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with ChatML special tokens and the ChatML template (family ``tiny``)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(vocab_size, SPECIAL_TOKENS),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_sentencepiece_tokenizer(vocab_size: int = 512):
    """Llama-2 / Mistral-v0.1 style: SentencePiece BPE with byte fallback, ``<unk>`` ``<s>`` ``</s>``, BOS added."""
    import json

    from transformers import LlamaTokenizer

    n_fixed = 3 + 256
    # SentencePiece's Llama vocabulary has no whitespace characters but ▁: newlines and tabs fall back to bytes
    text = [line.translate({ord(c): None for c in "\t\n\r\x0b\x0c"}) for line in _TOKENIZER_TEXT]
    learned = json.loads(_train_bpe(vocab_size - n_fixed, byte_level=False, text=text).to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small for a SentencePiece-style tokenizer: its 259 fixed "
                         f"tokens and the fixed text's {len(vocab) - n_fixed} characters need {len(vocab)}")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, legacy=False)


def _byte_level_with_specials(vocab_size: int, specials: list[str], **tokens):
    """A byte-level BPE whose special tokens follow the learned vocabulary (as in Llama-3 and Qwen2)."""
    from transformers import PreTrainedTokenizerFast

    tok = _train_bpe(vocab_size - len(specials))
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


def build_llama3_tokenizer(vocab_size: int = 512):
    from tokenizers import processors

    fast = _byte_level_with_specials(vocab_size, LLAMA3_SPECIAL_TOKENS, bos_token="<|begin_of_text|>",
                                     eos_token="<|end_of_text|>")
    bos = ("<|begin_of_text|>", fast.convert_tokens_to_ids("<|begin_of_text|>"))
    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos[0]} $A", pair=f"{bos[0]} $A {bos[0]} $B", special_tokens=[bos])
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


def build_qwen2_tokenizer(vocab_size: int = 512):
    fast = _byte_level_with_specials(vocab_size, SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN2_TEMPLATE
    return fast


@dataclass(frozen=True)
class Family:
    tokenizer: Callable
    #: a transformers config class name
    config: str
    #: whether the tokenizer ships a chat template (known without building it: planning checks prompt formats)
    chat_template: bool
    #: extra end-of-sequence tokens of the generation config (the real model's)
    generation_eos: tuple[str, ...] = ()


FAMILIES = {
    "tiny": Family(build_tokenizer, "LlamaConfig", chat_template=True),
    "llama2": Family(build_sentencepiece_tokenizer, "LlamaConfig", chat_template=False),
    "mistral": Family(build_sentencepiece_tokenizer, "MistralConfig", chat_template=False),
    "llama3": Family(build_llama3_tokenizer, "LlamaConfig", chat_template=True),
    "qwen2": Family(build_qwen2_tokenizer, "Qwen2Config", chat_template=True, generation_eos=("<|endoftext|>",)),
}


def build_family_tokenizer(family: str = "tiny", vocab_size: int = 512):
    if family not in FAMILIES:
        raise ValueError(f"unknown random model family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family].tokenizer(vocab_size)


def build_random_model(
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    max_position_embeddings: int = 512,
    seed: int = 0,
    family: str = "tiny",
):
    """(model, tokenizer): a causal LM of ``family``'s architecture with seeded random weights."""
    import torch
    import transformers

    tokenizer = build_family_tokenizer(family, vocab_size)
    config = getattr(transformers, FAMILIES[family].config)(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    eos = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in FAMILIES[family].generation_eos]
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_random_model(out_dir: str | Path, **kwargs) -> None:
    model, tokenizer = build_random_model(**kwargs)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
