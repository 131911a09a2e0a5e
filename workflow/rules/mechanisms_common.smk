"""Look-ups of the mechanism reports (mechanisms.smk): which files and runs each paper's mechanism table compares.

Each spec is plain data (files, runs, baselines) passed to scripts/mechanisms.py as a param, so a change of what is
compared reruns that report; an empty spec means the config has nothing to show for that paper and the report is
not built.
"""

MECHANISM_PAPERS = {"sftmix": "SFTMix", "selection": "LESS / ROSE", "minorsft": "MinorSFT",
                    "dtm": "Disperse-Then-Merge", "nll": "Main"}
DEVIATION_OBJECTIVES = reference_objectives()  # their loss compares the policy with πref


def base_recipe(recipe):
    """(recipe without its seed suffix, seed or None)."""
    return tuple(CFG["_seeds"].get(recipe, (recipe, None)))


def nll_benchmarks(items):
    return [b for b in PLAN.report_benchmarks() if CFG["benchmarks"][b]["type"] == "nll"
            and CFG["benchmarks"][b]["items"] == items]


def scored_runs(benchmark):
    """(model, dataset) → {base recipe: [(recipe, seed), ...]} of the experiment runs scored on ``benchmark``."""
    out = {}
    for (m, d, r), benches in PLAN.experiment_runs().items():
        if benchmark in benches:
            base, seed = base_recipe(r)
            out.setdefault((m, d), {}).setdefault(base, []).append((r, seed))
    return out


def answers_entries(m, d, benchmark, runs):
    """Answers files of the per-seed runs of these base recipes on a benchmark."""
    return [{"model": m, "dataset": d, "benchmark": benchmark, "recipe": base, "seed": seed,
             "path": f"{PLAN.run_dir(m, d, r)}/answers/{benchmark}.jsonl"}
            for base, seeded in sorted(runs.items()) for r, seed in seeded]


def knows_quality(dataset):
    """Only the demo corpus records each example's true quality (source demo/{family}/{quality})."""
    return CFG["datasets"][dataset]["source"] == "demo"


def sftmix_mechanism_spec():
    pairs = [(m, d) for (m, d) in PLAN.confidence_pairs() if knows_quality(d)]
    return {"n_resamples": 2000, "seed": 0,
            "pairs": [{"model": m, "dataset": d, "confidence": f"results/{m}/{d}/confidence.parquet",
                       "train": f"results/data/{d}/train.jsonl"} for m, d in pairs]}


def selection_mechanism_spec():
    pairs = {}
    for (m, d, r) in PLAN.experiment_runs():
        sel = CFG["recipes"][r]["selection"]
        if sel["name"] == "full" or not knows_quality(d):
            continue
        entry = {"selector": selector_id(sel), "name": sel["name"], "fraction": float(sel["fraction"]),
                 "ids": PLAN.recipe_selection_ids(m, d, CFG["recipes"][r]),
                 "validation": sel.get("validation")}
        pairs.setdefault((m, d), {})[entry["ids"]] = entry
    out = []
    for (m, d), selections in sorted(pairs.items()):
        names = sorted({s["validation"] for s in selections.values() if s["validation"]})
        out.append({"model": m, "dataset": d, "train": f"results/data/{d}/train.jsonl",
                    "selections": [selections[k] for k in sorted(selections)],
                    "validation": {n: f"results/data/{CFG['validation'][n]['dataset']}/validation/{n}.jsonl"
                                   for n in names}})
    return {"pairs": out}


def _single_full(recipe):
    r = CFG["recipes"][recipe]
    return r["composition"]["name"] == "single" and r["selection"]["name"] == "full"


