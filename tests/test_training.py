"""Training the tiny model: LoRA and full outputs, the training log, and resuming a killed run from its checkpoint."""

import copy
import csv
import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from sftlab.data import demo
from sftlab.models.materialise import materialise
from sftlab.training import trainer as trainer_module
from sftlab.training.trainer import prepare_checkpoint_dir, train

CFG = {
    "learning_rate": 1e-3, "epochs": 1, "max_steps": 4, "batch_size": 2, "gradient_accumulation": 1,
    "max_length": 64, "scheduler": "linear", "warmup_ratio": 0.0, "warmup_steps": 0, "weight_decay": 0.0,
    "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "max_grad_norm": 1.0, "seed": 0,
    "precision": "fp32", "finetuning": "full", "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                                        "target_modules": ["q_proj", "v_proj"]},
    "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "gradient_checkpointing": False,
}
NTP = {"name": "ntp"}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "model"
    materialise({"source": "random"}, path)
    return path


@pytest.fixture(scope="module")
def data():
    # 12 examples at batch size 2: 6 steps an epoch, so max_steps=4 stops inside the first epoch
    train_examples, heldout, _ = demo.generate(per_family=2, heldout_per_family=1, degraded_share=0.0,
                                               pairs_per_family=0, seed=0)
    return train_examples, heldout


def run(base_model, data, root, cfg=CFG):
    train(base_model, data[0], data[1], cfg, NTP, out_dir=root / "model", log_path=root / "train_log.csv",
          checkpoint_dir=root / "checkpoints")


