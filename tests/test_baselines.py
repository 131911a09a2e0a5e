"""The bm25 / dsir / rds / rds_plus selectors against hand-worked numbers or a naive second implementation."""

import math
import random
import re

import numpy as np
import pandas as pd
import pytest
import torch

from sftlab.selection import build_selector
from sftlab.selection.baselines import score_table
from sftlab.selection.lexical import (dsir_log_weights, example_text, gumbel_top_k_order, ngram_counts, ngram_matrix,
                                      word_count)
from sftlab.selection.representations import cosine_matrix, pool_hidden_states, round_robin_order

# ----------------------------------------------------------------------------- BM25

CORPUS = [
    "apple banana apple cherry",
    "banana banana durian",
    "cherry apple elderberry fig grape",
    "fig fig fig",
    "grape apple banana cherry durian elderberry",
]
QUERIES = ["apple cherry", "fig banana", "kiwi durian"]


def naive_bm25(corpus, queries, k1=1.5, b=0.75):
    """Lucene's BM25 (no (k1 + 1) factor): idf = ln(1 + (N − df + 0.5) / (df + 0.5)),
    tf / (tf + k1·(1 − b + b·|d| / avgdl))."""
    docs = [re.findall(r"\b\w\w+\b", d.lower()) for d in corpus]
    avgdl = sum(map(len, docs)) / len(docs)
    out = np.zeros((len(docs), len(queries)))
    for j, q in enumerate(queries):
        for term in q.lower().split():
            df = sum(term in d for d in docs)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            for i, d in enumerate(docs):
                tf = d.count(term)
                out[i, j] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return out


def test_bm25_matches_a_naive_lucene_bm25():
    pytest.importorskip("bm25s", reason="bm25s is the BM25 package the bm25 selector uses")
    from sftlab.selection.lexical import bm25_scores

    got = bm25_scores(CORPUS, QUERIES)
    np.testing.assert_allclose(got, naive_bm25(CORPUS, QUERIES), rtol=1e-5)
    # a hand-worked entry: doc 3 ("fig fig fig", |d| = 3, avgdl = 21/5) for "fig": df 2, idf ln(1 + 3.5/2.5)
    idf = math.log(1 + 3.5 / 2.5)
    assert got[3, 1] == pytest.approx(idf * 3 / (3 + 1.5 * (0.25 + 0.75 * 3 / 4.2)), rel=1e-5)


def test_bm25_selector_ranks_by_the_subtask_aggregate():
    # LESS's aggregation: mean within a subtask, max over subtasks
    scores = np.array([[1.0, 3.0, 0.0], [2.0, 2.0, 2.5], [0.0, 0.0, 1.0]])
    table = score_table(["a", "b", "c"], scores, ["x", "x", "y"])
    np.testing.assert_allclose(table["score"], [2.0, 2.5, 1.0])
    np.testing.assert_allclose(table["score_x"], [2.0, 2.0, 0.0])
    assert build_selector("bm25", {"validation": "v"}).rank(["a", "b", "c"], {"bm25": table}) == ["b", "a", "c"]


def test_example_text_joins_messages_and_takes_a_pairs_chosen_answer():
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert example_text({"messages": messages}) == "Q\nA"
    assert example_text({"prompt": [{"role": "user", "content": "Q"}], "chosen": "C", "rejected": "R"}) == "Q\nC"


# ----------------------------------------------------------------------------- DSIR


