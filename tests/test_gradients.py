"""Per-example gradient features (LESS/ROSE): hooked per-example gradients, Adam preconditioning, projections,
token-budget batches, shards and the checks on feature files."""

import math

import pytest
import torch

from sftlab.models.random_init import build_random_model
from sftlab.objectives.base import sequence_logps
from sftlab.objectives.ntp import ntp_loss
from sftlab.selection.gradients import (
    adam_precondition,
    batch_inputs,
    dpo_loss,
    encode_rows,
    gather_features,
    gradient_features,
    load_features,
    lora_parameters,
    module_moments,
    per_example_gradients,
    reference_logps,
    save_features,
    shard_slice,
    take_shots,
    token_batches,
)
from sftlab.selection.projection import build_projection, fmix32, hashed_rows, stream_key
from sftlab.selection.warmup import load_moments

WORDS = "the of and to in is that for it as with was on be by this are answer question".split()


def conversation(k: int, n_prompt: int, n_answer: int) -> list[dict]:
    pick = lambda n, off: " ".join(WORDS[(k * 7 + off + j) % len(WORDS)] for j in range(n))  # noqa: E731
    return [{"role": "user", "content": pick(n_prompt, 0)}, {"role": "assistant", "content": pick(n_answer, 3)}]


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, get_peft_model

    model, tokenizer = build_random_model(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    # B starts at zero, which would make every gradient w.r.t. A vanish: give the adapter a trained-looking state
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.eval()
    return model, tokenizer


def sft_rows(n: int) -> list[dict]:
    return [{"id": f"ex{k}", "messages": conversation(k, 2 + k % 4, 1 + (k * 5) % 6), "source": f"s{k % 2}"}
            for k in range(n)]


def pair_rows(n: int) -> list[dict]:
    return [{"id": f"p{k}", "prompt": conversation(k, 2 + k % 3, 1)[:1], "chosen": conversation(k + 1, 1, 2 + k % 3)[1]["content"],
             "rejected": conversation(k + 2, 1, 1 + k % 4)[1]["content"], "subtask": f"t{k % 2}"} for k in range(n)]


def loop_gradients(model, loss_of_item, items) -> torch.Tensor:
    """The LESS way: one unpadded forward/backward per item."""
    rows = []
    for item in items:
        model.zero_grad()
        loss_of_item(item).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for _, p in model.named_parameters() if p.requires_grad]))
    model.zero_grad()
    return torch.stack(rows)


def single_logps(model, seq) -> torch.Tensor:
    ids = torch.tensor([seq["input_ids"]])
    return sequence_logps(model(input_ids=ids).logits, torch.tensor([seq["labels"]]))[0][0]


def vmap_gradients(model, params, inputs, kind, beta=0.1):
    """Second implementation for the cross-check: torch.func.vmap over grad of one item's loss (eager attention)."""
    from torch.func import functional_call, grad, vmap

    def loss(p, item):
        logits = functional_call(model, p, args=(), strict=False,
                                 kwargs={"input_ids": item["input_ids"], "attention_mask": item["attention_mask"]}).logits
        logps, n = sequence_logps(logits, item["labels"])
        if kind == "dpo":
            return dpo_loss(logps[0], logps[1], item["ref_logps"][0], item["ref_logps"][1], beta)
        return -logps[0] / n[0]

    detached = {name: p.detach() for name, p in params.items()}
    base = model.get_base_model()
    base.set_attn_implementation("eager")  # SDPA has no vmap rule
    try:
        grads = vmap(grad(loss), in_dims=(None, 0))(detached, inputs)
    finally:
        base.set_attn_implementation("sdpa")
    return torch.cat([grads[name].flatten(1) for name in params], dim=1)


def ntp_item_loss(model):
    def loss(item):
        seq = item["sequences"][0]
        return ntp_loss(model(input_ids=torch.tensor([seq["input_ids"]])).logits, torch.tensor([seq["labels"]]))

    return loss


