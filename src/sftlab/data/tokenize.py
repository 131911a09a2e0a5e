"""Render normalised examples with the model's chat template and mask everything but assistant tokens."""

from __future__ import annotations

from typing import Any, Sequence

from sftlab.lazy import torch

#: Used when a tokenizer has no chat template of its own (base models): ChatML, as in SmolLM2 and Qwen2.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    """Give a template-less tokenizer the documented default (ChatML), adding its markers as special tokens."""
    if getattr(tokenizer, "chat_template", None):
        return
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(
            f"tokenizer has no chat template and lacks the default template's tokens {missing}; "
            "add them when materialising the model"
        )


def render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a conversation ending with a user turn, followed by the generation prompt."""
    return tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, messages: Sequence[dict], max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels of a conversation; labels are -100 outside assistant turns.

    The conversation is cut into segments at the boundaries of the template's renderings of each
    prefix, so every assistant turn (with its end-of-turn marker) is exactly the part its rendering adds.
    Sequences are truncated to ``max_length`` from the end; returns None when no response token is left.
    """
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
            upto = render(tokenizer, messages[: i + 1])
            for text, trained in ((prompt, False), (upto, True)):
                if not text.startswith(done):
                    raise ValueError(
                        "the chat template does not render conversations prefix-consistently; "
                        "assistant tokens cannot be located"
                    )
                piece = tokenizer(text[len(done):], add_special_tokens=False)["input_ids"]
                ids += piece
                labels += piece if trained else [-100] * len(piece)
                done = text
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == -100 for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def collate(features: list[dict[str, Any]], pad_token_id: int, columns: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into a batch; extra per-example ``columns`` become (B,) tensors."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    # a response token's label sits at the position it is predicted from + 1: count the shifted labels
    batch["n_tokens"] = (labels[:, 1:] != -100).sum(-1)
    for name in columns:
        batch[name] = torch.tensor([float(f[name]) for f in features])
    return batch


def collate_packed(features: list[dict[str, Any]], columns: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Concatenate encoded examples into one padding-free row (transformers' ``DataCollatorWithFlattening`` layout).

    ``position_ids`` restart at 0 for every example and there is no ``attention_mask``: transformers then builds a
    block-diagonal causal mask (eager / sdpa) or per-sequence ``cu_seqlens`` (flash-attention), so attention never
    crosses examples. Each example's first label is −100, so no token is predicted across a boundary.
    ``seq_idx`` (1, N) names each token's example; ``n_tokens`` and the ``columns`` stay per example, (B,).
    """
    input_ids, labels, positions, seq_idx = [], [], [], []
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids += f["input_ids"]
        labels += [-100] + list(f["labels"][1:])
        positions += range(n)
        seq_idx += [row] * n
    labels = torch.tensor([labels])
    batch = {"input_ids": torch.tensor([input_ids]), "position_ids": torch.tensor([positions]), "labels": labels,
             "seq_idx": torch.tensor([seq_idx])}
    # shifted label t+1 belongs to the example of token t+1 (never t's neighbour across a boundary: it is −100)
    response = labels[0, 1:] != -100
    batch["n_tokens"] = torch.bincount(batch["seq_idx"][0, 1:][response], minlength=len(features))
    for name in columns:
        batch[name] = torch.tensor([float(f[name]) for f in features])
    return batch