def test_dsir_weights_on_a_toy_ngram_distribution():
    raw_texts, target_texts = ["a b", "a c"], ["a b"]
    raw = np.stack([ngram_counts(t) for t in raw_texts])
    target = np.stack([ngram_counts(t) for t in target_texts])
    assert raw.sum(axis=1).tolist() == [3, 3]  # two unigrams and one bigram each
    assert word_count(raw[0]) == 2
    # raw grams: a 2/6, b 1/6, "a b" 1/6, c 1/6, "a c" 1/6; target: a, b, "a b" 1/3 each
    e = 1e-8
    log = math.log
    w_ab = (log(1 / 3 + e) - log(2 / 6 + e)) + 2 * (log(1 / 3 + e) - log(1 / 6 + e))
    w_ac = (log(1 / 3 + e) - log(2 / 6 + e)) + 2 * (log(e) - log(1 / 6 + e))
    weights, _ = dsir_log_weights(raw, target)
    np.testing.assert_allclose(weights, [w_ab, w_ac], rtol=1e-9)
    sparse_weights, _ = dsir_log_weights(ngram_matrix(raw_texts), ngram_matrix(target_texts))
    np.testing.assert_allclose(sparse_weights, weights, rtol=1e-12)
    assert weights[0] == pytest.approx(2 * log(2), rel=1e-6)
    # Laplace smoothing: a pseudo-count 1 on each of the 10000 buckets
    smoothed, _ = dsir_log_weights(raw, target, smoothing=1.0)
    assert smoothed[1] == pytest.approx((log(2 / 10003 + e) - log(2 / 6 + e))
                                        + 2 * (log(1 / 10003 + e) - log(1 / 6 + e)))


def test_gumbel_top_k_samples_first_picks_in_proportion_to_the_weights():
    log_w = np.log([1.0, 2.0, 3.0])
    firsts = np.bincount([gumbel_top_k_order(log_w, seed)[0] for seed in range(6000)], minlength=3) / 6000
    np.testing.assert_allclose(firsts, [1 / 6, 2 / 6, 3 / 6], atol=0.02)
    assert gumbel_top_k_order([0.0, np.nan, 50.0], 0).tolist() == [2, 0, 1]


def test_dsir_selector_is_seeded_gumbel_top_k():
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "score": [0.0, 40.0, -40.0, 20.0]})
    sel = build_selector("dsir", {"validation": "v", "seed": 3})
    assert sel.rank(["a", "b", "c", "d"], {"dsir": table}) == ["b", "d", "a", "c"]
    orders = {tuple(build_selector("dsir", {"seed": s}).rank(["a", "c"], {"dsir": table.assign(score=0.0)}))
              for s in range(20)}
    assert orders == {("a", "c"), ("c", "a")}


# ----------------------------------------------------------------------------- RDS / RDS+


def test_weighted_mean_pooling_weights_positions_one_to_t_over_real_tokens():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]],
                           [[6.0, 0.0], [0.0, 3.0], [9.0, 9.0]]])  # second row: its last token is padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    pooled = pool_hidden_states(hidden, mask, "weighted_mean")
    # row 0: (1·[1,0] + 2·[0,1] + 3·[3,3]) / 6; row 1: (1·[6,0] + 2·[0,3]) / 3
    torch.testing.assert_close(pooled, torch.tensor([[10 / 6, 11 / 6], [2.0, 2.0]]))
    torch.testing.assert_close(pool_hidden_states(hidden, mask, "last"), torch.tensor([[3.0, 3.0], [0.0, 3.0]]))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_hidden_states(hidden, mask, "mean")


def reference_round_robin(similarity, k):
    """The reference's loop (get_top_influences.py, --selection_method max), written out as it is there."""
    ranked = {j: sorted(enumerate(similarity[:, j]), key=lambda x: x[1], reverse=True)
              for j in range(similarity.shape[1])}
    saved = []
    while len(saved) < k:
        for j in ranked:
            inst, _ = ranked[j].pop(0)
            if inst not in saved:
                saved.append(inst)
            if len(saved) >= k:
                break
    return saved