def test_hooked_ntp_gradients_equal_loop_of_backward_passes_with_padding(lora_model):
    model, tokenizer = lora_model
    assert model.get_base_model().config._attn_implementation == "sdpa"  # the model's own attention, not eager
    items, skipped = encode_rows(tokenizer, sft_rows(5), "ntp", max_length=64)
    lengths = [len(i["sequences"][0]["input_ids"]) for i in items]
    assert not skipped and len(set(lengths)) > 1  # padding inside the batch is exercised
    params = lora_parameters(model)
    inputs = batch_inputs(items, tokenizer.pad_token_id, torch.device("cpu"))
    hooked = per_example_gradients(model, params, inputs, "ntp")
    looped = loop_gradients(model, ntp_item_loss(model), items)
    assert hooked.shape == looped.shape == (5, sum(p.numel() for p in params.values()))
    assert looped.abs().max() > 1e-3 and (looped[0] - looped[1]).abs().max() > 1e-3
    torch.testing.assert_close(hooked, looped, rtol=1e-5, atol=1e-6)  # float32 round-off
    torch.testing.assert_close(vmap_gradients(model, params, inputs, "ntp"), looped, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in params.values())  # the summed weight gradients are not left behind


def test_hooked_dpo_gradients_equal_loop_with_adapter_disabled_reference(lora_model):
    model, tokenizer = lora_model
    items, _ = encode_rows(tokenizer, pair_rows(4), "dpo", max_length=64)
    assert len({len(s["input_ids"]) for i in items for s in i["sequences"]}) > 1
    params = lora_parameters(model)
    inputs = batch_inputs(items, tokenizer.pad_token_id, torch.device("cpu"))
    inputs["ref_logps"] = reference_logps(model, inputs)
    hooked = per_example_gradients(model, params, inputs, "dpo", beta=0.1)

    def item_loss(item):
        chosen, rejected = item["sequences"]
        with torch.no_grad(), model.disable_adapter():
            ref_w, ref_l = single_logps(model, chosen), single_logps(model, rejected)
        return dpo_loss(single_logps(model, chosen), single_logps(model, rejected), ref_w, ref_l, 0.1)

    looped = loop_gradients(model, item_loss, items)
    assert looped.abs().max() > 1e-5
    torch.testing.assert_close(hooked, looped, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(vmap_gradients(model, params, inputs, "dpo"), looped, rtol=1e-4, atol=1e-7)


def test_hooks_refuse_train_mode_and_non_linear_parameters(lora_model):
    model, tokenizer = lora_model
    items, _ = encode_rows(tokenizer, sft_rows(2), "ntp", max_length=64)
    inputs = batch_inputs(items, tokenizer.pad_token_id, torch.device("cpu"))
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            per_example_gradients(model, lora_parameters(model), inputs)
    finally:
        model.eval()
    params = dict(lora_parameters(model))
    params["extra.lora_scale"] = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="not: \\['extra.lora_scale'\\]"):
        per_example_gradients(model, params, inputs)

def test_dpo_loss_hand_numbers():
    # margin = (−10 − (−12)) − (−11 − (−11)) = 2; β·margin = 0.2; −log σ(0.2) = log(1 + e^−0.2) = 0.598138869...
    loss = dpo_loss(torch.tensor(-10.0), torch.tensor(-12.0), torch.tensor(-11.0), torch.tensor(-11.0), beta=0.1)
    assert loss.item() == pytest.approx(0.5981388693, abs=1e-7)
    # the reference favours the chosen answer more than the policy does: β·margin = 0.5·(1 − 3) = −1 → log(1 + e) = 1.3132617
    loss = dpo_loss(torch.tensor(-5.0), torch.tensor(-6.0), torch.tensor(-4.0), torch.tensor(-7.0), beta=0.5)
    assert loss.item() == pytest.approx(1.3132616875, abs=1e-7)


