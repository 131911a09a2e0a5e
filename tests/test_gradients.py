"""Per-example gradient features (LESS/ROSE): batched gradients, Adam preconditioning, projection, shards."""

import math

import pytest
import torch

from sftlab.models.random_init import build_random_model
from sftlab.objectives.base import sequence_logps
from sftlab.objectives.ntp import ntp_loss
from sftlab.selection.gradients import (
    PROJECTION_BLOCK_ROWS,
    RademacherProjector,
    adam_precondition,
    batch_inputs,
    dpo_example_loss,
    dpo_loss,
    encode_rows,
    gather_features,
    gradient_features,
    load_features,
    lora_parameters,
    ntp_example_loss,
    per_example_gradients,
    rademacher_block,
    save_features,
    shard_slice,
    take_shots,
    use_eager_attention,
)

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
    use_eager_attention(model)
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


def test_batched_ntp_gradients_equal_loop_of_backward_passes(lora_model):
    model, tokenizer = lora_model
    items, skipped = encode_rows(tokenizer, sft_rows(5), "ntp", max_length=64)
    assert not skipped and len({len(i["sequences"][0]["input_ids"]) for i in items}) > 1  # padding is exercised
    batched = per_example_gradients(model, lora_parameters(model), ntp_example_loss,
                                    batch_inputs(items, tokenizer.pad_token_id, torch.device("cpu")))

    def item_loss(item):
        seq = item["sequences"][0]
        return ntp_loss(model(input_ids=torch.tensor([seq["input_ids"]])).logits, torch.tensor([seq["labels"]]))

    looped = loop_gradients(model, item_loss, items)
    assert batched.shape == looped.shape and looped.abs().max() > 1e-3
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-6)


def test_batched_dpo_gradients_equal_loop_with_adapter_disabled_reference(lora_model):
    model, tokenizer = lora_model
    items, _ = encode_rows(tokenizer, pair_rows(4), "dpo", max_length=64)
    inputs = batch_inputs(items, tokenizer.pad_token_id, torch.device("cpu"))
    from sftlab.selection.gradients import reference_logps

    inputs["ref_logps"] = reference_logps(model, inputs)
    batched = per_example_gradients(model, lora_parameters(model), dpo_example_loss(0.1), inputs)

    def item_loss(item):
        chosen, rejected = item["sequences"]
        with torch.no_grad(), model.disable_adapter():
            ref_w, ref_l = single_logps(model, chosen), single_logps(model, rejected)
        return dpo_loss(single_logps(model, chosen), single_logps(model, rejected), ref_w, ref_l, 0.1)

    looped = loop_gradients(model, item_loss, items)
    assert looped.abs().max() > 1e-5
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-7)


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


