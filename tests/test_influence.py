"""LESS/ROSE influence and selection, the warmup checkpoint callback, and the implicit-reward win rate."""

import copy
import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from sftlab.data.tokenize import collate, encode_example
from sftlab.benchmarks.implicit_reward import implicit_reward_win_rate
from sftlab.io import write_json, write_jsonl
from sftlab.models.random_init import build_random_model
from sftlab.objectives.base import sequence_logps
from sftlab.selection import build_selector, take_fraction
from sftlab.selection.gradients import pair_messages, save_features
from sftlab.selection.influence import aggregate_subtasks, influence_matrix, influence_table
from sftlab.selection.warmup import WarmupCheckpointCallback, checkpoint_weights, load_epoch_info, load_moments

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the of and to in is that for it as with was on be by this are answer question".split()
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def text(k: int, n: int) -> str:
    return " ".join(WORDS[(k * 5 + j) % len(WORDS)] for j in range(n))


def pool(n: int) -> list[dict]:
    return [{"id": f"ex{k}", "source": "gen", "messages": [{"role": "user", "content": text(k, 3 + k % 3)},
                                                           {"role": "assistant", "content": text(k + 1, 2 + k % 4)}]}
            for k in range(n)]


def pairs(n: int) -> list[dict]:
    return [{"id": f"p{k}", "prompt": [{"role": "user", "content": text(k, 3)}], "chosen": text(k + 2, 2 + k % 3),
             "rejected": text(k + 3, 1 + k % 2), "subtask": f"t{k % 2}"} for k in range(n)]


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- influence by hand

# Two checkpoints with mean lrs 2e-5 and 1e-5 → w = (2/3, 1/3). Validation items v0=(1,0), v1=(0,1) in subtask a,
# v2=(−0.6,0.8) in b, at both checkpoints. Training features: z0 (1,0) then (0,1); z1 (0,1) then (0,1);
# z2 (0.6,0.8) then (1,0). Weighted cosines:
#   z0: [2/3, 1/3, −0.4 + 0.8/3]      → a: 0.5,       b: −0.133333 → 0.5
#   z1: [0, 1, 0.8]                    → a: 0.5,       b:  0.8      → 0.8
#   z2: [0.4 + 1/3, 0.8·2/3, 0.28·2/3 − 0.2] → a: 0.633333, b: −0.013333 → 0.633333
TRAIN = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])]
VAL = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]])
SUBTASKS = ["a", "a", "b"]


def test_influence_aggregation_on_hand_made_matrix():
    scores = influence_matrix(TRAIN, [VAL, VAL], [2 / 3, 1 / 3])
    total, per_subtask = aggregate_subtasks(scores, SUBTASKS)
    assert per_subtask["a"].tolist() == pytest.approx([0.5, 0.5, 19 / 30], abs=1e-6)
    assert per_subtask["b"].tolist() == pytest.approx([-2 / 15, 0.8, -1 / 75], abs=1e-6)
    assert total.tolist() == pytest.approx([0.5, 0.8, 19 / 30], abs=1e-6)


SETTINGS = {"projection": "sjlt", "dim": 2, "seed": 0, "n_params": 10}


def write_checkpoint(path: Path, mean_lr: float) -> Path:
    write_json(path / "warmup_epoch.json", {"epoch": 1, "mean_lr": mean_lr, "betas": [0.9, 0.999], "eps": 1e-8})
    return path


