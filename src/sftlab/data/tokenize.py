"""Render normalised examples with the model's chat template and mask everything but assistant tokens."""

from __future__ import annotations

from typing import Any, Sequence

from sftlab.lazy import torch

def ensure_chat_template(tokenizer) -> None:
    """Refuse a tokenizer without a chat template: the model's prompt format is applied when it is materialised."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template: a model's prompt format (config key models.<name>.prompt_format) is "
            "written into its tokenizer when the workflow materialises it (rule materialise_model); load the model "
            "from resources/models/<name>, or give this directory a template"
        )


def render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a conversation ending with a user turn, followed by the generation prompt."""
    return tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, messages: Sequence[dict], max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels of a conversation; labels are -100 outside assistant turns.

    The template's renderings of each prefix locate every assistant turn (with its end-of-turn marker) as the
    characters its rendering adds. The text up to the last assistant turn is tokenized once, as a whole — a
    SentencePiece tokenizer (Llama-2, Mistral) would put a word-start marker at the head of each separately
    tokenized piece — and a token is trained when its first character lies in an assistant turn.
    Sequences are truncated to ``max_length`` from the end; returns None when no response token is left.
    """
    spans: list[tuple[int, int]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
            upto = render(tokenizer, messages[: i + 1])
            if not (prompt.startswith(done) and upto.startswith(prompt)):
                raise ValueError(
                    "the chat template does not render conversations prefix-consistently; "
                    "assistant tokens cannot be located"
                )
            spans.append((len(prompt), len(upto)))
            done = upto
    encoded = tokenizer(done, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]
    labels = [
        token if any(start <= first < end for start, end in spans) else -100
        for token, (first, _) in zip(ids, encoded["offset_mapping"])
    ]
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