def test_projection_deterministic_blockwise_and_shard_invariant():
    n_params, dim = 2 * PROJECTION_BLOCK_ROWS + 100, 64
    x = torch.randn(6, n_params, generator=torch.Generator().manual_seed(3))
    cached = RademacherProjector(n_params, dim, seed=7)
    uncached = RademacherProjector(n_params, dim, seed=7, cache_bytes=0)
    whole = cached.project(x)
    # a fresh instance (another process) and an uncached one regenerate exactly the same matrix
    fresh = RademacherProjector(n_params, dim, seed=7)
    assert all(torch.equal(cached.block(b), fresh.block(b)) and torch.equal(cached.block(b), uncached.block(b))
               for b in range(3))
    assert torch.equal(whole, uncached.project(x))
    # rows projected in separate calls (shards) agree up to the BLAS rounding of a different row count
    torch.testing.assert_close(torch.cat([fresh.project(x[:2]), uncached.project(x[2:])]), whole, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(whole, RademacherProjector(n_params, dim, seed=8).project(x))
    # naive second implementation: materialise the matrix from its blocks and multiply
    full = torch.cat([rademacher_block(7, b, min(PROJECTION_BLOCK_ROWS, n_params - b * PROJECTION_BLOCK_ROWS), dim)
                      for b in range(3)])
    assert full.shape == (n_params, dim)
    assert set((full * math.sqrt(dim)).unique().tolist()) == {-1.0, 1.0}
    assert abs(full.sign().mean().item()) < 0.01
    torch.testing.assert_close(whole, x @ full, rtol=1e-5, atol=1e-4)


def test_projection_keeps_inner_products_within_jl_tolerance():
    n_params, dim = 3000, 2048
    x = torch.nn.functional.normalize(torch.randn(20, n_params, generator=torch.Generator().manual_seed(0)), dim=1)
    y = RademacherProjector(n_params, dim, seed=0).project(x)
    # unit vectors: the error of a projected inner product has std sqrt((1 + ρ²)/d) ≤ 0.031 here; allow ~5σ
    assert (y @ y.T - x @ x.T).abs().max().item() < 0.15


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
    moments = (torch.randn(n_params, generator=gen) * 1e-3, torch.rand(n_params, generator=gen) * 1e-5)

    def features_of(shard_rows):
        items, skipped = encode_rows(tokenizer, shard_rows, "train", max_length=48)
        feats = gradient_features(model, items, "train", tokenizer.pad_token_id, RademacherProjector(n_params, 128, 0),
                                  batch_size=3, moments=moments, betas=(0.9, 0.999), project_batch=4)
        return items, skipped, feats

    items, skipped, feats = features_of(rows)
    assert skipped == ["long-prompt"] and [i["id"] for i in items] == [f"ex{k}" for k in range(7)]
    assert feats.dtype == torch.float16 and feats.shape == (7, 128)

    # naive: loop of backward passes, hand preconditioning, the materialised matrix, normalise
    def item_loss(item):
        seq = item["sequences"][0]
        return ntp_loss(model(input_ids=torch.tensor([seq["input_ids"]])).logits, torch.tensor([seq["labels"]]))

    g = loop_gradients(model, item_loss, items)
    gamma = (0.9 * moments[0] + 0.1 * g) / torch.sqrt(0.999 * moments[1] + 0.001 * g**2 + 1e-8)
    matrix = torch.cat([rademacher_block(0, b, min(PROJECTION_BLOCK_ROWS, n_params - b * PROJECTION_BLOCK_ROWS), 128)
                        for b in range(math.ceil(n_params / PROJECTION_BLOCK_ROWS))])
    naive = torch.nn.functional.normalize(gamma @ matrix, dim=1)
    cosine = torch.nn.functional.cosine_similarity(feats.float(), naive, dim=1)
    assert cosine.min().item() > 0.999

    paths = []
    for s in range(3):
        shard_items, shard_skipped, shard_feats = features_of(rows[shard_slice(len(rows), s, 3)])
        paths.append(tmp_path / f"shard{s}.pt")
        save_features(paths[-1], [i["id"] for i in shard_items], shard_feats, [i["subtask"] for i in shard_items],
                      shard_skipped, "train", 128, 0, n_params)
    gather_features(paths, tmp_path / "all.pt")
    gathered = load_features(tmp_path / "all.pt")
    assert gathered["ids"] == [i["id"] for i in items] and gathered["skipped"] == ["long-prompt"]
    assert gathered["subtasks"] == [f"s{k % 2}" for k in range(7)]
    # batch composition changes float rounding only
    torch.testing.assert_close(gathered["features"].float(), feats.float(), atol=2e-3, rtol=0)


def test_feature_settings_are_checked(lora_model, tmp_path):
    model, tokenizer = lora_model
    items, _ = encode_rows(tokenizer, sft_rows(2), "ntp", max_length=64)
    projector = RademacherProjector(10, 8, 0)
    with pytest.raises(ValueError, match="training features need"):
        gradient_features(model, items, "train", tokenizer.pad_token_id, projector)
    with pytest.raises(KeyError, match="lacks 'messages'"):
        encode_rows(tokenizer, [{"id": "x"}], "ntp", 64)
    save_features(tmp_path / "a.pt", ["a"], torch.zeros(1, 8), ["t"], [], "train", 8, 0, 10)
    save_features(tmp_path / "b.pt", ["b"], torch.zeros(1, 8), ["t"], [], "train", 8, 1, 10)
    with pytest.raises(ValueError, match="seed"):
        gather_features([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "c.pt")


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