def test_adam_preconditioning_hand_formula():
    g = torch.tensor([[2.0, -1.0, 0.0]])
    m = torch.tensor([0.1, 0.0, -0.5])
    v = torch.tensor([0.01, 0.0, 0.25])
    out = adam_precondition(g, m, v, betas=(0.9, 0.999))
    # coordinate 0: m' = 0.09 + 0.2 = 0.29, v' = 0.00999 + 0.004 = 0.01399 → 0.29 / sqrt(0.01399 + 1e-8)
    # coordinate 1: m' = −0.1, v' = 0.001 → −0.1 / sqrt(0.001 + 1e-8)
    # coordinate 2: m' = −0.45, v' = 0.24975 → −0.45 / sqrt(0.24975 + 1e-8)
    expected = [0.29 / math.sqrt(0.01399001), -0.1 / math.sqrt(0.00100001), -0.45 / math.sqrt(0.24975001)]
    assert out[0].tolist() == pytest.approx(expected, rel=1e-6)


def py_fmix32(x: int) -> int:
    """MurmurHash3 fmix32 in plain Python integers: the naive second implementation of the generator."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def py_stream_key(seed: int, key: int) -> int:
    mixed = py_fmix32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    return py_fmix32(((mixed + key * 0x632BE5AB) & 0xFFFFFFFF) ^ 0x5BD1E995)


def naive_matrix(name: str, seed: int, key: int, n: int, dim: int) -> torch.Tensor:
    """R_k materialised entry by entry from the definitions in sftlab.selection.projection's docstrings."""
    r = torch.zeros(n, dim, dtype=torch.float64)
    k = py_stream_key(seed, key)
    for i in range(n):
        h = py_fmix32((i + k) & 0xFFFFFFFF)
        if name == "sjlt":
            r[i, h % dim] = -1.0 if h >> 31 else 1.0
        else:
            for j in range(dim):
                bit = py_fmix32((h + j * 0x9E3779B1) & 0xFFFFFFFF) >> 31
                r[i, j] = (1.0 if bit else -1.0) / math.sqrt(dim)
    return r


def test_counter_based_hash_matches_plain_integer_arithmetic():
    x = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789, 0xDEADBEEF], dtype=torch.int64)
    assert fmix32(x).tolist() == [py_fmix32(v) for v in x.tolist()]
    # the 16-bit split multiply never overflows int64: the same bits as Python's unbounded integers
    assert hashed_rows(3, 5, 0, 4, torch.device("cpu")).tolist() == [py_fmix32((i + py_stream_key(3, 5)) & 0xFFFFFFFF)
                                                                     for i in range(4)]
    assert stream_key(0, 1) != stream_key(0, 2) != stream_key(1, 1)


@pytest.mark.parametrize("name", ["sjlt", "dense"])
def test_projection_equals_naive_matrix_and_is_deterministic(name):
    n, dim = 300, 16
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(0))
    projection = build_projection(name, dim, seed=7)
    projection.block_rows = 128  # several generated blocks, the last one partial
    y = projection.project(2, x)
    torch.testing.assert_close(y.double(), x.double() @ naive_matrix(name, 7, 2, n, dim), rtol=1e-5, atol=1e-5)
    # another instance (another process, a shard, the validation job), without a cache: the same numbers
    again = build_projection(name, dim, seed=7, cache_bytes=0)
    again.block_rows = 128
    assert torch.equal(again.project(2, x), y)
    assert not torch.allclose(build_projection(name, dim, seed=8).project(2, x), y)
    assert not torch.allclose(projection.project(3, x), y)  # each parameter matrix has its own rows


