"""Merging sub-models: mergekit's results checked against hand-worked numbers and naive reimplementations."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sftlab.compose.merge import merge, merge_grouped, merge_models, mergekit_config
from sftlab.models.random_init import save_random_model

TINY = dict(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
NORM = "model.norm.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "model"
    save_random_model(path, **TINY)
    return path


def weights_of(model_dir):
    tensors = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def variant(base, out, deltas):
    """A copy of ``base`` whose weights are the base's plus ``deltas`` (name → tensor)."""
    shutil.copytree(base, out)
    weights = weights_of(base)
    shifted = {k: v + deltas.get(k, 0) for k, v in weights.items()}
    save_file(shifted, out / "model.safetensors", metadata={"format": "pt"})
    return out


def random_deltas(base, seed, scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * scale for k, v in weights_of(base).items()}


def test_average_of_identical_models_is_that_model(base, tmp_path):
    sub = variant(base, tmp_path / "sub", random_deltas(base, 1))
    copies = [shutil.copytree(sub, tmp_path / f"copy{i}") for i in range(3)]
    merge_models(copies, tmp_path / "out", "average")
    got, want = weights_of(tmp_path / "out"), weights_of(sub)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-7)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template
    assert (tmp_path / "out" / "generation_config.json").is_file()


def test_average_is_the_weighted_mean_of_the_weights(base, tmp_path):
    subs = [variant(base, tmp_path / f"sub{i}", random_deltas(base, i)) for i in range(3)]
    loaded = [weights_of(s) for s in subs]
    merge_models(subs, tmp_path / "mean", "average")
    merge_models(subs, tmp_path / "weighted", "average", params={"weights": [1, 2, 1]})
    mean, weighted = weights_of(tmp_path / "mean"), weights_of(tmp_path / "weighted")
    for name in loaded[0]:
        a, b, c = (w[name].double() for w in loaded)
        torch.testing.assert_close(mean[name].double(), (a + b + c) / 3, rtol=0, atol=1e-6)
        torch.testing.assert_close(weighted[name].double(), (a + 2 * b + c) / 4, rtol=0, atol=1e-6)


def test_grouped_merge_averages_each_group_then_merges_the_averages(base, tmp_path):
    """Groups [1, 2] of (a, b, c) averaged: (a + (b + c) / 2) / 2, not the flat mean (a + b + c) / 3."""
    subs = [variant(base, tmp_path / f"sub{i}", random_deltas(base, 10 + i)) for i in range(3)]
    loaded = [weights_of(s) for s in subs]
    merge_grouped(subs, [1, 2], tmp_path / "out", "average")
    got = weights_of(tmp_path / "out")
    for name in loaded[0]:
        a, b, c = (w[name].double() for w in loaded)
        torch.testing.assert_close(got[name].double(), (a + (b + c) / 2) / 2, rtol=0, atol=1e-6)
    assert not list(tmp_path.glob(".groups-*"))
    with pytest.raises(ValueError, match="do not split"):
        merge_grouped(subs, [1, 1], tmp_path / "bad", "average")
    with pytest.raises(ValueError, match="full models"):
        merge_grouped(subs, [1, 2], tmp_path / "bad", "average", merge_space="adapter")


def naive_ties(deltas, density):
    """TIES on flat lists, written out: trim each task vector to its top-``density`` magnitudes, elect each
    coordinate's sign by the summed trimmed mass (0 counts as +), average the surviving values of that sign."""
    n = len(deltas[0])
    keep = max(1, int(density * n))
    trimmed = []
    for delta in deltas:
        top = set(sorted(range(n), key=lambda i: -abs(delta[i]))[:keep])
        trimmed.append([delta[i] if i in top else 0.0 for i in range(n)])
    merged = []
    for i in range(n):
        sign = 1.0 if sum(t[i] for t in trimmed) >= 0 else -1.0
        agree = [t[i] for t in trimmed if t[i] != 0 and (t[i] > 0) == (sign > 0)]
        merged.append(sum(agree) / len(agree) if agree else 0.0)
    return merged


