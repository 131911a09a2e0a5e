"""Prompt formats: rendered strings written out by hand, the loss mask of the Tulu format, the formats applied when a
model is materialised (template refused / tokens added, embeddings resized), and a template-less Llama-2-like model
with the Tulu format through data preparation, training, generation and scoring."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from sftlab.config import ConfigError, load_schema, prepare
from sftlab.data.prepare import prepare_dataset
from sftlab.data.tokenize import encode_example, encode_prompt, ensure_chat_template, render
from sftlab.evaluation.generation import GenerationRequest, SamplingParams, TransformersGenerator
from sftlab.io import write_jsonl
from sftlab.models.materialise import apply_format_to_dir, materialise
from sftlab.models.prompt_formats import PROMPT_FORMATS, PromptFormatError, apply_prompt_format
from sftlab.models.random_init import build_family_tokenizer, build_random_model
from sftlab.models.scoring import encode_jsonl, load_for_scoring, pad_id, perplexities
from sftlab.training.trainer import train
from test_tokenize import MULTI_TURN  # system, user, assistant, user, assistant

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
# open-instruct's Tulu format, written out by hand: EOS closes each answer, a newline follows unless it is the last
TULU_TEXT = ("<s><|system|>\nBe brief.\n<|user|>\nWhat is 2 + 3?\n<|assistant|>\n5</s>\n"
             "<|user|>\nReverse the word 'apple'.\n<|assistant|>\nelppa</s>")


def formatted_tokenizer(family: str, fmt: str | None):
    """A family's tokenizer with a format applied as materialisation applies it (model and generation config too)."""
    model, tok = build_random_model(family=family, seed=0, **SMALL)
    apply_prompt_format(fmt, tok, model, model.generation_config, "models.test.prompt_format")
    return tok, model


@pytest.fixture(scope="module")
def tulu():
    return formatted_tokenizer("llama2", "tulu")[0]


def test_tulu_renders_open_instructs_string(tulu):
    assert render(tulu, MULTI_TURN) == TULU_TEXT
    assert render(tulu, MULTI_TURN[:2], add_generation_prompt=True) == (
        "<s><|system|>\nBe brief.\n<|user|>\nWhat is 2 + 3?\n<|assistant|>\n")
    # LESS strips every message
    assert render(tulu, [{"role": "user", "content": "  Hi \n"}, {"role": "assistant", "content": "\nYo "}]) == (
        "<s><|user|>\nHi\n<|assistant|>\nYo</s>")


def test_tulu_label_mask_by_hand(tulu):
    enc = encode_example(tulu, MULTI_TURN, max_length=512)
    ids, labels = enc["input_ids"], enc["labels"]
    # the conversation is tokenized as one text, as open-instruct does: no word-start marker at the head of an
    # answer, which tokenizing the pieces one by one would insert
    assert ids == tulu(TULU_TEXT, add_special_tokens=False)["input_ids"]
    assert ids[0] == tulu.bos_token_id == 1
    trained = [i for i, label in enumerate(labels) if label != -100]
    assert all(labels[i] == ids[i] for i in trained)
    # two runs of trained tokens: "5</s>" and "elppa</s>"; EOS is trained, the newline after it is not
    runs = np.split(trained, np.where(np.diff(trained) != 1)[0] + 1)
    assert [tulu.decode([ids[i] for i in run]) for run in runs] == ["5</s>", "elppa</s>"]
    assert [ids[run[-1]] for run in runs] == [2, 2]
    assert tulu.decode(ids[runs[0][-1] + 1: runs[1][0]]) == "\n<|user|>\nReverse the word 'apple'.\n<|assistant|>\n"
    assert tulu.decode(ids[:runs[0][0]]) == "<s><|system|>\nBe brief.\n<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"
    # the prompt the model answers at generation is exactly the masked prefix of the first answer
    assert encode_prompt(tulu, MULTI_TURN[:2]) == ids[:runs[0][0]]


