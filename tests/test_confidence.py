"""SFTMix confidence scores, the median split, the selectors, and the confidence / t-SNE scripts."""

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sftlab.models.random_init import save_random_model
from sftlab.models.scoring import perplexities, score_examples
from sftlab.selection import build_selector, take_fraction
from sftlab.selection.confidence import confidence_table
from sftlab.report.tsne import plot_tsne, sample_ids, tsne_embedding

REPO = Path(__file__).resolve().parents[1]


class BigramLM(torch.nn.Module):
    """p(next = b | current = a) = table[a][b]: the hidden state is one-hot(a), the LM head holds log table[a][b]."""

    def __init__(self, table):
        super().__init__()
        table = torch.tensor(table, dtype=torch.float64)
        self.vocab = len(table)
        self.lm_head = torch.nn.Linear(self.vocab, self.vocab, bias=False).double()
        self.lm_head.weight.data = table.log().T.contiguous()

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask):
        hidden = torch.nn.functional.one_hot(input_ids, self.vocab).double()
        return SimpleNamespace(logits=self.lm_head(hidden))


TABLE = [
    [0.25, 0.25, 0.25, 0.25],
    [0.125, 0.125, 0.5, 0.25],
    [0.5, 0.25, 0.125, 0.125],
    [0.25, 0.5, 0.125, 0.125],
]


def test_perplexity_on_toy_model_by_hand():
    model = BigramLM(TABLE)
    examples = [
        # response tokens 2, 3 after 1, 2: p = 0.5, 0.125 -> mean NLL (ln 2 + ln 8)/2 = 2 ln 2 -> perplexity 4
        {"input_ids": [0, 1, 2, 3], "labels": [-100, -100, 2, 3]},
        # response token 1 after 3: p = 0.5 -> perplexity 2
        {"input_ids": [0, 3, 1], "labels": [-100, -100, 1]},
        # tokens 2, 0, 0 after 1, 2, 0: p = 0.5, 0.5, 0.25 -> perplexity exp((ln 2 + ln 2 + ln 4)/3) = 2^(4/3)
        {"input_ids": [3, 0, 1, 2, 0, 0], "labels": [-100, -100, -100, 2, 0, 0]},
    ]
    expected = [4.0, 2.0, 2 ** (4 / 3)]
    np.testing.assert_allclose(perplexities(model, examples, pad_token_id=0, batch_size=2), expected, rtol=1e-7)  # float32 log-softmax
    scores = score_examples(model, examples, pad_token_id=0, batch_size=3, pooled_hidden=True)
    assert scores["n_tokens"].tolist() == [2, 1, 3]
    # pooled over the response tokens' own positions: one-hot of (2, 3), (1), (2, 0, 0)
    np.testing.assert_allclose(scores["hidden"], [[0, 0, .5, .5], [0, 1, 0, 0], [2 / 3, 0, 1 / 3, 0]], rtol=1e-6)


def test_confidence_table_columns_and_values():
    table = confidence_table(["a", "b"], {1: [4.0, 2.0], 2: [2.0, 2.0], 3: [3.0, 5.0]})
    assert list(table.columns) == ["id", "perplexity_c1", "perplexity_c2", "perplexity_c3", "confidence", "variability", "split"]
    assert table["confidence"].tolist() == pytest.approx([-3.0, -3.0])
    # population std: a: (4, 2, 3) -> sqrt(2/3); b: (2, 2, 5) -> sqrt(2)
    assert table["variability"].tolist() == pytest.approx([math.sqrt(2 / 3), math.sqrt(2)])
    assert table["split"].tolist() == ["confident", "unconfident"]  # a tie: the smaller id is confident


def test_split_at_median_with_ties_by_id():
    ids = ["e", "a", "d", "c", "b"]
    table = confidence_table(ids, {0: [1.0, 2.0, 2.0, 2.0, 3.0]})
    # ranking: e (−1), then the tie at −2 by id: a, c, d, then b (−3); the first ⌈5/2⌉ = 3 are confident
    assert dict(zip(table["id"], table["split"])) == {
        "e": "confident", "a": "confident", "c": "confident", "d": "unconfident", "b": "unconfident"}
    even = confidence_table(["w", "x", "y", "z"], {0: [5.0, 1.0, 3.0, 2.0]})
    assert even["split"].tolist() == ["unconfident", "confident", "unconfident", "confident"]


def test_confident_and_unconfident_selectors():
    table = confidence_table(list("abcdef"), {0: [3.0, 1.0, 6.0, 2.0, 5.0, 4.0]})
    ids = list("abcdef")
    confident = build_selector("confident").rank(ids, {"confidence": table})
    unconfident = build_selector("unconfident").rank(ids, {"confidence": table})
    assert confident == ["b", "d", "a"]  # most confident (lowest perplexity) first
    assert unconfident == ["c", "e", "f"]  # least confident first
    # fraction is a share of the pool (6 ids): 0.5 is the whole half, 1/3 two of its three
    assert take_fraction(unconfident, 0.5, 6, 0.5) == ["c", "e", "f"]
    assert take_fraction(confident, 1 / 3, 6, 0.5) == ["b", "d"]
    with pytest.raises(ValueError, match="more than the selector delivers"):
        take_fraction(confident, 0.75, 6, 0.5)
    assert build_selector("confident").rank(["a", "b"], {"confidence": table}) == ["b", "a"]
    with pytest.raises(KeyError, match="lacks 1 pool id"):
        build_selector("confident").rank(["a", "zz"], {"confidence": table})


