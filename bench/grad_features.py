"""Benchmark: batched per-example gradient features (sftlab) against one example at a time (the LESS way).

Both methods compute Adam-preconditioned, projected, normalised features of the same examples with the
same random-weight Llama + LoRA model, the same moments and the same projection. Each method runs in its
own child process so that its peak memory (max RSS; peak CUDA allocation on a GPU) is its own.
Prints examples/s of each, the speed-up, the cosine between their features, and peak memory.

    .venv/bin/python bench/grad_features.py [--n 64 --batch-size 16 ...]
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sftlab.models.random_init import build_random_model
from sftlab.objectives.ntp import ntp_loss
from sftlab.selection.gradients import (
    RademacherProjector,
    adam_precondition,
    encode_rows,
    gradient_features,
    lora_parameters,
    use_eager_attention,
)

WORDS = ("the of and to in is that for it as with was on be by this are answer question what sort these numbers "
         "reverse word count letters add multiply plus minus equals yes no true false").split()
LESS_PROJECT_INTERVAL = 16  # LESS projects its per-example gradients in groups of 16


def setup(args):
    """(model, tokenizer, items, projector, moments): deterministic, so both child processes build the same."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model, tokenizer = build_random_model(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                                          intermediate_size=args.hidden * 8 // 3, max_position_embeddings=1024)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.1,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    use_eager_attention(model)
    model.to(args.device).eval()
    rng = random.Random(0)
    rows = []
    for k in range(args.n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, args.words)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, args.words)))
        rows.append({"id": f"ex{k}", "messages": [{"role": "user", "content": prompt},
                                                 {"role": "assistant", "content": answer}]})
    items, skipped = encode_rows(tokenizer, rows, "train", args.max_length)
    assert not skipped
    n_params = sum(p.numel() for p in lora_parameters(model).values())
    gen = torch.Generator().manual_seed(1)
    moments = ((torch.randn(n_params, generator=gen) * 1e-4).to(args.device),
               (torch.rand(n_params, generator=gen) * 1e-7).to(args.device))
    projector = RademacherProjector(n_params, args.dim, seed=0, device=args.device, cache_bytes=args.cache_mb * 2**20)
    return model, tokenizer, items, projector, moments


def one_at_a_time(model, items, projector, moments) -> torch.Tensor:
    """LESS: one unpadded forward/backward per example, Adam preconditioning, projection in groups of 16."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    out, pending = [], []
    for k, item in enumerate(items):
        seq = item["sequences"][0]
        logits = model(input_ids=torch.tensor([seq["input_ids"]], device=device)).logits
        ntp_loss(logits, torch.tensor([seq["labels"]], device=device)).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in params])[None]
        model.zero_grad(set_to_none=True)
        pending.append(adam_precondition(grad, moments[0], moments[1], (0.9, 0.999)))
        if len(pending) == LESS_PROJECT_INTERVAL or k == len(items) - 1:
            out.append(projector.project(torch.cat(pending)))
            pending = []
    return torch.nn.functional.normalize(torch.cat(out), dim=1).to("cpu", torch.float16)


def child(args) -> None:
    model, tokenizer, items, projector, moments = setup(args)
    # untimed warm-up on a few examples: first-call overheads, and the projection blocks enter the cache
    warm = items[: min(4, len(items))]
    if args.method == "batched":
        gradient_features(model, warm, "train", tokenizer.pad_token_id, projector, args.batch_size, moments)
    else:
        one_at_a_time(model, warm, projector, moments)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if args.method == "batched":
        features = gradient_features(model, items, "train", tokenizer.pad_token_id, projector, args.batch_size, moments)
    else:
        features = one_at_a_time(model, items, projector, moments)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    torch.save(features, args.features_out)
    report = {"seconds": seconds, "examples_per_s": len(items) / seconds,
              "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "max_rss_before_mib": rss_before / 1024,
              "n_params": projector.n_params, "mean_tokens": sum(len(i["sequences"][0]["input_ids"]) for i in items) / len(items)}
    if args.device.startswith("cuda"):
        report["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="examples")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--words", type=int, default=60, help="max words per prompt and per answer")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--cache-mb", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--method", choices=["batched", "loop"], help=argparse.SUPPRESS)
    ap.add_argument("--features-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    if args.method:
        child(args)
        return

    results, features = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("loop", "batched"):
            out = Path(tmp) / f"{method}.pt"
            argv = [a for a in sys.argv[1:] if a != "--device"] + ["--device", args.device, "--method", method,
                                                                   "--features-out", str(out)]
            done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{method} run failed:\n{done.stderr}")
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            features[method] = torch.load(out).float()
    cosine = torch.nn.functional.cosine_similarity(features["loop"], features["batched"], dim=1)
    loop, batched = results["loop"], results["batched"]
    print(f"device {args.device}, torch threads {args.threads}; model hidden {args.hidden}, {args.layers} layers, "
          f"LoRA r={args.rank} q/k/v/o: {loop['n_params']} parameters; {args.n} examples, "
          f"{loop['mean_tokens']:.0f} tokens on average; dim {args.dim}; batch size {args.batch_size}")
    for name, r in (("one at a time (LESS)", loop), ("batched (sftlab)", batched)):
        memory = f"max RSS {r['max_rss_mib']:.0f} MiB (after setup {r['max_rss_before_mib']:.0f} MiB)"
        if "cuda_peak_mib" in r:
            memory += f", CUDA peak {r['cuda_peak_mib']:.0f} MiB"
        print(f"{name:22s} {r['examples_per_s']:8.2f} examples/s  ({r['seconds']:.2f} s)  {memory}")
    print(f"speed-up {batched['examples_per_s'] / loop['examples_per_s']:.2f}x  "
          f"cosine(loop, batched) min {cosine.min():.5f} mean {cosine.mean():.5f}")


if __name__ == "__main__":
    main()