def test_naive_ties_on_a_hand_worked_example():
    deltas = [
        [3.0, -1.0, 0.2, -4.0, 0.5, 2.0, -0.1, 1.5],
        [-2.0, 0.3, 1.0, 3.0, -0.4, -2.5, 0.6, 0.1],
        [1.0, -2.0, 0.3, -1.2, 0.2, 0.4, -3.0, 0.05],
    ]
    # trimmed to 4 of 8: [3,0,0,-4,0,2,0,1.5], [-2,0,1,3,0,-2.5,0,0], [1,-2,0,-1.2,0,0,-3,0];
    # sums 2,-2,1,-2.2,0,-0.5,-3,1.5 elect signs + - + - + - - +; means of the agreeing values:
    assert naive_ties(deltas, 0.5) == pytest.approx([2.0, -2.0, 1.0, -2.6, 0.0, -2.5, -3.0, 1.5])


def test_ties_matches_the_naive_reference(base, tmp_path):
    hand = [
        [3.0, -1.0, 0.2, -4.0, 0.5, 2.0, -0.1, 1.5],
        [-2.0, 0.3, 1.0, 3.0, -0.4, -2.5, 0.6, 0.1],
        [1.0, -2.0, 0.3, -1.2, 0.2, 0.4, -3.0, 0.05],
    ]
    deltas = []
    for i in range(3):
        d = random_deltas(base, 10 + i)
        d[NORM] = torch.tensor(hand[i])
        deltas.append(d)
    subs = [variant(base, tmp_path / f"sub{i}", d) for i, d in enumerate(deltas)]
    merge_models(subs, tmp_path / "out", "ties", base_model=base, params={"density": 0.5})
    got, base_weights = weights_of(tmp_path / "out"), weights_of(base)
    hand_worked = torch.tensor([2.0, -2.0, 1.0, -2.6, 0.0, -2.5, -3.0, 1.5])  # see the test above
    torch.testing.assert_close(got[NORM] - base_weights[NORM], hand_worked)
    for name, w0 in base_weights.items():
        # the deltas as stored (base + delta, rounded to float32, minus base), as mergekit sees them
        flat = [(weights_of(s)[name].double() - w0.double()).flatten().tolist() for s in subs]
        want = w0.double() + torch.tensor(naive_ties(flat, 0.5), dtype=torch.float64).reshape(w0.shape)
        torch.testing.assert_close(got[name].double(), want, rtol=0, atol=1e-6)


def test_task_arithmetic_adds_weighted_deltas_scaled_by_lambda(base, tmp_path):
    subs = [variant(base, tmp_path / f"sub{i}", random_deltas(base, 20 + i)) for i in range(2)]
    merge_models(subs, tmp_path / "out", "task_arithmetic", base_model=base,
                 params={"weights": [0.5, 0.25], "lambda": 2.0})
    got, w0 = weights_of(tmp_path / "out"), weights_of(base)
    t1, t2 = (weights_of(s) for s in subs)
    for name in w0:
        b = w0[name].double()
        want = b + 2.0 * (0.5 * (t1[name].double() - b) + 0.25 * (t2[name].double() - b))
        torch.testing.assert_close(got[name].double(), want, rtol=0, atol=1e-6)