def test_ambiguous_selector_ranks_by_variability():
    # perplexities over two checkpoints; population std = |p1 - p2| / 2: a 1.0, b 3.0, c 0.0, d 3.0, e 0.5
    table = confidence_table(list("abcde"), {1: [2.0, 1.0, 4.0, 9.0, 5.0], 2: [4.0, 7.0, 4.0, 3.0, 6.0]})
    ranked = build_selector("ambiguous").rank(list("abcde"), {"confidence": table})
    assert ranked == ["b", "d", "a", "e", "c"]  # tie b/d broken by id
    assert take_fraction(ranked, 0.4, 5) == ["b", "d"]
    with pytest.raises(ValueError, match="two or more"):
        build_selector("ambiguous").rank(list("ab"), {"confidence": confidence_table(list("ab"), {1: [1.0, 2.0]})})


def test_tsne_helpers(tmp_path):
    assert sample_ids(list("abcdefgh"), 3, seed=0) == sample_ids(list("abcdefgh"), 3, seed=0)
    assert sample_ids(list("abc"), 10, seed=0) == list("abc")
    rng = np.random.default_rng(0)
    # two well-separated clouds stay separated in the map
    features = np.concatenate([rng.normal(0, 0.1, (10, 5)), rng.normal(5, 0.1, (10, 5))])
    embedding = tsne_embedding(features, seed=0)
    assert embedding.shape == (20, 2)
    centre_gap = np.linalg.norm(embedding[:10].mean(0) - embedding[10:].mean(0))
    spread = max(embedding[:10].std(0).max(), embedding[10:].std(0).max())
    assert centre_gap > 3 * spread
    plot_tsne([("a", embedding), ("b", embedding)], ["confident"] * 10 + ["unconfident"] * 10,
              tmp_path / "t.png", tmp_path / "t.pdf")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, fraction, expected", [("confident", 0.5, 36), ("unconfident", 0.5, 36),
                                                       ("confident", 0.25, 18), ("random", 0.25, 18)])
def test_select_data_keeps_a_share_of_the_pool(tmp_path, name, fraction, expected):
    """fraction is of the 72-example pool for every selector: the confident half at 0.5 is all 36 of its ids."""
    ids = [f"ex{i:02d}" for i in range(72)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"id": i, "messages": [], "source": "t"}) + "\n"
                                                  for i in ids))
    confidence_table(ids, {0: [float(i) for i in range(72)]}).to_parquet(tmp_path / "c.parquet")
    out = tmp_path / "sel.ids"
    load_script("select_data").main(["--train", str(tmp_path / "train.jsonl"), "--out", str(out),
                                     "--selection", json.dumps({"name": name, "fraction": fraction}),
                                     "--table", f"confidence={tmp_path / 'c.parquet'}"])
    chosen = out.read_text().split()
    assert len(chosen) == expected
    if name == "confident":  # the lowest perplexities, most confident first
        assert chosen == ids[:expected]
    if name == "unconfident":
        assert chosen == ids[::-1][:expected]


def test_confidence_and_tsne_scripts(tmp_path):
    checkpoints = [tmp_path / "reference" / f"checkpoint-{c}" for c in (1, 2)]
    for seed, path in enumerate(checkpoints):
        save_random_model(path, seed=seed)
    words = ["cat", "dog", "the answer", "10 plus 3", "Yes", "No"]
    rows = [{"id": f"ex{i:02d}", "source": "test",
             "messages": [{"role": "user", "content": f"What is {w}"}, {"role": "assistant", "content": w * (1 + i % 3)}]}
            for i, w in enumerate(words * 2)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "confidence.parquet"
    common = ["--max-length", "64", "--batch-size", "4", "--device", "cpu"]
    load_script("confidence").main(
        ["--checkpoints", *map(str, checkpoints), "--data", str(data), "--out", str(out),
         "--histogram-png", str(tmp_path / "h.png"), "--histogram-pdf", str(tmp_path / "h.pdf"), *common])
    table = pd.read_parquet(out)
    assert list(table.columns) == ["id", "perplexity_c1", "perplexity_c2", "confidence", "variability", "split"]
    assert len(table) == 12 and (table["split"] == "confident").sum() == 6
    np.testing.assert_allclose(table["confidence"], -(table["perplexity_c1"] + table["perplexity_c2"]) / 2)
    # a random model over a vocabulary of ~500 tokens: perplexities of the order of the vocabulary size
    assert table["perplexity_c1"].between(50, 5000).all()
    assert (tmp_path / "h.png").exists() and (tmp_path / "h.pdf").exists()

    load_script("tsne").main(
        ["--model", f"reference={checkpoints[0]}", "--model", f"other={checkpoints[1]}", "--data", str(data),
         "--confidence", str(out), "--sample", "10", "--png", str(tmp_path / "t.png"), "--pdf", str(tmp_path / "t.pdf"),
         *common])
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "t.pdf").stat().st_size > 0
