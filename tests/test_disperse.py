"""Dispersing a pool into shards: random and k-means splits, response embeddings, shard files and summaries."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sftlab.compose.disperse import (
    kmeans_shards,
    random_shards,
    response_embeddings,
    sentence_transformer_embeddings,
    shard_summary,
    write_shards,
)
from sftlab.io import read_ids, write_ids, write_jsonl


def example(i, answer, source="s"):
    return {"id": f"ex{i}", "source": source,
            "messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("n, k", [(10, 4), (12, 4), (5, 5), (7, 1)])
def test_random_shards_are_disjoint_cover_the_pool_and_balanced(n, k):
    ids = [f"id{i}" for i in range(n)]
    shards = random_shards(ids, k, seed=3)
    assert len(shards) == k
    flat = [i for s in shards for i in s]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    # pool order is kept within a shard
    assert all(s == sorted(s, key=ids.index) for s in shards)


def test_random_shards_depend_on_the_seed_only():
    ids = [f"id{i}" for i in range(40)]
    assert random_shards(ids, 4, 0) == random_shards(list(ids), 4, 0)
    assert random_shards(ids, 4, 0) != random_shards(ids, 4, 1)


def test_bad_splits_are_refused():
    with pytest.raises(ValueError, match="3 examples into 4"):
        random_shards(["a", "b", "c"], 4, 0)
    with pytest.raises(ValueError, match="duplicate"):
        random_shards(["a", "b", "a"], 2, 0)
    with pytest.raises(ValueError, match="2 embeddings for 3 ids"):
        kmeans_shards(["a", "b", "c"], np.zeros((2, 2)), 2, 0)


def test_kmeans_recovers_separated_clusters_numbered_by_first_appearance():
    rng = np.random.default_rng(0)
    centres = {"far": [10.0, 0.0], "mid": [0.0, 10.0], "near": [0.0, 0.0]}
    labels = ["mid", "near", "far", "mid", "far", "near", "near", "mid", "far", "far"]
    embeddings = np.array([centres[c] for c in labels]) + rng.normal(scale=0.1, size=(len(labels), 2))
    ids = [f"id{i}" for i in range(len(labels))]
    shards = kmeans_shards(ids, embeddings, 3, seed=0)
    assert shards == [["id0", "id3", "id7"], ["id1", "id5", "id6"], ["id2", "id4", "id8", "id9"]]


def test_kmeans_is_deterministic_for_a_seed():
    embeddings = np.random.default_rng(1).normal(size=(60, 5))
    ids = [f"id{i}" for i in range(60)]
    first = kmeans_shards(ids, embeddings, 4, seed=7)
    assert kmeans_shards(ids, embeddings.copy(), 4, seed=7) == first
    assert sorted(i for s in first for i in s) == sorted(ids)


@pytest.fixture(scope="module")
def tiny():
    from sftlab.models.random_init import build_random_model

    model, tokenizer = build_random_model(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return model.eval(), tokenizer


def test_response_embeddings_match_a_per_example_mean_over_response_tokens(tiny):
    from sftlab.data.tokenize import encode_example

    model, tokenizer = tiny
    examples = [example(0, "Yes"), example(1, "the answer is 10 plus 2"), example(2, "No, it is B")]
    got = response_embeddings(model, tokenizer, examples, batch_size=2)
    assert got.shape == (3, 16)
    for row, ex in zip(got, examples):
        # one unpadded sequence at a time, the rows of its response tokens picked out and averaged
        enc = encode_example(tokenizer, ex["messages"], max_length=512)
        hidden = model.model(input_ids=torch.tensor([enc["input_ids"]])).last_hidden_state[0]
        picks = [hidden[t] for t, label in enumerate(enc["labels"]) if label != -100]
        np.testing.assert_allclose(row, torch.stack(picks).mean(0).detach().numpy(), atol=1e-5)


def test_response_embeddings_keep_the_end_of_long_conversations(tiny):
    model, tokenizer = tiny
    long_prompt = {"id": "long", "messages": [{"role": "user", "content": "What is " * 200},
                                              {"role": "assistant", "content": "True"}]}
    short = {"id": "short", "messages": [{"role": "user", "content": "What is"},
                                         {"role": "assistant", "content": "True"}]}
    got = response_embeddings(model, tokenizer, [long_prompt, short], max_length=16)
    assert np.isfinite(got).all() and not np.allclose(got[0], got[1])


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None,
                    reason="sentence-transformers is installed")
def test_missing_sentence_transformers_is_a_clear_error():
    with pytest.raises(ImportError, match="sentence-transformers is not installed"):
        sentence_transformer_embeddings("all-MiniLM-L6-v2", [example(0, "Yes")])


def test_write_shards_and_summary(tmp_path):
    shards = [["ex0", "ex2"], ["ex1"]]
    paths = write_shards(tmp_path / "shards", shards)
    assert [p.name for p in paths] == ["shard-0.ids", "shard-1.ids"]
    assert [read_ids(p) for p in paths] == shards
    examples = {"ex0": example(0, "Yes it is", "a"), "ex1": example(1, "No", "b"), "ex2": example(2, "yes.", "b")}
    assert shard_summary(shards, examples).splitlines() == [
        "2 shards, 3 examples, sizes [2, 1]",
        "shard 0: 2 examples; sources 'a'×1, 'b'×1; first words 'yes'×2",
        "shard 1: 1 examples; sources 'b'×1; first words 'no'×1",
    ]


def run_script(argv):
    path = Path(__file__).parents[1] / "scripts" / "disperse.py"
    spec = importlib.util.spec_from_file_location("disperse_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(argv)


def test_disperse_script_random(tmp_path):
    ids = [f"ex{i}" for i in range(9)]
    write_ids(tmp_path / "pool.ids", ids)
    write_jsonl(tmp_path / "train.jsonl", [example(i, f"answer {i}") for i in range(12)])
    run_script(["--ids", str(tmp_path / "pool.ids"), "--examples", str(tmp_path / "train.jsonl"), "--k", "3",
                "--out-dir", str(tmp_path / "out"), "--log", str(tmp_path / "log.txt")])
    shards = [read_ids(tmp_path / "out" / f"shard-{k}.ids") for k in range(3)]
    assert shards == random_shards(ids, 3, 0)
    assert "sizes [3, 3, 3]" in (tmp_path / "log.txt").read_text()


def test_disperse_script_kmeans_with_the_base_model(tmp_path):
    from sftlab.models.random_init import save_random_model

    save_random_model(tmp_path / "base", hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    answers = ["Yes", "Yes", "No", "No", "the answer is 100", "the answer is 1000"]
    write_jsonl(tmp_path / "train.jsonl", [example(i, a) for i, a in enumerate(answers)])
    write_ids(tmp_path / "pool.ids", [f"ex{i}" for i in range(6)])
    argv = ["--ids", str(tmp_path / "pool.ids"), "--examples", str(tmp_path / "train.jsonl"), "--k", "2",
            "--method", "kmeans", "--base-model", str(tmp_path / "base"), "--device", "cpu"]
    run_script([*argv, "--out-dir", str(tmp_path / "a")])
    run_script([*argv, "--out-dir", str(tmp_path / "b")])
    a = [read_ids(tmp_path / "a" / f"shard-{k}.ids") for k in range(2)]
    assert a == [read_ids(tmp_path / "b" / f"shard-{k}.ids") for k in range(2)]
    assert sorted(i for s in a for i in s) == [f"ex{i}" for i in range(6)] and all(a)