def test_influence_table_and_selectors_from_feature_files(tmp_path):
    checkpoints = [write_checkpoint(tmp_path / "checkpoint-1", 2e-5), write_checkpoint(tmp_path / "checkpoint-2", 1e-5)]
    train_paths, val_paths = [], []
    for c, features in enumerate(TRAIN):
        train_paths.append(tmp_path / f"train{c}.pt")
        val_paths.append(tmp_path / f"val{c}.pt")
        save_features(train_paths[-1], ["z0", "z1", "z2"], features, ["s"] * 3, ["z3"], "train", **SETTINGS)
        save_features(val_paths[-1], ["v0", "v1", "v2"], VAL, SUBTASKS, [], "dpo", **SETTINGS)
    assert checkpoint_weights(checkpoints) == pytest.approx([2 / 3, 1 / 3])

    table = influence_table(train_paths, val_paths, checkpoints)
    assert list(table.columns) == ["id", "influence", "influence_a", "influence_b"]
    assert table["id"].tolist() == ["z0", "z1", "z2", "z3"]
    assert table["influence"].tolist()[:3] == pytest.approx([0.5, 0.8, 19 / 30], abs=2e-3)  # fp16 features
    assert math.isnan(table["influence"].iloc[3])

    ids = ["z0", "z1", "z2", "z3"]
    ranked = build_selector("rose").rank(ids, {"influence_rose": table})
    assert ranked == ["z1", "z2", "z0", "z3"]  # no gradient (z3) ranks last
    assert take_fraction(ranked, 0.5, 4) == ["z1", "z2"]
    assert build_selector("less").rank(ids, {"influence_less": table}) == ranked
    with pytest.raises(KeyError, match="influence_less"):
        build_selector("less").rank(ids, {"influence_rose": table})
    with pytest.raises(KeyError, match="no influence for 1 pool ids"):
        build_selector("rose").rank(ids + ["z9"], {"influence_rose": table})

    save_features(tmp_path / "other.pt", ["z0", "z1", "z2"], TRAIN[1], ["s"] * 3, ["z3"], "train", **{**SETTINGS, "seed": 1})
    with pytest.raises(ValueError, match="seed 1"):
        influence_table([train_paths[0], tmp_path / "other.pt"], val_paths, checkpoints)
    # validation features of another projection than the training features: refused, not compared
    save_features(tmp_path / "dense.pt", ["v0", "v1", "v2"], VAL, SUBTASKS, [], "dpo", **{**SETTINGS, "projection": "dense"})
    with pytest.raises(ValueError, match="projection dense.*cannot be compared"):
        influence_table(train_paths, [val_paths[0], tmp_path / "dense.pt"], checkpoints)


def test_influence_selector_breaks_ties_in_pool_order():
    table = pd.DataFrame({"id": ["a", "b", "c", "d"], "influence": [0.1, 0.3, 0.1, float("nan")]})
    assert build_selector("less").rank(["d", "c", "b", "a"], {"influence_less": table}) == ["b", "c", "a", "d"]


# ----------------------------------------------------------------------------- warmup run (real Trainer)