def test_dare_is_reproducible_for_a_seed(base, tmp_path):
    subs = [variant(base, tmp_path / f"sub{i}", random_deltas(base, 30 + i)) for i in range(2)]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        merge_models(subs, tmp_path / name, "dare_ties", base_model=base, params={"density": 0.5}, seed=seed)
    a, b, c = (weights_of(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mergekit_config_uses_mergekit_parameter_names():
    config = mergekit_config("dare_linear", ["m0", "m1"], base_model="b", params={"density": 0.3, "lambda": 0.5},
                             out_dtype="bfloat16")
    assert config == {
        "merge_method": "dare_linear",
        "base_model": "b",
        "models": [{"model": "m0", "parameters": {"weight": 0.5, "density": 0.3}},
                   {"model": "m1", "parameters": {"weight": 0.5, "density": 0.3}}],
        "parameters": {"lambda": 0.5},
        "dtype": "float32",
        "out_dtype": "bfloat16",
    }


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mergekit_config("average", ["a", "b"], params={"density": 0.5}, out_dtype="float32"), "unknown"),
        (lambda: mergekit_config("ties", ["a", "b"], out_dtype="float32"), "needs the base model"),
        (lambda: mergekit_config("ties", ["a", "b"], "base", {"density": 0}, "float32"), "density"),
        (lambda: mergekit_config("average", ["a", "b"], params={"weights": [1]}, out_dtype="float32"), "1 weights"),
        (lambda: mergekit_config("slerp", ["a", "b"], out_dtype="float32"), "unknown merge method"),
        (lambda: mergekit_config("fisher", ["a", "b"], "base", out_dtype="float32"), "not a mergekit method"),
        (lambda: mergekit_config("average", ["a", "a"], out_dtype="float32"), "more than once"),
        (lambda: merge(["a", "b"], "out", "ties", "adapter", "base"), "only method 'average'"),
    ],
)
def test_bad_merge_settings_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def lora_runs(base, tmp_path, k, a_drift=None):
    """K LoRA sub-models as the trainer leaves them: adapter dirs and full models with the adapter merged in.

    Independent random A and B per member (``init: different``), or, with ``a_drift``, one shared A0 that each
    member's A has drifted from by ``a_drift``·noise (``init: same``, the members' real starting point)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters, models = [], []
    for i in range(k):
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
        )
        gen = torch.Generator().manual_seed(40 + i)
        shared, drift = torch.Generator().manual_seed(39), torch.Generator().manual_seed(60 + i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
                if "lora_A" in name and a_drift is not None:
                    param.copy_(torch.randn(param.shape, generator=shared) * 0.3
                                + a_drift * torch.randn(param.shape, generator=drift))
        model.save_pretrained(tmp_path / f"adapter{i}")
        model.merge_and_unload().save_pretrained(tmp_path / f"model{i}")
        shutil.copy(base / "tokenizer_config.json", tmp_path / f"model{i}")
        shutil.copy(base / "tokenizer.json", tmp_path / f"model{i}")
        adapters.append(tmp_path / f"adapter{i}")
        models.append(tmp_path / f"model{i}")
    return adapters, models


def test_adapter_space_and_delta_space_differ_as_predicted(base, tmp_path):
    adapters, models = lora_runs(base, tmp_path, 3)
    merge(models, tmp_path / "delta", "average", "delta", base)
    merge(adapters, tmp_path / "adapter", "average", "adapter", base)
    delta, adapter, w0 = weights_of(tmp_path / "delta"), weights_of(tmp_path / "adapter"), weights_of(base)
    lora = [load_file(a / "adapter_model.safetensors") for a in adapters]
    scale = 4 / 2  # lora_alpha / r
    targets = [k for k in w0 if k.endswith(("q_proj.weight", "v_proj.weight"))]
    assert targets
    for name in targets:
        stem = "base_model.model." + name.removesuffix(".weight")
        A = [t[f"{stem}.lora_A.weight"].double() for t in lora]
        B = [t[f"{stem}.lora_B.weight"].double() for t in lora]
        mean_of_products = sum(b @ a for a, b in zip(A, B)) / 3
        product_of_means = (sum(B) / 3) @ (sum(A) / 3)
        base_w = w0[name].double()
        torch.testing.assert_close(delta[name].double() - base_w, scale * mean_of_products, rtol=0, atol=1e-5)
        torch.testing.assert_close(adapter[name].double() - base_w, scale * product_of_means, rtol=0, atol=1e-5)
        # the gap is the K² − K cross terms: far from rounding noise
        gap = adapter[name].double() - delta[name].double()
        torch.testing.assert_close(gap, scale * (product_of_means - mean_of_products), rtol=0, atol=1e-5)
        assert gap.abs().max() > 0.01
    for name in set(w0) - set(targets):
        torch.testing.assert_close(delta[name], w0[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(adapter[name], w0[name], rtol=0, atol=0)


def test_adapters_listing_their_target_modules_in_another_order_average(base, tmp_path):
    from sftlab.compose.merge import average_adapters

    adapters, _ = lora_runs(base, tmp_path, 2)
    config_path = adapters[1] / "adapter_config.json"
    config = json.loads(config_path.read_text())
    # peft keeps target_modules as a set: two runs of one recipe may write them in either order
    first = json.loads((adapters[0] / "adapter_config.json").read_text())["target_modules"]
    config["target_modules"] = first[::-1]
    config_path.write_text(json.dumps(config))
    _, mean = average_adapters(adapters)
    lora = [load_file(a / "adapter_model.safetensors") for a in adapters]
    for name, tensor in mean.items():
        torch.testing.assert_close(tensor, (lora[0][name] + lora[1][name]) / 2)
    config["target_modules"] = ["q_proj"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="target_modules"):
        average_adapters(adapters)


def test_merge_script_writes_a_loadable_model(base, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("merge_script", Path(__file__).parents[1] / "scripts" / "merge.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    subs = [variant(base, tmp_path / f"sub{i}", random_deltas(base, 50 + i)) for i in range(2)]
    logs = [tmp_path / "log0.csv", tmp_path / "log1.csv"]
    logs[0].write_text("step,loss,eval_loss\n0,,3.0\n1,2.0,\n2,1.0,2.0\n")
    logs[1].write_text("step,loss,eval_loss\n0,,3.0\n1,4.0,\n")
    script.main(["--inputs", *map(str, subs), "--out", str(tmp_path / "out"), "--method", "ties",
                 "--base-model", str(base), "--params", json.dumps({"density": 1.0}),
                 "--member-logs", *map(str, logs), "--train-log", str(tmp_path / "train_log.csv")])
    # the merged run's log: per step, the mean over the members that logged it
    assert (tmp_path / "train_log.csv").read_text().splitlines() == [
        "step,members,loss,eval_loss", "0,2,,3.0", "1,2,3.0,", "2,1,1.0,2.0"]
    # density 1 keeps every delta; the two deltas agree in sign where they are averaged, else one survives
    got, w0 = weights_of(tmp_path / "out"), weights_of(base)
    t1, t2 = (weights_of(s)[NORM] - w0[NORM] for s in subs)
    same_sign = (t1 > 0) == (t2 > 0)
    elected = torch.where(t1 + t2 >= 0, torch.maximum(t1, t2), torch.minimum(t1, t2))
    want = torch.where(same_sign, (t1 + t2) / 2, elected)
    torch.testing.assert_close(got[NORM] - w0[NORM], want, rtol=0, atol=1e-6)
    assert (tmp_path / "out" / "mergekit_config.yml").is_file()


def test_task_arithmetic_is_base_plus_lambda_times_the_sum_of_deltas(base, tmp_path):
    """Defaults: weight 1 per sub-model and λ = 0.3, so with K = 4 the update is 1.2 × the average's."""
    norm = weights_of(base)[NORM]
    hand = [torch.tensor([1.0, 0, 0, 0, 0, 0, 0, -2.0]), torch.tensor([0, 2.0, 0, 0, 0, 0, 0, 0]),
            torch.tensor([0, 0, 4.0, 0, 0, 0, 0, 2.0]), torch.tensor([0, 0, 0, -1.0, 0, 0, 0, 4.0])]
    subs = [variant(base, tmp_path / f"sub{i}", {NORM: d}) for i, d in enumerate(hand)]
    merge_models(subs, tmp_path / "ta", "task_arithmetic", base_model=base)
    merge_models(subs, tmp_path / "avg", "average")
    # Σ δ = [1, 2, 4, −1, 0, 0, 0, 4]; × 0.3 → [0.3, 0.6, 1.2, −0.3, 0, 0, 0, 1.2]; the mean is Σ δ / 4
    torch.testing.assert_close(weights_of(tmp_path / "ta")[NORM] - norm,
                               torch.tensor([0.3, 0.6, 1.2, -0.3, 0, 0, 0, 1.2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(weights_of(tmp_path / "avg")[NORM] - norm,
                               torch.tensor([0.25, 0.5, 1.0, -0.25, 0, 0, 0, 1.0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("drift", [0.0, 0.01])
def test_adapter_and_delta_space_from_a_shared_initialisation(base, tmp_path, drift):
    """Members from one LoRA initialisation (A_k = A0 + ΔA_k): the merges differ by minus the members' covariance
    of B and ΔA, zero when A has not moved and small next to independent initialisations."""
    def gaps(where, a_drift):
        where.mkdir()
        adapters, models = lora_runs(base, where, 3, a_drift=a_drift)
        merge(models, where / "delta", "average", "delta", base)
        merge(adapters, where / "adapter", "average", "adapter", base)
        return adapters, weights_of(where / "delta"), weights_of(where / "adapter")

    adapters, delta, adapter = gaps(tmp_path / "shared", drift)
    _, delta_ind, adapter_ind = gaps(tmp_path / "independent", None)
    lora = [load_file(a / "adapter_model.safetensors") for a in adapters]
    for name in [k for k in delta if k.endswith(("q_proj.weight", "v_proj.weight"))]:
        stem = "base_model.model." + name.removesuffix(".weight")
        A = [t[f"{stem}.lora_A.weight"].double() for t in lora]
        B = [t[f"{stem}.lora_B.weight"].double() for t in lora]
        A_bar, B_bar = sum(A) / 3, sum(B) / 3
        covariance = sum((b - B_bar) @ (a - A_bar) for a, b in zip(A, B)) / 3  # ΔA − mean ΔA = A − Ā
        gap = adapter[name].double() - delta[name].double()
        torch.testing.assert_close(gap, -2.0 * covariance, rtol=0, atol=1e-5)  # s = lora_alpha / r = 2
        independent = (adapter_ind[name].double() - delta_ind[name].double()).abs().max()
        if drift == 0.0:
            assert gap.abs().max() < 1e-5
        else:  # a drift of 0.01 next to A's 0.3: the gap is real but a small part of the independent one
            assert 1e-4 < gap.abs().max() < 0.1 * independent


def test_dtm_members_share_their_lora_initialisation_unless_told_otherwise(tmp_path):
    """The trainer's load_model with each member's training settings: init same → equal A; different → not."""
    from sftlab.compose.members import member_training
    from sftlab.config import prepare
    from sftlab.training.trainer import load_model

    save_random_model(tmp_path / "base", **TINY)
    recipes = {name: {"composition": {"name": "disperse_merge", "k": 2, "init": init}}
               for name, init in (("same", "same"), ("different", "different"))}
    cfg = prepare({"models": {"m": {"source": "random"}}, "datasets": {"d": {"source": "demo"}},
                   "training": {"finetuning": "lora"}, "recipes": recipes,
                   "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": list(recipes)}}})

    def lora_a(recipe, member):
        model, _ = load_model(tmp_path / "base", member_training(cfg["recipes"][recipe], member))
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    same = [lora_a("same", f"shards/shard-{k}") for k in range(2)]
    different = [lora_a("different", f"shards/shard-{k}") for k in range(2)]
    assert same[0] and all(torch.equal(same[0][n], same[1][n]) for n in same[0])
    assert not any(torch.equal(different[0][n], different[1][n]) for n in different[0])
    assert not any(torch.equal(same[0][n], different[0][n]) for n in same[0])


def test_merge_parameters_come_from_mergekits_registry():
    """Per-model or shared, and whether the base model is needed: mergekit's declaration, not a copy of it."""
    from mergekit.merge_methods import registry

    from sftlab.compose.merge import MERGE_METHODS

    assert (MERGE_METHODS["ties"].model_params, MERGE_METHODS["ties"].shared_params) == (("density",), ("lambda",))
    assert MERGE_METHODS["task_arithmetic"].params == ("weights", "lambda")
    assert [n for n, m in MERGE_METHODS.items() if not m.uses_base] == ["average"]
    for name, method in MERGE_METHODS.items():
        if method.mergekit_method is None:  # our own (fisher): it declares its parameters itself
            continue
        declared = {p.name for p in registry.get(method.mergekit_method).spec.parameters}
        assert set(method.defaults) <= declared, (name, set(method.defaults) - declared)


def test_mergekit_declarations_are_cached_per_version_and_read_back_without_torch(tmp_path, monkeypatch):
    """Planning reads mergekit's declarations from a cache keyed by mergekit's version (importing mergekit imports
    torch: seconds of every `snakemake` command); the cached ones equal mergekit's registry, and a damaged cache is
    rebuilt from it."""
    import importlib
    import os
    import subprocess
    import sys
    from importlib.metadata import version

    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import BasePolicy

    merge_module = importlib.import_module("sftlab.compose.merge")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "sftlab" / f"mergekit-{version('mergekit')}-methods.json"
    merge_module.mergekit_declarations.cache_clear()
    ties = merge_module.mergekit_spec("ties")
    spec = registry.get("ties").spec
    assert ties.base_required == (spec.contract.base == BasePolicy.REQUIRED) is True
    assert ties.input_parameters == tuple(p.name for p in spec.input_parameters)
    assert ties.shared_parameters == tuple(p.name for p in spec.shared_parameters)
    assert json.loads(cache.read_text())["ties"]["input_parameters"] == list(ties.input_parameters)

    # a fresh process plans from the cache without importing torch
    code = ("import sys; from sftlab.compose.merge import MERGE_METHODS as M; "
            "print(M['dare_ties'].params, M['average'].uses_base, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}).stdout
    assert out.strip() == "('weights', 'density', 'lambda') False False"

    cache.write_text("{not json")
    merge_module.mergekit_declarations.cache_clear()
    assert merge_module.mergekit_spec("linear").base_required is False
    assert "linear" in json.loads(cache.read_text())
    with pytest.raises(ValueError, match="no merge method 'nonesuch'"):
        merge_module.mergekit_spec("nonesuch")
    merge_module.mergekit_declarations.cache_clear()