def test_alpaca_and_zephyr_render_their_authors_strings():
    alpaca = formatted_tokenizer("llama2", "alpaca")[0]
    turn = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red"}]
    assert render(alpaca, turn) == ("<s>Below is an instruction that describes a task. Write a response that "
                                    "appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n"
                                    "### Response:Red</s>")
    enc = encode_example(alpaca, turn, 512)
    assert alpaca.decode([t for t in enc["labels"] if t != -100]) == "Red</s>"
    zephyr = formatted_tokenizer("mistral", "zephyr")[0]
    assert render(zephyr, MULTI_TURN[:3]) == ("<s><|system|>\nBe brief.</s>\n<|user|>\nWhat is 2 + 3?</s>\n"
                                              "<|assistant|>\n5</s>\n")
    assert render(zephyr, MULTI_TURN[:2], add_generation_prompt=True).endswith("</s>\n<|assistant|>\n")


def test_model_format_on_a_template_less_tokenizer_is_refused_naming_the_key(tmp_path):
    with pytest.raises(PromptFormatError, match=r"config key models\.llama2_7b\.prompt_format: .*'model'.*has none"):
        materialise({"source": "random", "family": "llama2", "prompt_format": "model", **SMALL},
                    tmp_path / "llama2_7b")
    assert not (tmp_path / "llama2_7b").exists()


@pytest.mark.parametrize("family,refused", [("llama2", True), ("mistral", True), ("llama3", False), ("qwen2", False)])
def test_model_format_on_a_template_less_random_family_is_refused_when_planning(family, refused):
    raw = {"models": {"base": {"source": "random", "family": family, "prompt_format": "model"}},
           "datasets": {"d": {"source": "demo"}}, "recipes": {"r": {}},
           "experiments": {"e": {"models": ["base"], "datasets": ["d"], "recipes": ["r"]}}}
    if refused:
        with pytest.raises(ConfigError, match=rf"config key models\.base\.prompt_format: .*{family!r} has none"):
            prepare(raw)
    else:
        assert prepare(raw)["models"]["base"]["prompt_format"] == "model"


def test_a_tokenizer_without_template_is_refused_by_every_job():
    with pytest.raises(ValueError, match=r"models\.<name>\.prompt_format"):
        ensure_chat_template(build_family_tokenizer("llama2"))