def weights(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {k: v.clone() for k, v in model.state_dict().items()}


def read_log(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def full_run(base_model, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    run(base_model, data, root)
    return root


def test_full_finetuning_output(full_run, base_model):
    assert not (full_run / "model" / "adapter").exists()
    assert not (full_run / "checkpoints").exists()  # removed once the run is complete
    trained, base = weights(full_run / "model"), weights(base_model)
    assert trained.keys() == base.keys()
    changed = [k for k in base if not torch.equal(trained[k], base[k])]
    assert "model.embed_tokens.weight" in changed and "lm_head.weight" in changed
    assert (full_run / "model" / "tokenizer.json").exists()
    # the run's effective settings beside its weights: the reduction (default token_mean) and the global batch
    settings = json.loads((full_run / "model" / "sftlab_run.json").read_text())
    assert settings["loss_reduction"] == "token_mean" and settings["global_batch"] == 2
    assert settings["objective"] == NTP and settings["batching"] == "length_grouped"


def test_train_log(full_run):
    rows = read_log(full_run / "train_log.csv")
    by_step = {int(r["step"]): r for r in rows}
    assert sorted(by_step) == [0, 1, 2, 3, 4]
    # held-out loss before the first step, then every eval_steps and at the end
    assert by_step[0]["eval_loss"] != "" and by_step[0]["loss"] == ""
    assert [by_step[s]["eval_loss"] != "" for s in (1, 2, 3, 4)] == [False, True, False, True]
    assert all(by_step[s]["loss"] != "" for s in (1, 2, 3, 4))
    # an untrained random model over a ~500-token vocabulary: loss near ln(V)
    assert 4.0 < float(by_step[0]["eval_loss"]) < 8.0
    assert float(by_step[4]["eval_loss"]) < float(by_step[0]["eval_loss"])
    # linear schedule from 1e-3 over 4 steps without warm-up: logged after each step
    lrs = [float(by_step[s]["learning_rate"]) for s in (1, 2, 3, 4)]
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])


def test_lora_output(base_model, data, tmp_path):
    cfg = {**CFG, "finetuning": "lora", "warmup_ratio": 0.5}
    run(base_model, data, tmp_path, cfg)
    out = tmp_path / "model"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    # the saved model is the merged one: plain weight names, only the LoRA-targeted matrices changed
    trained, base = weights(out), weights(base_model)
    assert trained.keys() == base.keys()
    changed = {k for k in base if not torch.equal(trained[k], base[k])}
    assert changed == {f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    rows = read_log(tmp_path / "train_log.csv")
    assert rows[0]["step"] == "0" and rows[0]["eval_loss"] != ""
    # warm-up over half of the 4 steps (2 steps) up to 1e-3, then linear decay to 0 at step 4
    assert [float(r["learning_rate"]) for r in rows[1:]] == pytest.approx([0.0, 0.5e-3, 1e-3, 0.5e-3])


class Killed(RuntimeError):
    pass


class KillAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed before step {self.step + 1}")


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append(state.global_step + 1)


@pytest.fixture
def with_callbacks(monkeypatch):
    """``with_callbacks(cb, ...)``: the next ``train`` calls run with these extra Trainer callbacks."""
    real = trainer_module.ObjectiveTrainer

    def install(*callbacks):
        class Patched(real):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                for cb in callbacks:
                    self.add_callback(cb)

        monkeypatch.setattr(trainer_module, "ObjectiveTrainer", Patched)

    return install


def test_resume_after_kill_matches_an_uninterrupted_run(base_model, data, full_run, tmp_path, with_callbacks, caplog):
    with_callbacks(KillAtStep(2))
    with pytest.raises(Killed):
        run(base_model, data, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (tmp_path / "model").exists()

    counter = CountSteps()
    with_callbacks(counter)  # the rerun is not killed
    caplog.set_level(logging.INFO, logger="sftlab.training")
    run(base_model, data, tmp_path)
    messages = caplog.messages
    assert any(m.startswith("resuming from") and m.endswith("checkpoint-2") for m in messages), messages
    assert counter.steps == [3, 4]  # only the steps after the checkpoint ran again
    # same weights as without the kill: model, optimiser, schedule, RNG and data order all came back
    resumed, uninterrupted = weights(tmp_path / "model"), weights(full_run / "model")
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-6, msg=key)
    rows = {int(r["step"]): r for r in read_log(tmp_path / "train_log.csv")}
    assert sorted(rows) == [0, 1, 2, 3, 4]  # the log of the steps before the kill survives
    assert float(rows[4]["eval_loss"]) == pytest.approx(
        float({int(r["step"]): r for r in read_log(full_run / "train_log.csv")}[4]["eval_loss"]), rel=1e-5)


def test_changed_parameters_discard_old_checkpoints(base_model, data, tmp_path, with_callbacks, caplog):
    with_callbacks(KillAtStep(2))
    with pytest.raises(Killed):
        run(base_model, data, tmp_path)
    counter = CountSteps()
    with_callbacks(counter)
    caplog.set_level(logging.INFO, logger="sftlab.training")
    run(base_model, data, tmp_path, {**CFG, "learning_rate": 5e-4})
    messages = caplog.messages
    assert any(m.startswith("removing checkpoints") for m in messages), messages
    assert not any(m.startswith("resuming") for m in messages)
    assert counter.steps == [1, 2, 3, 4]
    rows = {int(r["step"]): r for r in read_log(tmp_path / "train_log.csv")}
    assert float(rows[1]["learning_rate"]) == pytest.approx(5e-4)


def test_prepare_checkpoint_dir(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    params = {"training": {"learning_rate": 1e-3}, "objective": {"name": "ntp"}, "ids": ["a", "b"]}
    # a fresh directory: nothing to resume, the parameters are stamped
    assert prepare_checkpoint_dir(ckpt, params) is None
    assert json.loads((ckpt / "params.json").read_text())["params"] == params
    for step in (2, 10, 4):
        (ckpt / f"checkpoint-{step}").mkdir()
        (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")  # complete: its last file is there
    # same parameters: the newest checkpoint by step (10, not the lexically last 4)
    assert prepare_checkpoint_dir(ckpt, copy.deepcopy(params)) == str(ckpt / "checkpoint-10")
    # other parameters (another example order counts): everything removed, nothing resumed
    other = {**params, "ids": ["b", "a"]}
    caplog.set_level(logging.INFO, logger="sftlab.training")
    assert prepare_checkpoint_dir(ckpt, other) is None
    assert not list(ckpt.glob("checkpoint-*"))
    assert json.loads((ckpt / "params.json").read_text())["params"] == other
    assert any("other parameters" in m for m in caplog.messages)


def test_checkpoints_without_a_stamp_are_not_trusted(tmp_path):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "checkpoint-6").mkdir(parents=True)
    assert prepare_checkpoint_dir(ckpt, {"x": 1}) is None
    assert not (ckpt / "checkpoint-6").exists()


def test_heldout_deviation_from_the_same_pass(base_model, data):
    """m_θ = mean (log πθ − log πref)/|y|: with ref_logp = log πθ + k·|y| (log πθ summed naively) it is exactly −k."""
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    _, heldout = data
    features = trainer_module.encode_examples(tokenizer, heldout, 64)
    ks = [float(i % 3) for i in range(len(features))]
    for f, k in zip(features, ks):
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        naive, n = 0.0, 0
        for t in range(1, len(f["input_ids"])):
            if f["labels"][t] != -100:
                naive += float(logprobs[t - 1, f["labels"][t]])
                n += 1
        f["ref_logp"] = naive + k * n
    metrics = trainer_module.heldout_metrics(model, tokenizer, features, batch_size=3)
    assert metrics["deviation"] == pytest.approx(-sum(ks) / len(ks), abs=1e-4)
    assert "deviation" not in trainer_module.heldout_metrics(model, tokenizer, [
        {k: v for k, v in f.items() if k != "ref_logp"} for f in features], batch_size=3)

    # sharded over 2 (or 4) processes: each scores only its share, the gathered sums give the one-process numbers
    one = trainer_module.heldout_metrics(model, tokenizer, features, batch_size=3)
    for processes in (2, 4):
        scored = []
        hook = model.register_forward_hook(lambda _m, _a, kwargs, _o: scored.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
        parts = [trainer_module.heldout_sums(model, tokenizer.pad_token_id,
                                             *trainer_module.heldout_shard(features, rank, processes), 3)
                 for rank in range(processes)]
        hook.remove()
        assert sum(scored) == processes * -(-len(features) // processes)  # each process scores ceil(N / processes)
        assert sum(len(p["rewards"]) for p in parts) == len(features)
        sharded = trainer_module.combine_heldout(parts)
        assert sharded["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-6)
        assert sharded["deviation"] == pytest.approx(one["deviation"], abs=1e-6)
        gathered = trainer_module.heldout_metrics(model, tokenizer, features, 3, rank=1, processes=processes,
                                                  gather=lambda part: parts[:1] + [part] + parts[2:])
        assert gathered == pytest.approx(sharded)


def test_heldout_shares_are_equal_and_disjoint():
    features = [{"id": i} for i in range(7)]
    shares = [trainer_module.heldout_shard(features, rank, 3) for rank in range(3)]
    assert [[f["id"] for f in share] for share, _ in shares] == [[0, 3, 6], [1, 4, 0], [2, 5, 0]]
    assert [counts for _, counts in shares] == [[True, True, True], [True, True, False], [True, True, False]]



def test_report_to_trackers(tmp_path, monkeypatch):
    """none → no tracker; a tracker whose package is missing is named; an installed one reaches the Trainer."""
    from sftlab.training.trainer import report_targets, training_arguments

    assert training_arguments(CFG, tmp_path / "runs" / "r" / "checkpoints").report_to == []
    monkeypatch.setattr(trainer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="training.report_to: wandb .* wandb package"):
        report_targets("wandb")
    with pytest.raises(ValueError, match="training.report_to: 'mlflow'"):
        report_targets("mlflow")
    monkeypatch.setattr(trainer_module.importlib.util, "find_spec", lambda name: name == "tensorboard" or None)
    args = training_arguments({**CFG, "report_to": "tensorboard"}, tmp_path / "m" / "d" / "runs" / "r" / "checkpoints")
    assert args.report_to == ["tensorboard"]
    assert args.run_name == "m/d/runs/r"


def test_packed_training_follows_the_padded_run(base_model, data, tmp_path):
    """Same examples in the same order: packed rows train the model exactly as padded rows do (to round-off)."""
    logs = {}
    for batching in ("padded", "packed"):
        run(base_model, data, tmp_path / batching, {**CFG, "batching": batching})
        logs[batching] = read_log(tmp_path / batching / "train_log.csv")
    losses = {k: [float(r["loss"]) for r in rows if r["loss"]] for k, rows in logs.items()}
    assert len(losses["packed"]) == CFG["max_steps"]
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-4)
    packed, padded = weights(tmp_path / "packed" / "model"), weights(tmp_path / "padded" / "model")
    assert packed.keys() == padded.keys()
    for name, value in packed.items():
        torch.testing.assert_close(value, padded[name], rtol=1e-3, atol=1e-5)


def test_lora_base_in_the_training_precision_adapter_in_float32_saved_as_trained(base_model, tmp_path):
    """A bf16 frozen base with a float32 adapter trains on the CPU too; the merged model is saved in bf16 and loads
    as any Hugging Face model (what merge, generation, lm-eval and the judges read)."""
    from types import SimpleNamespace

    from sftlab.training.trainer import load_model, save_model, weights_dtype

    cfg = {**CFG, "finetuning": "lora"}
    assert weights_dtype(cfg) == torch.float32  # fp32 training: nothing changes
    with pytest.raises(ValueError, match="training.precision: bf16 needs a GPU"):
        weights_dtype({**cfg, "precision": "bf16"})
    model, tokenizer = load_model(base_model, cfg, dtype=torch.bfloat16)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert trained and all("lora_" in n and p.dtype == torch.float32 for n, p in trained.items())
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trained.items():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained-looking adapter (B starts at zero)
    ids = torch.tensor([tokenizer("What is 2 plus 3")["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())

    # the expected merged weight of one adapted layer, worked out in float32: W + (α/r)·B·A
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    scale = cfg["lora"]["alpha"] / cfg["lora"]["r"]
    base_weight = layer.base_layer.weight.detach().float().clone()
    expected = base_weight + scale * (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach()
    trainer = SimpleNamespace(model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              processing_class=tokenizer)
    save_model(trainer, tmp_path / "model", final=True, dtype=torch.bfloat16)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert loaded.dtype == torch.bfloat16 and loaded.config.dtype == torch.bfloat16
    merged = loaded.model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(merged.float(), expected, rtol=1e-2, atol=1e-2)
    assert (merged.float() - base_weight).abs().max() > 0.01  # the adapter is in it
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").exists()
