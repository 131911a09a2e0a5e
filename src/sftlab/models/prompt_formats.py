"""Prompt formats: how a conversation is written out for a model, applied once when the model is materialised.

A format is one unit: a Jinja chat template and the special tokens it needs. ``apply_prompt_format`` writes the
template into the tokenizer, adds the missing special tokens (resizing the embeddings, new rows set to the mean of
the existing ones), lists the format's end-of-turn token among the generation config's end-of-sequence ids, so that
generation stops there, and gives a pad-less tokenizer its end-of-sequence token as pad token (padded positions are
masked and never trained). Every later job uses the materialised tokenizer's template as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: ChatML, as in SmolLM2 and Qwen2 (without Qwen2's default system prompt)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: open-instruct's Tulu format (``CHAT_TEMPLATES["tulu"]`` in open_instruct/dataset_transformation.py; LESS's
#: ``concat_messages``): role markers are plain text, every assistant turn ends with the end-of-sequence token,
#: followed by a newline unless it is the last turn. open-instruct tokenizes with the tokenizer's BOS added and LESS
#: strips each message, hence ``bos_token`` first and ``trim``.
TULU_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] | trim + '\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] | trim + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] | trim + eos_token }}"
    "{% if not loop.last %}{{ '\n' }}{% endif %}"
    "{% else %}"
    "{{ raise_exception('the tulu format has no role ' + message['role']) }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)


#: HuggingFace's alignment-handbook Zephyr recipe (Mistral-7B-v0.1 fine-tuned on UltraChat-200k), as open-instruct's
#: ``CHAT_TEMPLATES["zephyr"]`` writes it: every turn, the user's too, ends with EOS and a newline. The recipe's
#: trainer tokenizes the rendered text with the tokenizer's BOS added, hence ``bos_token`` first.
ZEPHYR_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}"
    "{{ raise_exception('the zephyr format has no role ' + message['role']) }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")

#: Stanford Alpaca's ``prompt_no_input``, which DTM's code (TingchenFu/ACL24-ExpertFusion, submodel_training.py)
#: trains Llama-2 with on Tulu-v2's first turns: the answer follows "### Response:" directly. A system message
#: replaces the preamble (FastChat's alpaca convention; DTM drops system turns); later turns repeat the
#: instruction/response pair. EOS ends each answer as in Stanford Alpaca's train.py (DTM's code appends none, so its
#: models would never learn to stop).
ALPACA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set preamble = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set preamble = '" + ALPACA_PREAMBLE + "' %}{% endif %}"
    "{{ preamble + '\n\n' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '### Instruction:\n' + message['content'] + '\n\n### Response:' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\n\n' }}{% endif %}"
    "{% else %}"
    "{{ raise_exception('the alpaca format has no role ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
)


class PromptFormatError(ValueError):
    """A prompt format that cannot be applied to a tokenizer; the message names the config key."""


@dataclass(frozen=True)
class PromptFormat:
    name: str
    #: the Jinja chat template; None: the tokenizer's own
    template: str | None
    #: special tokens the template writes, added to a tokenizer that lacks them
    special_tokens: tuple[str, ...] = ()
    #: a pad token added when the tokenizer has none (the format's authors did so)
    pad_token: str | None = None
    source: str = field(default="", compare=False)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    f.name: f
    for f in (
        PromptFormat("model", None, source="the tokenizer's own chat template"),
        PromptFormat("chatml", CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"), source="ChatML (SmolLM2, Qwen2)"),
        PromptFormat("tulu", TULU_TEMPLATE, pad_token="<pad>",
                     source="open-instruct's Tulu format; LESS and open-instruct add <pad> to Llama tokenizers"),
        PromptFormat("zephyr", ZEPHYR_TEMPLATE, source="alignment-handbook's Zephyr SFT recipe"),
        PromptFormat("alpaca", ALPACA_TEMPLATE, source="Stanford Alpaca's prompt, as DTM's code uses it"),
    )
}


def prompt_format(name: str | None, tokenizer, key: str) -> PromptFormat:
    """The format named at config key ``key``; absent (None): the tokenizer's own template, else ChatML."""
    if name is None:
        name = "model" if getattr(tokenizer, "chat_template", None) else "chatml"
    if name not in PROMPT_FORMATS:
        raise PromptFormatError(f"config key {key}: unknown prompt format {name!r}; known: {sorted(PROMPT_FORMATS)}")
    fmt = PROMPT_FORMATS[name]
    if fmt.template is None and not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            f"config key {key}: prompt format 'model' uses the tokenizer's own chat template, but this tokenizer has "
            f"none (a base model); name a format instead: {sorted(n for n in PROMPT_FORMATS if n != 'model')}"
        )
    return fmt


def resize_embeddings_to_mean(model, n_tokens: int) -> None:
    """Grow the input (and untied output) embeddings to ``n_tokens`` rows; new rows are the mean of the old ones."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n_tokens, mean_resizing=False)
    with torch.no_grad():
        embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
        for weight in {id(m.weight): m.weight for m in embeddings if m is not None}.values():  # tied: once
            weight[old:] = weight[:old].float().mean(0, keepdim=True).to(weight.dtype)


def end_of_turn_token(tokenizer) -> str | None:
    """The first special token the template writes after an assistant message's content (its end-of-turn marker)."""
    content = "sftlab end of turn probe"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "question"}, {"role": "assistant", "content": content}], tokenize=False)
    tail = text[text.index(content) + len(content):]
    specials = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.added_tokens_decoder.values() if t.special}
    for token_id in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token in specials:
            return token
    return None


def added_tokens(fmt: PromptFormat, tokenizer) -> dict:
    """The ``add_special_tokens`` argument that gives ``tokenizer`` the tokens ``fmt`` needs ({} if it has them)."""
    vocab = tokenizer.get_vocab()
    new: dict = {}
    missing = [t for t in fmt.special_tokens if t not in vocab]
    if missing:
        new["additional_special_tokens"] = missing
    if fmt.pad_token and tokenizer.pad_token is None:
        new["pad_token"] = fmt.pad_token
    return new


def apply_prompt_format(name: str | None, tokenizer, model, generation_config, key: str) -> PromptFormat:
    """Apply a format in place: template, missing tokens (embeddings resized), end-of-turn stop id, pad token.

    ``model`` is loaded only by callers whose format adds tokens (``added_tokens``); otherwise it may be None.
    ``generation_config``: the model's (its ``eos_token_id`` gains the end-of-turn id).
    """
    fmt = prompt_format(name, tokenizer, key)
    new = added_tokens(fmt, tokenizer)
    if new:
        if model is None:
            raise ValueError(f"prompt format {fmt.name!r} adds tokens {new}: the model must be loaded to resize it")
        tokenizer.add_special_tokens(new, replace_extra_special_tokens=False)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            resize_embeddings_to_mean(model, len(tokenizer))
        log.info("prompt format %s: added %s; embeddings resized to %d rows", fmt.name, new, len(tokenizer))
    if fmt.template is not None:
        tokenizer.chat_template = fmt.template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    end = end_of_turn_token(tokenizer)
    if end is not None:
        eos = generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.convert_tokens_to_ids(end)}
        ids.discard(None)
        generation_config.eos_token_id = sorted(ids)[0] if len(ids) == 1 else sorted(ids)
    return fmt