@pytest.mark.parametrize("name", ["sjlt", "dense"])
def test_projection_keeps_inner_products_within_jl_tolerance(name):
    n, dim = 3000, 2048
    x = torch.nn.functional.normalize(torch.randn(20, n, generator=torch.Generator().manual_seed(0)), dim=1)
    y = build_projection(name, dim, seed=0).project(0, x)
    # unit vectors: the error of a projected inner product has std about sqrt((1 + ρ²)/d) ≤ 0.031 here; allow ~5σ
    assert (y @ y.T - x @ x.T).abs().max().item() < 0.15
    with pytest.raises(ValueError, match="unknown gradient projection 'trak'"):
        build_projection("trak", dim, 0)


def test_token_batches_fill_the_budget_longest_first_and_refuse_what_cannot_fit():
    def item(name, *lengths):
        return {"id": name, "sequences": [{"input_ids": [0] * n} for n in lengths]}

    items = [item("a", 3), item("b", 10), item("c", 4), item("d", 5, 2), item("e", 1)]
    # tokens: a 3, b 10, c 4, d 2·5 = 10, e 1; longest first: b, d, c, a, e
    # budget 20: [b, d] costs 2·10; [c, a, e] costs 3·4 = 12 (a fourth of width 4 would be 16 ≤ 20, none left)
    assert token_batches(items, 20) == [[1, 3], [2, 0, 4]]
    assert token_batches(items, 10) == [[1], [3], [2, 0], [4]]
    with pytest.raises(ValueError, match="item 'b' needs 10 tokens, over the token budget gradients.max_tokens = 9"):
        token_batches(items, 9)

def test_take_shots_and_shard_slices():
    rows = [{"id": str(k), "subtask": "ab"[k % 2]} for k in range(7)]
    assert [r["id"] for r in take_shots(rows, 2)] == ["0", "1", "2", "3"]
    assert take_shots(rows, None) == rows
    slices = [shard_slice(10, s, 3) for s in range(3)]
    assert [list(range(10))[s] for s in slices] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="shard"):
        shard_slice(10, 3, 3)


def test_training_features_match_naive_pipeline_and_shards_gather_in_pool_order(lora_model, tmp_path):
    model, tokenizer = lora_model
    rows = sft_rows(7) + [{"id": "long-prompt", "messages": conversation(0, 200, 3), "source": "s0"}]
    params = lora_parameters(model)
    n_params = sum(p.numel() for p in params.values())
    gen = torch.Generator().manual_seed(5)
    flat = (torch.randn(n_params, generator=gen) * 1e-3, torch.rand(n_params, generator=gen) * 1e-5)
    by_name, start = {}, 0
    for name, p in params.items():
        by_name[name] = (flat[0][start:start + p.numel()].view_as(p), flat[1][start:start + p.numel()].view_as(p))
        start += p.numel()
    moments = module_moments(params, by_name, "ckpt")

    def features_of(shard_rows, name="sjlt", max_tokens=100):
        items, skipped = encode_rows(tokenizer, shard_rows, "train", max_length=48)
        feats = gradient_features(model, items, "train", tokenizer.pad_token_id, build_projection(name, 128, 0),
                                  max_tokens=max_tokens, moments=moments, betas=(0.9, 0.999))
        return items, skipped, feats

    items, skipped, feats = features_of(rows)
    assert skipped == ["long-prompt"] and [i["id"] for i in items] == [f"ex{k}" for k in range(7)]
    assert feats.dtype == torch.float16 and feats.shape == (7, 128)
    assert len(token_batches(items, 100)) > 1  # several batches, each with padding

    # naive: loop of backward passes, hand preconditioning of the whole gradient, the materialised matrix
    g = loop_gradients(model, ntp_item_loss(model), items)
    gamma = (0.9 * flat[0] + 0.1 * g) / torch.sqrt(0.999 * flat[1] + 0.001 * g**2 + 1e-8)
    for name in ("sjlt", "dense"):
        matrix = torch.cat([naive_matrix(name, 0, k, p.numel(), 128) for k, p in enumerate(params.values())])
        naive = torch.nn.functional.normalize(gamma.double() @ matrix, dim=1).float()
        torch.testing.assert_close(features_of(rows, name)[2].float(), naive, atol=2e-3, rtol=0)  # fp16 output

    paths = []
    for s in range(3):
        shard_items, shard_skipped, shard_feats = features_of(rows[shard_slice(len(rows), s, 3)], max_tokens=48)
        paths.append(tmp_path / f"shard{s}.pt")
        save_features(paths[-1], [i["id"] for i in shard_items], shard_feats, [i["subtask"] for i in shard_items],
                      shard_skipped, "train", projection="sjlt", dim=128, seed=0, n_params=n_params)
    gather_features(paths, tmp_path / "all.pt")
    gathered = load_features(tmp_path / "all.pt")
    assert gathered["ids"] == [i["id"] for i in items] and gathered["skipped"] == ["long-prompt"]
    assert gathered["subtasks"] == [f"s{k % 2}" for k in range(7)]
    assert (gathered["projection"], gathered["dim"], gathered["seed"]) == ("sjlt", 128, 0)
    # batch composition changes float rounding only
    torch.testing.assert_close(gathered["features"].float(), feats.float(), atol=2e-3, rtol=0)


