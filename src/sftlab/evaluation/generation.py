"""Answer generation for the judged benchmarks, registered by backend name.

``transformers`` (default) batches requests with left padding, grouping requests that share decoding
parameters so each request gets its own temperature and length; sampling is seeded per batch.
``vllm`` serves the same interface on a GPU when the package is installed (per-request seeds).
Prompts are rendered with the model's chat template (``sftlab.data.tokenize``), the one its prompt format wrote when
it was materialised; answers stop at its end-of-sequence ids, the format's end-of-turn token among them.
"""

from __future__ import annotations

import abc

import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from sftlab.lazy import torch
from sftlab.progress import progress, progress_bar
from sftlab.registry import lookup, registrar

from sftlab.data.tokenize import encode_prompt, ensure_chat_template

#: below this temperature decoding is greedy (FastChat's gen_model_answer uses the same threshold)
GREEDY_BELOW = 1e-4


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[dict, ...] | list[dict]
    params: SamplingParams


@dataclass
class Generation:
    text: str
    #: generated ids, the end-of-sequence token included when the model emitted it
    token_ids: list[int]
    prompt_tokens: int
    #: per generated position, the top-k tokens (decoded) and their log-probabilities; None unless asked for
    top_logprobs: list[dict[str, float]] | None = None


GENERATORS: dict[str, type["Generator"]] = {}


register_generator = registrar(GENERATORS, "generator")


def build_generator(backend: str, model_path: str, **options: Any) -> "Generator":
    return lookup(GENERATORS, "generation backend", backend).from_pretrained(model_path, **options)


class Generator(abc.ABC):
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, model_path: str, **options: Any) -> "Generator":
        """The backend loaded with the model at ``model_path``."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], top_logprobs: int = 0) -> list[Generation]:
        """One generation per request, in request order."""


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def generation_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it (the models are saved in their training precision), else float32 —
    also for a bf16 checkpoint on the CPU, where bf16 matmuls are slow and decoding drifts."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@register_generator("transformers")
class TransformersGenerator(Generator):
    """Batched ``model.generate`` with left padding.

    ``stop_at_eos=False`` forbids the end-of-sequence token so every answer has exactly
    ``max_new_tokens`` tokens (throughput benchmarks).
    """

    def __init__(self, model, tokenizer, batch_size: int = 8, seed: int = 0, stop_at_eos: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        ensure_chat_template(tokenizer)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token to pad batches with")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seed = seed
        self.stop_at_eos = stop_at_eos
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # answers are cut at the same tokens as the vLLM backend stops at
        self.eos_token_ids = set(eos_token_ids(tokenizer, model.generation_config))

    @classmethod
    def from_pretrained(
        cls, model_path: str, device: str = "auto", dtype: str = "auto", **options: Any
    ) -> "TransformersGenerator":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        device = _resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=generation_dtype(dtype, device)).to(device)
        return cls(model, tokenizer, **options)

    def _batches(self, prompts: list[list[int]], requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Request indices grouped by decoding parameters, longest prompts first, cut into batches."""
        order = sorted(range(len(requests)), key=lambda i: (repr(requests[i].params), -len(prompts[i])))
        batches = []
        for _, group in itertools.groupby(order, key=lambda i: requests[i].params):
            group = list(group)
            batches += [group[k : k + self.batch_size] for k in range(0, len(group), self.batch_size)]
        return batches

    def generate(self, requests: Sequence[GenerationRequest], top_logprobs: int = 0) -> list[Generation]:
        with torch.inference_mode():
            return self._generate(requests, top_logprobs)

    def _generate(self, requests: Sequence[GenerationRequest], top_logprobs: int) -> list[Generation]:
        prompts = [encode_prompt(self.tokenizer, r.messages) for r in requests]
        results: list[Generation | None] = [None] * len(requests)
        device = self.model.device
        batches = self._batches(prompts, requests)
        for batch_no, batch in enumerate(progress(batches, "generation", total=len(batches))):
            params = requests[batch[0]].params
            width = max(len(prompts[i]) for i in batch)
            input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(prompts[i])
                input_ids[row, width - n :] = torch.tensor(prompts[i])
                attention_mask[row, width - n :] = 1
            kwargs: dict[str, Any] = {"do_sample": not params.greedy}
            if not params.greedy:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
                # seeded per batch: the same requests in the same order give the same samples
                torch.manual_seed(self.seed + batch_no)
            if not self.stop_at_eos:
                kwargs["min_new_tokens"] = params.max_new_tokens
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.pad_token_id,
                return_dict_in_generate=True,
                output_logits=top_logprobs > 0,
                **kwargs,
            )
            new_tokens = out.sequences[:, width:].tolist()
            for row, i in enumerate(batch):
                ids = new_tokens[row]
                cut = next((k + 1 for k, t in enumerate(ids) if t in self.eos_token_ids), len(ids))
                ids = ids[:cut]
                top = None
                if top_logprobs > 0:
                    top = [self._top_logprobs(step[row], top_logprobs) for step in out.logits[:cut]]
                text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                results[i] = Generation(text=text, token_ids=ids, prompt_tokens=len(prompts[i]), top_logprobs=top)
        return results  # type: ignore[return-value]

    def _top_logprobs(self, logits: torch.Tensor, k: int) -> dict[str, float]:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, ids = logprobs.topk(k)
        top: dict[str, float] = {}
        for value, token_id in zip(values.tolist(), ids.tolist()):
            # two ids may decode to the same text: keep the likelier (topk is sorted)
            top.setdefault(self.tokenizer.decode([token_id]), value)
        return top