def test_round_robin_order_on_six_examples_and_two_validation_items():
    # item 0 ranks e0 > e1 > e2 > e3 > e4 > e5; item 1 ranks e0 > e3 > e5 > e1 > e4 > e2
    sim = np.array([[0.9, 0.9], [0.8, 0.3], [0.7, 0.1], [0.6, 0.8], [0.5, 0.2], [0.4, 0.5]])
    # round 0: e0 (item 1's e0 already taken: its turn passes); 1: e1, e3; 2: e2, e5; 3: both taken; 4: e4
    assert round_robin_order(sim).tolist() == [0, 1, 3, 2, 5, 4]
    # by the best single cosine instead (not RDS+): e0, e3, e1, ...
    assert np.argsort(-sim.max(axis=1), kind="stable").tolist() != [0, 1, 3, 2, 5, 4]
    table = pd.DataFrame({"id": [f"e{i}" for i in range(6)], "sim_1": sim[:, 1], "sim_0": sim[:, 0]})
    ranked = build_selector("rds_plus", {"validation": "v"}).rank([f"e{i}" for i in range(6)], {"rds_plus": table})
    assert ranked == ["e0", "e1", "e3", "e2", "e5", "e4"]


def test_round_robin_prefixes_are_the_references_selections():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, m = int(rng.integers(3, 30)), int(rng.integers(1, 6))
        sim = rng.normal(size=(n, m)).round(1)  # rounded: ties, which both break by pool index
        order = round_robin_order(sim).tolist()
        assert sorted(order) == list(range(n))
        for k in (1, n // 2, n):
            assert order[:k] == reference_round_robin(sim, k)


def test_rds_scores_are_cosines_aggregated_like_less():
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    val = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    cos = cosine_matrix(train, val).numpy()
    h = 1 / math.sqrt(2)
    np.testing.assert_allclose(cos, [[1, 0], [h, h], [0, 1]], atol=1e-6)
    table = score_table(["a", "b", "c"], cos, ["s", "s"])
    assert build_selector("rds", {}).rank(["a", "b", "c"], {"rds": table}) == ["b", "a", "c"]
    table = score_table(["a", "b", "c"], cos, ["s", "t"])  # max over subtasks: a and c reach 1
    assert build_selector("rds", {}).rank(["a", "b", "c"], {"rds": table}) == ["a", "c", "b"]


def test_hidden_state_features_pool_a_models_final_layer():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    from sftlab.selection.representations import hidden_state_features

    items = [{"id": str(i), "sequences": [{"input_ids": ids, "labels": ids}]}
             for i, ids in enumerate([[1, 5, 7, 9], [2, 3], [4, 4, 4]])]
    got = hidden_state_features(model, items, "weighted_mean", pad_token_id=0, max_tokens=64)
    for item, row in zip(items, got):  # one sequence at a time, unpadded, as the reference runs (batch size 1)
        ids = torch.tensor([item["sequences"][0]["input_ids"]])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        w = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32)
        torch.testing.assert_close(row, (hidden * (w / w.sum()).unsqueeze(-1)).sum(0), atol=1e-5, rtol=1e-5)
    last = hidden_state_features(model, items, "last", pad_token_id=0, max_tokens=64)
    torch.testing.assert_close(last[1], model(input_ids=torch.tensor([[2, 3]]), output_hidden_states=True)
                               .hidden_states[-1][0, -1], atol=1e-5, rtol=1e-5)
    random.seed(0)


# ----------------------------------------------------------------------------- configuration


