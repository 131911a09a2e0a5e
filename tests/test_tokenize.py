"""Loss masking with the tiny offline tokenizer; batching; the NTP loss against a naive per-token loop."""

import math

import pytest
import torch

from sftlab.data.tokenize import collate, encode_example, encode_prompt
from sftlab.models.random_init import build_tokenizer
from sftlab.objectives.base import sequence_logps, token_logps
from sftlab.objectives.ntp import ntp_loss

MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "Reverse the word 'apple'."},
    {"role": "assistant", "content": "elppa"},
]
# the same conversation in ChatML, written out by hand
MULTI_TURN_TEXT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
    "<|im_start|>assistant\n5<|im_end|>\n"
    "<|im_start|>user\nReverse the word 'apple'.<|im_end|>\n"
    "<|im_start|>assistant\nelppa<|im_end|>\n"
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def trained_spans(labels):
    """Runs of consecutive positions whose label is not -100."""
    spans, current = [], []
    for i, label in enumerate(labels):
        if label != -100:
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def test_multi_turn_masks_everything_but_assistant_turns(tok):
    enc = encode_example(tok, MULTI_TURN, max_length=512)
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == len(labels)
    assert tok.decode(ids) == MULTI_TURN_TEXT
    # a label is either the token itself or -100
    assert all(label in (-100, t) for t, label in zip(ids, labels))
    spans = trained_spans(labels)
    assert [tok.decode([ids[i] for i in span]) for span in spans] == ["5<|im_end|>\n", "elppa<|im_end|>\n"]
    # everything before the first answer is masked: system, user and the assistant header
    first = spans[0][0]
    assert tok.decode(ids[:first]) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?"
                                       "<|im_end|>\n<|im_start|>assistant\n")
    # the second user turn and header, between the two answers, are masked too
    between = ids[spans[0][-1] + 1: spans[1][0]]
    assert tok.decode(between) == "<|im_start|>user\nReverse the word 'apple'.<|im_end|>\n<|im_start|>assistant\n"
    assert all(labels[i] == -100 for i in range(spans[0][-1] + 1, spans[1][0]))


def test_single_turn_prompt_tokens_are_exactly_the_generation_prompt(tok):
    messages = [{"role": "user", "content": "Write 'red fox' in uppercase."},
                {"role": "assistant", "content": "RED FOX"}]
    enc = encode_example(tok, messages, max_length=512)
    prompt = encode_prompt(tok, messages[:1])
    n_masked = sum(label == -100 for label in enc["labels"])
    assert n_masked == len(prompt)
    assert enc["input_ids"][:len(prompt)] == prompt
    assert enc["labels"][:len(prompt)] == [-100] * len(prompt)
    response = tok.decode(enc["input_ids"][len(prompt):])
    assert response == "RED FOX<|im_end|>\n"
    assert enc["labels"][len(prompt):] == enc["input_ids"][len(prompt):]


def test_truncation_keeps_the_beginning(tok):
    full = encode_example(tok, MULTI_TURN, max_length=512)
    first_answer = trained_spans(full["labels"])[0]
    # cut in the middle of the second exchange: only the first answer stays trained
    cut = first_answer[-1] + 3
    enc = encode_example(tok, MULTI_TURN, max_length=cut)
    assert enc["input_ids"] == full["input_ids"][:cut]
    assert enc["labels"] == full["labels"][:cut]
    assert len(enc["input_ids"]) == cut
    assert trained_spans(enc["labels"]) == [first_answer]


def test_none_when_no_response_token_survives(tok):
    full = encode_example(tok, MULTI_TURN, max_length=512)
    first = trained_spans(full["labels"])[0][0]
    assert encode_example(tok, MULTI_TURN, max_length=first) is None
    kept = encode_example(tok, MULTI_TURN, max_length=first + 1)
    assert kept is not None and sum(label != -100 for label in kept["labels"]) == 1


def test_collate_pads_and_counts_response_tokens():
    features = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9], "ref_logp": -1.5},
        {"input_ids": [10, 11, 12], "labels": [-100, 11, -100], "ref_logp": -0.25},
    ]
    batch = collate(features, pad_token_id=0, columns=("ref_logp",))
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8, 9], [-100, 11, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["n_tokens"].tolist() == [3, 1]
    assert batch["ref_logp"].tolist() == [-1.5, -0.25]


def test_collate_on_encoded_examples(tok):
    a = encode_example(tok, MULTI_TURN, max_length=512)
    b = encode_example(tok, MULTI_TURN[1:3], max_length=512)
    batch = collate([a, b], pad_token_id=tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(a["input_ids"]))
    # response tokens counted by hand: every label that is a real token (the first position never is)
    expected = [sum(1 for label in f["labels"] if label != -100) for f in (a, b)]
    assert batch["n_tokens"].tolist() == expected
    assert expected[1] == len(tok("5<|im_end|>\n", add_special_tokens=False)["input_ids"])
    pad_from = len(b["input_ids"])
    assert (batch["input_ids"][1, pad_from:] == tok.pad_token_id).all()
    assert (batch["labels"][1, pad_from:] == -100).all()


def naive_ntp(logits, labels):
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            row = [float(x) for x in logits[b, t]]
            log_z = math.log(sum(math.exp(x) for x in row))
            total += -(row[target] - log_z)
            count += 1
    return total / count


def naive_sequence_logps(logits, labels):
    sums, lengths = [], []
    for b in range(logits.shape[0]):
        s, n = 0.0, 0
        for t in range(1, logits.shape[1]):
            target = int(labels[b, t])
            if target == -100:
                continue
            row = [float(x) for x in logits[b, t - 1]]
            s += row[target] - math.log(sum(math.exp(x) for x in row))
            n += 1
        sums.append(s)
        lengths.append(n)
    return sums, lengths


@pytest.fixture
def logits_and_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, generator=g) * 2
    labels = torch.tensor([
        [-100, -100, 3, 1, 6, -100],
        [-100, 2, 2, -100, -100, -100],
        [-100, -100, -100, -100, 0, 5],
    ])
    return logits, labels


def test_ntp_loss_equals_naive_loop(logits_and_labels):
    logits, labels = logits_and_labels
    assert float(ntp_loss(logits, labels)) == pytest.approx(naive_ntp(logits, labels), rel=1e-5)


def test_ntp_loss_by_hand():
    # two-token vocabulary, uniform logits: every response token costs log 2
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[-100, 1, 0]])
    assert float(ntp_loss(logits, labels)) == pytest.approx(math.log(2))
    # logits (0, ln 3) at the first position: p(token 1) = 3/4
    logits[0, 0, 1] = math.log(3)
    assert float(ntp_loss(logits, labels)) == pytest.approx((-math.log(0.75) + math.log(2)) / 2)


def test_sequence_logps_equals_naive_loop(logits_and_labels):
    logits, labels = logits_and_labels
    sums, lengths = sequence_logps(logits, labels)
    want_sums, want_lengths = naive_sequence_logps(logits, labels)
    assert lengths.tolist() == want_lengths == [3, 2, 2]
    assert sums.tolist() == pytest.approx(want_sums, rel=1e-5)
    # the token-level log-probs are 0 where masked
    logps, mask = token_logps(logits, labels)
    assert (logps[~mask] == 0).all()