@pytest.fixture(scope="module")
def warmup(tmp_path_factory):
    """A 2-epoch LoRA warmup with the callback: 8 examples, batch 4, lr 1e-3 linear decay → 4 steps."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    root = tmp_path_factory.mktemp("warmup")
    base, tokenizer = build_random_model(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    model = get_peft_model(base, LoraConfig(**LORA))
    examples = pool(8)
    dataset = [encode_example(tokenizer, e["messages"], 64) for e in examples]

    def collator(features):
        batch = collate(features, tokenizer.pad_token_id)
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    args = TrainingArguments(output_dir=str(root / "trainer"), num_train_epochs=2, per_device_train_batch_size=4,
                             learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                             save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[WarmupCheckpointCallback(root / "warmup")])
    trainer.train()
    write_jsonl(root / "pool.jsonl", examples)
    write_jsonl(root / "val.jsonl", pairs(4))
    return {"root": root, "trainer": trainer, "model": model,
            "checkpoints": [root / "warmup" / "checkpoint-1", root / "warmup" / "checkpoint-2"]}


def test_warmup_callback_saves_moments_by_name_and_mean_lr(warmup):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, trainer = warmup["model"], warmup["trainer"]
    first, last = warmup["checkpoints"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    moments = load_moments(last)
    assert sorted(moments) == sorted(names) and len(names) == 16
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    for name, param in model.named_parameters():
        if param.requires_grad:
            state = optimizer.state[param]
            assert torch.equal(moments[name][0], state["exp_avg"]) and torch.equal(moments[name][1], state["exp_avg_sq"])
    assert not torch.equal(load_moments(first)[names[1]][0], moments[names[1]][0])

    # linear decay from 1e-3 over 4 steps: lrs 1e-3, 7.5e-4 | 5e-4, 2.5e-4
    assert load_epoch_info(first)["mean_lr"] == pytest.approx(8.75e-4)
    assert load_epoch_info(last)["mean_lr"] == pytest.approx(3.75e-4)
    assert load_epoch_info(last)["betas"] == [0.9, 0.999] and load_epoch_info(last)["n_steps"] == 2
    assert checkpoint_weights([first, last]) == pytest.approx([0.7, 0.3])

    # the adapter reloads to the trained weights, under the same names the moments are keyed by
    base = AutoModelForCausalLM.from_pretrained(warmup["root"] / "base")
    loaded = PeftModel.from_pretrained(base, last, is_trainable=True)
    trained = dict(model.named_parameters())
    reloaded = {n: p for n, p in loaded.named_parameters() if p.requires_grad}
    assert sorted(reloaded) == sorted(names)
    assert all(torch.equal(reloaded[n], trained[n]) for n in names)


def run_selection(warmup, tmp: Path, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """grad_features (2 shards + gather, and validation pairs) per checkpoint → influence → rose ranking."""
    grad_features, influence = script("grad_features"), script("influence")
    root = warmup["root"]
    common = ["--base-model", str(root / "base"), "--dim", "64", "--seed", str(seed), "--max-tokens", "192",
              "--max-length", "64", "--device", "cpu"]
    train, val = [], []
    for c, checkpoint in enumerate(warmup["checkpoints"]):
        shards = []
        for s in range(2):
            shards.append(tmp / f"train-c{c}-s{s}.pt")
            grad_features.main(["compute", "--checkpoint", str(checkpoint), "--data", str(root / "pool.jsonl"),
                                "--kind", "train", "--shard", str(s), "--shards", "2", "--out", str(shards[-1]), *common])
        train.append(tmp / f"train-c{c}.pt")
        grad_features.main(["gather", "--inputs", *map(str, shards), "--out", str(train[-1])])
        val.append(tmp / f"val-c{c}.pt")
        grad_features.main(["compute", "--checkpoint", str(checkpoint), "--data", str(root / "val.jsonl"),
                            "--kind", "dpo", "--shots", "1", "--out", str(val[-1]), *common])
    influence.main(["--train", *map(str, train), "--val", *map(str, val),
                    "--checkpoints", *map(str, warmup["checkpoints"]), "--out", str(tmp / "influence.parquet")])
    table = pd.read_parquet(tmp / "influence.parquet")
    ids = [e["id"] for e in pool(8)]
    return table, build_selector("rose").rank(ids, {"influence_rose": table})


def test_scripts_end_to_end_same_seed_same_selection(warmup, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    table, ranked = run_selection(warmup, tmp_path / "a", seed=0)
    assert table["id"].tolist() == [f"ex{k}" for k in range(8)]  # pool order after gathering shards
    assert list(table.columns) == ["id", "influence", "influence_t0", "influence_t1"]  # 1 shot per subtask
    assert table["influence"].between(-1, 1).all() and table["influence"].std() > 0
    again, ranked_again = run_selection(warmup, tmp_path / "b", seed=0)
    assert ranked_again == ranked
    pd.testing.assert_frame_equal(again, table)
    other, _ = run_selection(warmup, tmp_path / "c", seed=1)
    assert not (other["influence"] == table["influence"]).all()


# ----------------------------------------------------------------------------- implicit-reward win rate


def test_implicit_reward_win_rate_against_naive_count():
    from peft import LoraConfig, get_peft_model

    reference, tokenizer = build_random_model(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    policy = get_peft_model(copy.deepcopy(reference), LoraConfig(**LORA))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    policy.eval(), reference.eval()
    test_pairs = pairs(12)

    def logp(model, messages):
        enc = encode_example(tokenizer, messages, 256)
        return sequence_logps(model(input_ids=torch.tensor([enc["input_ids"]])).logits,
                              torch.tensor([enc["labels"]]))[0].item()

    wins = 0
    with torch.no_grad():
        for pair in test_pairs:
            chosen, rejected = pair_messages(pair)
            r_w = logp(policy, chosen) - logp(reference, chosen)
            r_l = logp(policy, rejected) - logp(reference, rejected)
            wins += 0.1 * r_w > 0.1 * r_l
    result = implicit_reward_win_rate(policy, reference, tokenizer, test_pairs, beta=0.1, batch_size=5)
    assert 0 < wins < 12
    assert result["value"] == pytest.approx(wins / 12) and result["n"] == 12 and result["skipped"] == 0
    assert result["ci_low"] <= result["value"] <= result["ci_high"]
    assert result == implicit_reward_win_rate(policy, reference, tokenizer, test_pairs, beta=0.1, batch_size=5)

    same = implicit_reward_win_rate(reference, reference, tokenizer, test_pairs)
    assert same["value"] == 0 and same["ties"] == 12