def _config(**selection):
    return {"models": {"m": {"source": "random"}}, "datasets": {"d": {"source": "demo", "heldout": 3}},
            "validation": {"heldout": {"dataset": "d", "split": "heldout", "shots": 3}},
            "recipes": {"r": {"selection": selection}},
            "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["r"]}}}


@pytest.mark.parametrize("name", ["bm25", "dsir", "rds", "rds_plus"])
def test_the_baselines_take_a_validation_set_and_its_shots(name):
    from sftlab.config import prepare, selector_id

    sel = prepare(_config(name=name, validation="heldout", fraction=0.05))["recipes"]["r"]["selection"]
    assert sel["shots"] == 3
    assert selector_id(sel) == f"{name}-heldout-3shot" + ("-s0" if name == "dsir" else "")


@pytest.mark.parametrize("selection, message", [
    ({"name": "bm25", "fraction": 0.05}, "validation"),
    ({"name": "rds", "validation": "heldout", "beta": 0.1}, "rds selector has no DPO temperature"),
    ({"name": "bm25", "validation": "heldout", "min_words": 10}, "min_words"),
    ({"name": "dsir", "validation": "nope"}, "no validation set named 'nope'"),
])
def test_bad_baseline_settings_are_refused_naming_the_key(selection, message):
    from sftlab.config import ConfigError, prepare

    with pytest.raises(ConfigError, match=message):
        prepare(_config(**selection))


# ----------------------------------------------------------------------------- reports


def test_the_less_table_names_and_orders_the_baselines_as_the_paper_does(tmp_path):
    import json

    from sftlab.report.selection import curve_frame, selection_main_table, shots_table
    from sftlab.report.tables import load_scores

    recipes = {"less_5": "less", "rds_plus_5": "rds_plus", "rds_5": "rds", "dsir_5": "dsir", "bm25_5": "bm25",
               "random_5": "random", "sft": "full"}
    paths = []
    for k, recipe in enumerate(recipes):
        path = tmp_path / "results" / "m" / "d" / "runs" / recipe / "scores" / "em.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"benchmark": "em", "metric": "accuracy", "value": 40.0 + k, "ci_low": 35.0 + k,
                                    "ci_high": 45.0 + k, "n": 50}))
        paths.append(str(path))
    described = {r: {"selector": f"{n}-v", "name": n, "fraction": 1.0 if n == "full" else 0.05,
                     "shots": None if n in ("full", "random") else 2, "validation": None if n in ("full", "random")
                     else "v", "objective": "ntp", "group": "g"} for r, n in recipes.items()}
    frame = curve_frame(load_scores(paths), described)
    table = selection_main_table(frame, {"em": "em"}, pd.DataFrame(columns=["model", "dataset", "method", "source"]))
    assert list(table.method) == ["full data", "random 5%", "BM25 5%", "DSIR 5%", "RDS 5%", "RDS+ 5%", "LESS 5%"]
    assert set(shots_table(frame, ["em"]).method) == {"bm25", "dsir", "rds", "rds_plus", "less"}


def test_selection_cost_groups_give_rds_its_hidden_state_features_and_bm25_its_scores():
    from sftlab.report.dag import DagJob
    from sftlab.report.selection import selection_cost_groups

    def j(i, rule, deps, outputs, wildcards, gpus=0):
        return DagJob(rule=rule, wildcards={"model": "m", "dataset": "d", **wildcards}, benchmark=f"b/{rule}/{i}",
                      phase="method preparation", outputs=tuple(outputs), temp_outputs=(), gpus=gpus,
                      dependencies=tuple(deps))

    jobs = [j(*spec) for spec in [
        (0, "representation_scores", [6], ["r.parquet"], {"selector": "rds_plus-v"}, 1),
        (1, "select_data", [0], ["r.ids"], {"selector": "rds_plus-v", "fraction": "0.05"}),
        (2, "lexical_scores", [], ["b.parquet"], {"selector": "bm25-v"}),
        (3, "select_data", [2], ["b.ids"], {"selector": "bm25-v", "fraction": "0.05"}),
        (4, "train", [1], ["rp"], {"recipe": "rds_plus_5"}),
        (5, "train", [3], ["bm"], {"recipe": "bm25_5"}),
        (6, "pool_hidden_states", [], ["h.pt"], {"pooling": "weighted_mean"}, 1),
    ]]
    groups = selection_cost_groups(jobs, [["m", "d", "rds_plus_5"], ["m", "d", "bm25_5"]])
    assert [(g["stage"], g["item"], [b["path"] for b in g["benchmarks"]]) for g in groups] == [
        ("hidden-state features", "pool", ["b/pool_hidden_states/6"]),
        ("selection", "bm25-v", ["b/lexical_scores/2", "b/select_data/3"]),
        ("hidden-state features", "rds_plus-v", ["b/representation_scores/0"]),
        ("selection", "rds_plus-v", ["b/select_data/1"]),
        ("final training", "bm25_5", ["b/train/5"]),
        ("final training", "rds_plus_5", ["b/train/4"]),
    ]