def saved_generation_config(model_path: str):
    """The model directory's generation config; None when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:
        return None


def eos_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token that ends an answer: the model's generation config's end-of-sequence ids (chat models often list
    the end-of-turn marker there) and the tokenizer's."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None)


def vllm_requests(tokenizer, requests: Sequence[GenerationRequest], seed: int, stop_token_ids: Sequence[int],
                  stop_at_eos: bool = True, top_logprobs: int = 0) -> list[tuple[list[int], dict[str, Any]]]:
    """(prompt token ids, ``vllm.SamplingParams`` keyword arguments) per request.

    The prompt is the model's chat template rendered exactly as for the transformers backend; each request keeps its
    own temperature (MT-Bench's per category), top-p and length, and its own seed (``seed`` + its position), so the
    answers do not depend on how vLLM schedules them. Answers stop at the end-of-sequence / end-of-turn tokens.
    """
    out = []
    for i, request in enumerate(requests):
        params = request.params
        kwargs = {
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": 1.0 if params.greedy else params.top_p,
            "seed": seed + i,
            "stop_token_ids": list(stop_token_ids),
            "ignore_eos": not stop_at_eos,
            "logprobs": top_logprobs or None,
            "skip_special_tokens": True,
        }
        out.append((encode_prompt(tokenizer, request.messages), kwargs))
    return out


@register_generator("vllm")
class VLLMGenerator(Generator):
    """vLLM offline inference with continuous batching; each request has its own sampling parameters and seed.

    vLLM cannot install beside the CPU torch pin: the generate rule runs in ``envs/vllm.yaml`` when a benchmark's
    ``backend`` is ``vllm`` (``--software-deployment-method conda``).
    """

    def __init__(self, model_path: str, seed: int = 0, stop_at_eos: bool = True, **llm_options: Any) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("generation backend 'vllm' needs the vllm package (envs/vllm.yaml); install it or use "
                               "backend 'transformers'")
        if not torch.cuda.is_available():
            raise RuntimeError("generation backend 'vllm' needs a CUDA GPU; none is visible, use backend 'transformers'")
        from vllm import LLM

        self.llm = LLM(model=str(model_path), seed=seed, **llm_options)
        self.tokenizer = self.llm.get_tokenizer()
        ensure_chat_template(self.tokenizer)
        # the generation config lists the prompt format's end-of-turn token (written when the model was materialised)
        self.stop_token_ids = eos_token_ids(self.tokenizer, saved_generation_config(model_path))
        self.seed = seed
        self.stop_at_eos = stop_at_eos

    @classmethod
    def from_pretrained(cls, model_path: str, **options: Any) -> "VLLMGenerator":
        options.pop("batch_size", None)  # vLLM schedules its own batches
        return cls(model_path, **options)

    def generate(self, requests: Sequence[GenerationRequest], top_logprobs: int = 0) -> list[Generation]:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        built = vllm_requests(self.tokenizer, requests, self.seed, self.stop_token_ids, self.stop_at_eos, top_logprobs)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=prompt) for prompt, _ in built],
                                    [VllmSamplingParams(**kwargs) for _, kwargs in built], use_tqdm=progress_bar)
        results = []
        for (prompt, _), output in zip(built, outputs):
            completion = output.outputs[0]
            top = None
            if top_logprobs:
                top = [{lp.decoded_token: lp.logprob for lp in position.values()} for position in completion.logprobs]
            results.append(
                Generation(
                    text=completion.text.strip(),
                    token_ids=list(completion.token_ids),
                    prompt_tokens=len(prompt),
                    top_logprobs=top,
                )
            )
        return results


def generate_chats(
    generator: Generator, conversations: Sequence[Sequence[str]], params: Sequence[SamplingParams]
) -> list[list[str]]:
    """Answer each conversation's user turns in order; turn t's prompt holds the model's own earlier answers.

    All conversations advance one turn per ``generate`` call, so every turn is batched across conversations.
    """
    if len(conversations) != len(params):
        raise ValueError("one SamplingParams per conversation is needed")
    answers: list[list[str]] = [[] for _ in conversations]
    for turn in range(max((len(c) for c in conversations), default=0)):
        active = [i for i, c in enumerate(conversations) if len(c) > turn]
        requests = []
        for i in active:
            messages = []
            for k in range(turn):
                messages += [
                    {"role": "user", "content": conversations[i][k]},
                    {"role": "assistant", "content": answers[i][k]},
                ]
            messages.append({"role": "user", "content": conversations[i][turn]})
            requests.append(GenerationRequest(messages=messages, params=params[i]))
        for i, generation in zip(active, generator.generate(requests)):
            answers[i].append(generation.text)
    return answers