def test_chatml_on_a_llama2_tokenizer_adds_its_tokens_and_resizes_the_embeddings(tmp_path):
    plain, _ = build_random_model(family="llama2", seed=0, **SMALL)
    # absent prompt_format on a template-less tokenizer: chatml, as before
    materialise({"source": "random", "family": "llama2", "seed": 0, **SMALL}, tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    assert len(tok) == 512 + 2 and tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [512, 513]
    for new, old in ((model.get_input_embeddings().weight, plain.get_input_embeddings().weight),
                     (model.get_output_embeddings().weight, plain.get_output_embeddings().weight)):
        assert new.shape == (514, 32)
        torch.testing.assert_close(new[:512], old)  # the old rows are kept
        torch.testing.assert_close(new[512:], old.mean(0).expand(2, -1))  # the new ones are their mean
    assert model.config.vocab_size == 514
    assert render(tok, MULTI_TURN[1:3]) == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    # answers stop at the end-of-turn marker, and still at </s>
    assert GenerationConfig.from_pretrained(tmp_path / "m").eos_token_id == [2, 513]
    assert TransformersGenerator(model, tok).eos_token_ids == {2, 513}


def test_a_sharded_checkpoint_given_new_tokens_keeps_no_stale_shard_or_index(tmp_path):
    """A hub checkpoint comes in shards with an index; the resized one is saved in their place (vLLM would follow a
    stale index to missing shards)."""
    model, tok = build_random_model(family="llama2", seed=0, **SMALL)
    model.save_pretrained(tmp_path / "m", max_shard_size="20KB")
    tok.save_pretrained(tmp_path / "m")
    assert len(list((tmp_path / "m").glob("model-*-of-*.safetensors"))) > 1
    apply_format_to_dir(tmp_path / "m", "tulu", "models.m.prompt_format")
    assert sorted(p.name for p in (tmp_path / "m").glob("*.safetensors*")) == ["model.safetensors"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").get_input_embeddings().weight.shape == (513, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_schema_lists_every_format_and_every_paper_model_names_one():
    schema = load_schema()["$defs"]["model"]["properties"]["prompt_format"]
    assert sorted(schema["enum"]) == sorted(PROMPT_FORMATS)
    for path in sorted((ROOT / "configs" / "paper").glob("*.yaml")):
        models = yaml.safe_load(path.read_text())["models"]
        unnamed = [name for name, entry in models.items() if "prompt_format" not in entry]
        assert not unnamed, f"{path.name}: models without prompt_format: {unnamed}"


# ------------------------------------------------------------------ a Llama-2-like base model in the Tulu format
ANSWERS = {"Name a colour.": "Red", "Name a number.": "Seven", "Name a fruit.": "Apple", "Name a day.": "Monday"}
TRAINING = {
    "learning_rate": 5e-3, "epochs": 1, "max_steps": 40, "batch_size": 4, "gradient_accumulation": 1,
    "max_length": 64, "scheduler": "constant", "warmup_ratio": 0.0, "warmup_steps": 0, "weight_decay": 0.0,
    "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "max_grad_norm": 1.0, "seed": 0,
    "precision": "fp32", "finetuning": "full", "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]},
    "logging_steps": 20, "eval_steps": 40, "save_steps": 1000, "gradient_checkpointing": False,
}


def test_template_less_llama2_model_in_tulu_format_prepares_trains_generates_and_scores(tmp_path):
    base = tmp_path / "llama2_7b"
    materialise({"source": "random", "family": "llama2", "prompt_format": "tulu", "seed": 0,
                 "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}, base)
    assert AutoTokenizer.from_pretrained(base).pad_token == "<pad>"  # as LESS adds it
    # prepare: a local alpaca-format file, normalised as the workflow does
    rows = [{"instruction": q, "input": "", "output": a} for q, a in ANSWERS.items()]
    write_jsonl(tmp_path / "raw.jsonl", rows)
    pool, heldout, _ = prepare_dataset("tiny", {"source": "local", "path": str(tmp_path / "raw.jsonl"),
                                                "format": "alpaca", "heldout": 0, "seed": 0, "on_bad_rows": "error",
                                                "first_turn_only": False})
    assert len(pool) == 4
    # train: memorise the four answers, EOS included (the model must learn to stop)
    train(base, pool, pool[:1], TRAINING, {"name": "ntp"}, out_dir=tmp_path / "model",
          log_path=tmp_path / "train_log.csv", checkpoint_dir=tmp_path / "checkpoints")
    # generate: greedy answers stop at </s> long before max_new_tokens
    generator = TransformersGenerator.from_pretrained(str(tmp_path / "model"), device="cpu", dtype="float32")
    assert 2 in generator.eos_token_ids
    requests = [GenerationRequest([{"role": "user", "content": q}], SamplingParams(max_new_tokens=20))
                for q in ANSWERS]
    generations = generator.generate(requests)
    assert [g.text for g in generations] == list(ANSWERS.values())
    assert all(g.token_ids[-1] == 2 and len(g.token_ids) < 20 for g in generations)
    # score: the trained model's per-token perplexity of its answers (EOS included) is near 1, the base model's is not
    write_jsonl(tmp_path / "pool.jsonl", pool)
    trained, tok = load_for_scoring(tmp_path / "model", device="cpu")
    ids, examples, dropped = encode_jsonl(tok, tmp_path / "pool.jsonl", 64)
    assert not dropped
    assert [tok.decode([t for t in e["labels"] if t != -100]) for e in examples] == [f"{a}</s>" for a in ANSWERS.values()]
    assert perplexities(trained, examples, pad_id(tok)).max() < 1.5
    untrained, _ = load_for_scoring(base, device="cpu")
    assert perplexities(untrained, examples, pad_id(tok)).min() > 10