def test_feature_settings_are_checked(lora_model, tmp_path):
    model, tokenizer = lora_model
    items, _ = encode_rows(tokenizer, sft_rows(2), "ntp", max_length=64)
    projection = build_projection("sjlt", 8, 0)
    with pytest.raises(ValueError, match="training features need"):
        gradient_features(model, items, "train", tokenizer.pad_token_id, projection)
    with pytest.raises(ValueError, match="over the token budget"):
        gradient_features(model, items, "ntp", tokenizer.pad_token_id, projection, max_tokens=4)
    with pytest.raises(KeyError, match="lacks 'messages'"):
        encode_rows(tokenizer, [{"id": "x"}], "ntp", 64)
    params = lora_parameters(model)
    with pytest.raises(KeyError, match="ckpt: no Adam moments for parameters"):
        module_moments(params, {}, "ckpt")
    with pytest.raises(FileNotFoundError, match="no Adam moments in warmup checkpoint"):
        load_moments(tmp_path)
    settings = {"projection": "sjlt", "dim": 8, "seed": 0, "n_params": 10}
    save_features(tmp_path / "a.pt", ["a"], torch.zeros(1, 8), ["t"], [], "train", **settings)
    for i, (key, value) in enumerate({"seed": 1, "projection": "dense", "dim": 16, "n_params": 11}.items()):
        save_features(tmp_path / f"b{i}.pt", ["b"], torch.zeros(1, 8), ["t"], [], "train", **{**settings, key: value})
        with pytest.raises(ValueError, match=f"{key} {value}.*cannot be compared"):
            gather_features([tmp_path / "a.pt", tmp_path / f"b{i}.pt"], tmp_path / "c.pt")
    record = torch.load(tmp_path / "a.pt", weights_only=True)
    del record["projection"]
    torch.save(record, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="lacks \\['projection'\\]"):
        load_features(tmp_path / "old.pt")

def test_less_features_of_a_pair_are_those_of_its_chosen_conversation(lora_model):
    """LESS on a preference validation set: the NTP gradient of prompt + chosen answer, nothing of the rejected."""
    model, tokenizer = lora_model
    pairs = pair_rows(3)
    as_examples = [{"id": p["id"], "subtask": p["subtask"],
                    "messages": p["prompt"] + [{"role": "assistant", "content": p["chosen"]}]} for p in pairs]
    pair_items, _ = encode_rows(tokenizer, pairs, "ntp", max_length=64)
    example_items, _ = encode_rows(tokenizer, as_examples, "ntp", max_length=64)
    assert [len(i["sequences"]) for i in pair_items] == [1, 1, 1]
    assert pair_items == example_items
    with pytest.raises(KeyError, match="preference pair 'x' lacks 'prompt'"):
        encode_rows(tokenizer, [{"id": "x", "chosen": "a"}], "ntp", 64)