def test_the_lexical_scores_script_writes_the_dsir_table(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "baseline_scores", Path(__file__).resolve().parents[1] / "scripts" / "baseline_scores.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pool = [{"id": "p0", "messages": [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]},
            {"id": "p1", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    val = [{"id": "v0", "subtask": "s", "prompt": [{"role": "user", "content": "a b"}], "chosen": "c", "rejected": "z"},
           {"id": "v1", "subtask": "s", "prompt": [{"role": "user", "content": "q"}], "chosen": "r", "rejected": "z"}]
    for name, rows in (("pool", pool), ("val", val)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "dsir.parquet"
    script.main(["lexical", "--method", "dsir", "--train", str(tmp_path / "pool.jsonl"), "--validation",
                 str(tmp_path / "val.jsonl"), "--shots", "1", "--min-words", "3", "--out", str(out)])
    table = pd.read_parquet(out)
    # one shot of subtask s: v0's text "a b\nc" is p0's; p1 ("x\ny", 2 words) is under min_words: NaN, never selected
    assert table["id"].tolist() == ["p0", "p1"] and math.isnan(table["score"][1])
    weights, _ = dsir_log_weights(ngram_matrix(["a b\nc", "x\ny"]), ngram_matrix(["a b\nc"]))
    assert table["score"][0] == pytest.approx(weights[0])


def _baseline_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "baseline_scores", Path(__file__).resolve().parents[1] / "scripts" / "baseline_scores.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.slow
def test_rds_leaves_out_a_validation_item_whose_answer_lies_past_max_length(tmp_path):
    """As LESS's influence does: all.yaml's rehearsal found RDS refusing a whole BBH validation set for 3 of 75 items
    whose 3-shot prompts ran past max_length. The others are scored; none left is an error naming the file."""
    import json

    from sftlab.models.random_init import build_random_model

    model, tokenizer = build_random_model()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    pool = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                         {"role": "assistant", "content": f"answer {i}"}]} for i in range(3)]
    short = {"id": "v0", "subtask": "a", "prompt": [{"role": "user", "content": "question 1"}], "chosen": "answer 1",
             "rejected": "no"}
    long = {**short, "id": "v1", "subtask": "b", "prompt": [{"role": "user", "content": "word " * 400}]}
    for name, rows in (("pool", pool), ("val", [short, long]), ("val_long", [long])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = _baseline_script()
    common = ["--model", str(tmp_path / "model"), "--max-length", "64", "--dtype", "float32"]
    script.main(["pool-features", "--train", str(tmp_path / "pool.jsonl"), "--pooling", "last", *common,
                 "--out", str(tmp_path / "pool.pt")])
    rds = ["representations", "--method", "rds", "--pool-features", str(tmp_path / "pool.pt"), "--shots", "2", *common]
    script.main([*rds, "--validation", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / "rds.parquet")])
    table = pd.read_parquet(tmp_path / "rds.parquet")
    # only subtask a's item is left: its column is the score, subtask b has none
    assert table["id"].tolist() == ["p0", "p1", "p2"] and table["score"].notna().all()
    assert not any(c.endswith("b") for c in table.columns)
    with pytest.raises(SystemExit, match=r"val_long\.jsonl: no validation item keeps an answer token within "
                                         r"max_length 64"):
        script.main([*rds, "--validation", str(tmp_path / "val_long.jsonl"), "--out", str(tmp_path / "x.parquet")])
    assert not (tmp_path / "x.parquet").exists()