def minorsft_mechanism_spec():
    """Per held-out nll benchmark and model × dataset: the full-data single runs of SFT, MinorSFT and DPO-SFT,
    grouped by learning rate; a group needs its SFT run (report.baseline where it qualifies, else the first NTP one)."""
    groups, answers = [], []
    for b in nll_benchmarks("heldout"):
        for (m, d), runs in sorted(scored_runs(b).items()):
            by_lr = {}
            for base in sorted(runs):
                r = CFG["recipes"][base]
                if _single_full(base) and r["objective"]["name"] in (BASELINE_OBJECTIVE, *DEVIATION_OBJECTIVES):
                    by_lr.setdefault(r["training"]["learning_rate"], []).append(base)
            for lr, bases in sorted(by_lr.items()):
                sft = [x for x in bases if CFG["recipes"][x]["objective"]["name"] == BASELINE_OBJECTIVE]
                if not sft or not any(CFG["recipes"][x]["objective"]["name"] in DEVIATION_OBJECTIVES for x in bases):
                    continue
                baseline = CFG["report"]["baseline"] if CFG["report"]["baseline"] in sft else sft[0]
                chosen = [baseline] + [x for x in bases if x not in sft]
                groups.append({"model": m, "dataset": d, "benchmark": b, "baseline": baseline,
                               "runs": [{"recipe": x, "objective": CFG["recipes"][x]["objective"]["name"],
                                         "learning_rate": lr, "seeds": len(runs[x])} for x in chosen]})
                answers += answers_entries(m, d, b, {x: runs[x] for x in chosen})
    return {"groups": groups, "answers": answers}


def dtm_mechanism_spec():
    """Per exam nll benchmark and model × dataset: each composed recipe beside the full-data single run with the same
    objective, both scored on the exam; the held-out nll benchmark both have, if any, beside it."""
    groups, answers = [], []
    heldout = nll_benchmarks("heldout")
    for b in nll_benchmarks("exam"):
        for (m, d), runs in sorted(scored_runs(b).items()):
            pairs = []
            for base in sorted(runs):
                r = CFG["recipes"][base]
                if r["composition"]["name"] == "single":
                    continue
                match = [x for x in sorted(runs) if _single_full(x) and CFG["recipes"][x]["objective"] == r["objective"]]
                if match:
                    pairs.append({"recipe": base, "baseline": match[0], "composition": r["composition"]["name"],
                                  "seeds": len(runs[base])})
            if not pairs:
                continue
            names = {x for p in pairs for x in (p["recipe"], p["baseline"])}
            held = next((h for h in heldout if names <= set(scored_runs(h).get((m, d), {}))), None)
            groups.append({"model": m, "dataset": d, "benchmark": b, "heldout_benchmark": held, "pairs": pairs})
            answers += answers_entries(m, d, b, {x: runs[x] for x in names})
            if held:
                answers += answers_entries(m, d, held, {x: scored_runs(held)[(m, d)][x] for x in names})
    return {"groups": groups, "answers": answers}


def nll_mechanism_spec():
    groups, answers = [], []
    for b in nll_benchmarks("heldout") + nll_benchmarks("exam"):
        for (m, d), runs in sorted(scored_runs(b).items()):
            groups.append({"model": m, "dataset": d, "benchmark": b, "baseline": CFG["report"]["baseline"],
                           "recipes": sorted(runs)})
            answers += answers_entries(m, d, b, runs)
    return {"groups": groups, "answers": answers}


MECHANISM_SPECS = {"sftmix": sftmix_mechanism_spec, "selection": selection_mechanism_spec,
                   "minorsft": minorsft_mechanism_spec, "dtm": dtm_mechanism_spec, "nll": nll_mechanism_spec}


def mechanism_spec(paper):
    return MECHANISM_SPECS[paper]()


def mechanism_built(paper):
    spec = mechanism_spec(paper)
    return bool(spec.get("pairs") or spec.get("groups"))


def mechanism_inputs(paper):
    """Every file the paper's spec names."""
    spec = mechanism_spec(paper)
    files = [e["path"] for e in spec.get("answers", [])]
    for pair in spec.get("pairs", []):
        files += [pair["train"]] + ([pair["confidence"]] if "confidence" in pair else [])
        files += [s["ids"] for s in pair.get("selections", [])] + list(pair.get("validation", {}).values())
    return sorted(set(files))


def mechanism_files(paper):
    return [f"reports/tables/mechanism_{paper}.{ext}" for ext in ("md", "csv", "tex")] + [
        f"reports/figures/mechanism_{paper}.{ext}" for ext in ("png", "pdf")]


def mechanism_outputs(paper):
    """The files by name (table, table_csv, table_tex, figure, figure_pdf); the table (CSV) and figure (PNG) are
    shown in report.html under the paper's category."""
    names = ("table", "table_csv", "table_tex", "figure", "figure_pdf")
    subcategory = {".csv": "Tables", ".png": "Figures"}
    return {name: report(f, caption=f"../report/mechanism_{paper}.rst", category=MECHANISM_PAPERS[paper],
                         subcategory=subcategory[Path(f).suffix]) if Path(f).suffix in subcategory else f
            for name, f in zip(names, mechanism_files(paper))}
