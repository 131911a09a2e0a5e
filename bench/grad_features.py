"""Benchmark of the LESS / ROSE gradient-feature stage (issue 15), ratios measured in one run, one torch thread.

Times are CPU seconds of the process (``time.process_time``): with one thread that is the wall time an unshared
core would take, and it does not count the waits of a machine shared with other jobs.

1. per-example gradients on a small random Llama + LoRA (q/k/v/o), B examples of T tokens (T = 256, 512): the plain
   batched forward+backward the hooks ride on, the hooked path (sftlab), torch.func.vmap (the former path, eager
   attention) and a loop of one-example backward passes (LESS). Each in its own child process: peak memory is the
   rise of max RSS over the process's size after setup (first call), time the best of two further calls.
2. projection cost per example at LESS's real size, P = 134,217,728 (Llama-2-7B, LoRA r 128 on q/k/v/o: 256 matrices
   of 128 × 4096 and 4096 × 128), dim 8192, with synthetic per-matrix gradients: the former path (NumPy blocks of the
   dense matrix, projected 16 examples at a time; a copy of it lives below, it is gone from the library) is timed on a
   few of its 32,768 blocks and extrapolated; the new sparse JL on all 256 matrices, first call (generating its index)
   and cached; the new dense on a few blocks, extrapolated; Adam preconditioning on all 256 matrices.
3. fidelity: (a) the tiny model: Pearson correlation of feature cosines with the exact (unprojected) Adam-
   preconditioned gradient cosines; (b) a workflow directory's pool (--demo-dir: one holding the model, pool,
   preference validation set and warmup checkpoints, e.g. the demo's or the tiny config's): the ROSE top-10% of the
   sparse projection vs the former dense one over --seeds seeds each, beside dense vs dense across seeds (the
   projection's own noise floor) and each vs the exact unprojected influence.

    .venv/bin/python bench/grad_features.py [--sections grads,projection,fidelity] [--demo-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sftlab.selection.gradients import (
    adam_precondition,
    backward_per_example,
    batch_inputs,
    example_losses,
    lora_parameters,
    reference_logps,
    token_batches,
)
from sftlab.selection.projection import build_projection

LESS_P = 134_217_728
LESS_SHAPES = [(128, 4096), (4096, 128)] * 128  # lora_A, lora_B of q/k/v/o in 32 layers
DIM = 8192


# ----------------------------------------------------------------------------- the former dense path (pre-issue 15)


OLD_BLOCK_ROWS = 4096
OLD_GROUP = 16  # gradients projected together: each call streams the whole matrix


def old_rademacher_block(seed: int, block: int, rows: int, dim: int) -> torch.Tensor:
    """Block of the former projection matrix: NumPy PCG64 keyed by (seed, block), unpacked bits → fp32 ±1/sqrt(dim)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block])))
    bits = np.unpackbits(rng.integers(0, 256, size=(rows, (dim + 7) // 8), dtype=np.uint8), axis=1, count=dim)
    return torch.from_numpy(bits).to(torch.float32).mul_(2).sub_(1).div_(math.sqrt(dim))


def old_project(x: torch.Tensor, seed: int, dim: int) -> torch.Tensor:
    """x (B, P) @ R, R regenerated block by block (the former cache held 8 of LESS's 32,768 blocks)."""
    out = torch.zeros(x.shape[0], dim)
    for b in range(math.ceil(x.shape[1] / OLD_BLOCK_ROWS)):
        chunk = x[:, b * OLD_BLOCK_ROWS:(b + 1) * OLD_BLOCK_ROWS]
        out += chunk @ old_rademacher_block(seed, b, chunk.shape[1], dim)
    return out


# ----------------------------------------------------------------------------- 1. per-example gradients


def small_llama(hidden: int, layers: int, rank: int):
    from peft import LoraConfig, get_peft_model

    from sftlab.models.random_init import build_random_model

    torch.manual_seed(0)
    model, tokenizer = build_random_model(hidden_size=hidden, num_layers=layers, num_heads=hidden // 64,
                                          intermediate_size=hidden * 8 // 3,
                                          max_position_embeddings=1024)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval(), tokenizer


def synthetic_items(n: int, tokens: int, vocab: int, seed: int = 0) -> list[dict]:
    """n sequences of ``tokens`` tokens, the loss on the second half (the response)."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for k in range(n):
        ids = torch.randint(3, vocab, (tokens,), generator=gen).tolist()
        items.append({"id": f"x{k}", "subtask": "all",
                      "sequences": [{"input_ids": ids, "labels": [-100] * (tokens // 2) + ids[tokens // 2:]}]})
    return items


def run_method(method: str, model, params, inputs) -> None:
    if method == "plain":
        torch.autograd.grad(example_losses(model, inputs, "ntp", 0.1).sum(), list(params.values()))
    elif method == "hooks":
        # production: each matrix's gradients are consumed (projected) at once and dropped
        backward_per_example(model, params, inputs, "ntp", 0.1, lambda k, name, g: None)
    elif method == "vmap":
        vmap_gradients(model, params, inputs)
    else:
        for b in range(inputs["input_ids"].shape[0]):
            one = {key: value[b:b + 1] for key, value in inputs.items()}
            torch.autograd.grad(example_losses(model, one, "ntp", 0.1).sum(), list(params.values()))


def vmap_gradients(model, params, inputs) -> torch.Tensor:
    """The former path: vmap over grad of a functional_call, eager attention (SDPA has no vmap rule)."""
    from torch.func import functional_call, grad, vmap

    from sftlab.objectives.base import sequence_logps

    def loss(p, item):
        logits = functional_call(model, p, args=(), strict=False,
                                 kwargs={"input_ids": item["input_ids"], "attention_mask": item["attention_mask"]}).logits
        logps, n = sequence_logps(logits, item["labels"])
        return -logps[0] / n[0]

    detached = {name: p.detach() for name, p in params.items()}
    grads = vmap(grad(loss), in_dims=(None, 0))(detached, inputs)
    return torch.cat([grads[name].flatten(1) for name in params], dim=1)


def grads_child(args) -> None:
    model, _ = small_llama(args.hidden, args.layers, args.rank)
    if args.method == "vmap":
        model.get_base_model().set_attn_implementation("eager")
    params = lora_parameters(model)
    vocab = model.get_base_model().config.vocab_size
    inputs = batch_inputs(synthetic_items(args.batch, args.tokens, vocab), 0, torch.device("cpu"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_method(args.method, model, params, inputs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    times = []
    for _ in range(2):
        start = time.process_time()
        run_method(args.method, model, params, inputs)
        times.append(time.process_time() - start)
    print(json.dumps({"seconds": min(times), "peak_mib": peak / 1024,
                      "n_params": sum(p.numel() for p in params.values())}))


def bench_grads(args) -> None:
    print(f"\n1. per-example gradients: random Llama hidden {args.hidden}, {args.layers} layers, LoRA r {args.rank} "
          f"q/k/v/o, {args.batch} examples a batch, CPU, 1 thread; memory = rise of max RSS over setup")
    for tokens in (256, 512):
        rows = {}
        for method in ("plain", "hooks", "vmap", "loop"):
            argv = [sys.executable, __file__, "--child", "grads", "--method", method, "--tokens", str(tokens),
                    "--batch", str(args.batch), "--hidden", str(args.hidden), "--layers", str(args.layers),
                    "--rank", str(args.rank)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{method} at {tokens} tokens failed:\n{done.stderr[-3000:]}")
            rows[method] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  T = {tokens} (P = {rows['plain']['n_params']:,}):")
        for method, r in rows.items():
            print(f"    {method:6s} {r['seconds']:7.3f} s  {r['peak_mib']:7.0f} MiB")
        h, v, p, lo = rows["hooks"], rows["vmap"], rows["plain"], rows["loop"]
        print(f"    hooks / vmap: memory {h['peak_mib'] / v['peak_mib']:.2f}x, time {h['seconds'] / v['seconds']:.2f}x;"
              f"  hooks / plain batched: time {h['seconds'] / p['seconds']:.2f}x, memory "
              f"{h['peak_mib'] / p['peak_mib']:.2f}x;  hooks / loop: time {h['seconds'] / lo['seconds']:.2f}x, "
              f"memory {h['peak_mib'] / lo['peak_mib']:.2f}x")


# ----------------------------------------------------------------------------- 2. projection at P = 134M


def bench_projection(args) -> dict:
    print(f"\n2. projection cost per example at P = {LESS_P:,} (256 LoRA matrices of 524,288), dim {DIM}, CPU, 1 thread")
    gen = torch.Generator().manual_seed(0)
    out = {}
    # former path: each group of 16 streams all 32,768 blocks (the 1 GiB cache kept 8): time a few, extrapolate
    n_blocks = LESS_P // OLD_BLOCK_ROWS
    x = torch.randn(OLD_GROUP, OLD_BLOCK_ROWS, generator=gen)
    start = time.process_time()
    for b in range(args.old_blocks):
        x @ old_rademacher_block(0, b, OLD_BLOCK_ROWS, DIM)
    per_block = (time.process_time() - start) / args.old_blocks
    out["old"] = per_block * n_blocks / OLD_GROUP
    print(f"  former dense (NumPy blocks, groups of {OLD_GROUP}): {per_block:.3f} s a block, timed on "
          f"{args.old_blocks} of {n_blocks:,} blocks and extrapolated: {out['old']:.0f} s per example "
          f"({out['old'] * OLD_GROUP / 3600:.2f} h per group of {OLD_GROUP})")
    # new sparse JL on every matrix: first call generates and caches the index, later calls reuse it
    sjlt = build_projection("sjlt", DIM, 0, cache_bytes=LESS_P * 4)
    batch = args.proj_batch
    grads = [torch.randn(batch, rows * cols, generator=gen) for rows, cols in LESS_SHAPES[:2]]
    for label in ("first call (index generated)", "cached index"):
        start = time.process_time()
        for k in range(len(LESS_SHAPES)):
            sjlt.project(k, grads[k % 2])
        out[f"sjlt {label}"] = (time.process_time() - start) / batch
    generated = out["sjlt first call (index generated)"] * batch - out["sjlt cached index"] * batch
    out["sjlt uncached, batch 16"] = out["sjlt cached index"] + generated / 16
    for label in ("first call (index generated)", "cached index", "uncached, batch 16"):
        print(f"  sparse JL, {label}: {out['sjlt ' + label]:.3f} s per example "
              f"({out['old'] / out['sjlt ' + label]:,.0f}x faster than the former path)")
    # Adam preconditioning of all 256 matrices (not part of either projection, the same in both paths)
    m, v = torch.randn(grads[0].shape[1], generator=gen) * 1e-4, torch.rand(grads[0].shape[1], generator=gen) * 1e-7
    start = time.process_time()
    for k in range(len(LESS_SHAPES)):
        adam_precondition(grads[k % 2], m, v, (0.9, 0.999))
    out["precondition"] = (time.process_time() - start) / batch
    print(f"  Adam preconditioning (both paths): {out['precondition']:.3f} s per example")
    # new dense, counter-based: a few of its 1024-row blocks, extrapolated
    dense = build_projection("dense", DIM, 0, cache_bytes=0)
    xb = torch.randn(OLD_GROUP, dense.block_rows, generator=gen)
    start = time.process_time()
    for b in range(args.old_blocks):
        xb @ dense.block(0, b * dense.block_rows, (b + 1) * dense.block_rows)
    per_block = (time.process_time() - start) / args.old_blocks
    out["dense"] = per_block * LESS_P / dense.block_rows / OLD_GROUP
    print(f"  dense, counter-based (groups of {OLD_GROUP}): {per_block:.3f} s a block of {dense.block_rows} rows, "
          f"{args.old_blocks} blocks timed and extrapolated: {out['dense']:.0f} s per example "
          f"({out['old'] / out['dense']:.2f}x the former path's speed)")
    return out


# ----------------------------------------------------------------------------- 3. fidelity


def per_module_gradients(model, items, kind, moments=None, betas=(0.9, 0.999), beta=0.1, max_tokens=4096):
    """[(N, n_k) per LoRA matrix k]: exact per-example gradients (Adam-preconditioned with ``moments``), item order."""
    params = lora_parameters(model)
    rows: dict[int, list[tuple[list[int], torch.Tensor]]] = {k: [] for k in range(len(params))}
    for index in token_batches(items, max_tokens):
        inputs = batch_inputs([items[i] for i in index], 0, torch.device("cpu"))
        if kind == "dpo":
            inputs["ref_logps"] = reference_logps(model, inputs)

        def keep(k, name, g, index=index):
            g = g.flatten(1)
            if moments is not None:
                g = adam_precondition(g, moments[k][0], moments[k][1], betas)
            rows[k].append((index, g))

        backward_per_example(model, params, inputs, kind, beta, keep)
    out = []
    for k in range(len(params)):
        order = [i for index, _ in rows[k] for i in index]
        stacked = torch.cat([g for _, g in rows[k]])
        out.append(stacked[torch.argsort(torch.tensor(order))])
    return out


def features(grads: list[torch.Tensor], projection: str, seed: int, dim: int) -> torch.Tensor:
    """Unit-norm features of per-module gradients; ``old`` is the former NumPy dense path on the concatenation."""
    if projection == "exact":
        return torch.nn.functional.normalize(torch.cat(grads, dim=1), dim=1)
    if projection == "old":
        return torch.nn.functional.normalize(old_project(torch.cat(grads, dim=1), seed, dim), dim=1)
    proj = build_projection(projection, dim, seed, cache_bytes=0)
    return torch.nn.functional.normalize(sum(proj.project(k, g) for k, g in enumerate(grads)), dim=1)


def off_diagonal_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    mask = ~torch.eye(a.shape[0], dtype=torch.bool)
    return float(np.corrcoef((a @ a.T)[mask].numpy(), (b @ b.T)[mask].numpy())[0, 1])


def bench_tiny_fidelity(args) -> None:
    from peft import LoraConfig, get_peft_model

    from sftlab.models.random_init import build_random_model

    torch.manual_seed(0)
    model, _ = build_random_model()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.eval()
    params = lora_parameters(model)
    gen = torch.Generator().manual_seed(1)
    moments = [(torch.randn(p.numel(), generator=gen) * 1e-3, torch.rand(p.numel(), generator=gen) * 1e-5)
               for p in params.values()]
    items = synthetic_items(64, 48, model.get_base_model().config.vocab_size)
    for k, item in enumerate(items):  # lengths 24..48: padding inside the batches
        seq = item["sequences"][0]
        n = 24 + k % 25
        seq["input_ids"], seq["labels"] = seq["input_ids"][:n], seq["labels"][:n]
    grads = per_module_gradients(model, items, "train", moments)
    exact = features(grads, "exact", 0, 0)
    n_params = exact.shape[1]
    print(f"\n3a. fidelity on the tiny model (random Llama hidden 64, 2 layers, LoRA r 8: P = {n_params:,}), 64 "
          f"examples, random Adam moments: Pearson r of the 2,016 pairwise feature cosines with the exact "
          f"Adam-preconditioned gradient cosines")
    for dim in (1024, 8192):
        cells = [f"{name} {off_diagonal_correlation(features(grads, name, 0, dim), exact):.4f}"
                 for name in ("sjlt", "dense", "old")]
        print(f"  dim {dim}: " + ", ".join(cells) + "  (old = the former NumPy dense path)")


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def bench_demo_fidelity(args) -> None:
    """ROSE influence on the demo pool: exact per-example gradients once per checkpoint, then each projection."""
    import yaml

    from sftlab.io import read_jsonl
    from sftlab.selection.gradients import encode_rows, load_lora_checkpoint, module_moments, take_shots
    from sftlab.selection.influence import aggregate_subtasks, influence_matrix
    from sftlab.selection.warmup import checkpoint_weights, load_epoch_info, load_moments

    root = Path(args.demo_dir)
    config = yaml.safe_load((root / "config.yaml").read_text())
    model_name, dataset = next(iter(config["models"])), next(iter(config["datasets"]))
    vset = next(name for name, v in config["validation"].items() if v["split"] == "pairs")
    dim = config["gradients"]["dim"]
    max_length = {**config["training"], **config["warmup"]["training"]}["max_length"]
    checkpoints = sorted((root / f"results/{model_name}/{dataset}/warmup").glob("checkpoint-*"))
    pool = read_jsonl(root / f"results/data/{dataset}/train.jsonl")
    pairs = take_shots(read_jsonl(root / f"results/data/{dataset}/validation/{vset}.jsonl"),
                      config["validation"][vset]["shots"])
    # the counter-based dense is left out: its integer hashing takes minutes a call on a CPU at this P (section 2)
    seeds = range(args.seeds)
    variants = [("old", s) for s in seeds] + [("sjlt", s) for s in seeds] + [("exact", 0)]
    max_tokens = config["gradients"]["max_tokens"]
    train, val = {v: [] for v in variants}, {v: [] for v in variants}
    start = time.process_time()
    for checkpoint in checkpoints:
        model, tokenizer = load_lora_checkpoint(root / f"resources/models/{model_name}", checkpoint)
        params = lora_parameters(model)
        # padding ids sit at masked positions with label -100: which id the batches pad with changes nothing
        items, _ = encode_rows(tokenizer, pool, "train", max_length)
        val_items, _ = encode_rows(tokenizer, pairs, "dpo", max_length)
        moments = module_moments(params, load_moments(checkpoint), str(checkpoint))
        g_train = per_module_gradients(model, items, "train", moments, tuple(load_epoch_info(checkpoint)["betas"]),
                                       max_tokens=max_tokens)
        g_val = per_module_gradients(model, val_items, "dpo", max_tokens=max_tokens)
        n = g_train[0].shape[0]
        for v in variants:
            both = features([torch.cat([t, w]) for t, w in zip(g_train, g_val)], v[0], v[1], dim)
            train[v].append(both[:n])
            val[v].append(both[n:])
    weights = checkpoint_weights(checkpoints)
    subtasks = [i["subtask"] for i in val_items]
    top = {}
    k = math.ceil(0.1 * n)
    for v in variants:
        score, _ = aggregate_subtasks(influence_matrix(train[v], val[v], weights), subtasks)
        top[v] = set(torch.argsort(score, descending=True)[:k].tolist())
    P = sum(g.shape[1] for g in g_train)
    print(f"\n3b. fidelity on the pool of {root} (model {model_name}, {len(checkpoints)} warmup checkpoints, LoRA "
          f"P = {P:,}, dim {dim}): ROSE top-10% ({k} of {n} examples, {len(val_items)} validation pairs), Jaccard "
          f"overlap"
          f"[{time.process_time() - start:.0f} s]")

    def mean_jaccard(pairs):
        values = [jaccard(top[x], top[y]) for x, y in pairs]
        return f"{np.mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, {len(values)} pairs)"

    old, new = [("old", s) for s in seeds], [("sjlt", s) for s in seeds]
    print(f"  former dense vs former dense, different seeds (noise floor): "
          f"{mean_jaccard([(x, y) for i, x in enumerate(old) for y in old[i + 1:]])}")
    print(f"  sjlt vs former dense, all seed pairs: {mean_jaccard([(x, y) for x in new for y in old])}")
    print(f"  sjlt vs sjlt, different seeds: {mean_jaccard([(x, y) for i, x in enumerate(new) for y in new[i + 1:]])}")
    print(f"  vs exact (unprojected) influence: former dense {mean_jaccard([(x, ('exact', 0)) for x in old])}, "
          f"sjlt {mean_jaccard([(x, ('exact', 0)) for x in new])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="grads,projection,fidelity")
    ap.add_argument("--demo-dir", help="workflow directory with the demo's model, pool, validation set and warmup")
    ap.add_argument("--batch", type=int, default=8, help="examples per batch (section 1)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--old-blocks", type=int, default=3, help="former-path blocks timed (section 2)")
    ap.add_argument("--proj-batch", type=int, default=4, help="examples projected together (section 2)")
    ap.add_argument("--seeds", type=int, default=4, help="projection seeds of each kind (section 3b)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.child == "grads":
        grads_child(args)
        return
    sections = args.sections.split(",")
    if "grads" in sections:
        bench_grads(args)
    if "projection" in sections:
        bench_projection(args)
    if "fidelity" in sections:
        bench_tiny_fidelity(args)
        if args.demo_dir:
            bench_demo_fidelity(args)
        else:
            print("\n3b. demo-pool fidelity skipped: pass --demo-dir (a workflow directory with the demo's warmup)")


if __name__ == "__main__":
    main()
