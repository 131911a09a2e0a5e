"""Look-ups of the targeted baselines' score rules (baselines.smk): bm25 / dsir on the CPU, rds / rds_plus on a GPU."""

LEXICAL_SELECTORS = ("bm25", "dsir")
REPRESENTATION_SELECTORS = ("rds", "rds_plus")


def baseline_selection(wildcards):
    """The bm25 / dsir / rds / rds_plus selection named by a selector id (any of its fractions: one score table)."""
    for recipe in CFG["recipes"].values():
        sel = recipe["selection"]
        if sel["name"] in LEXICAL_SELECTORS + REPRESENTATION_SELECTORS and selector_id(sel) == wildcards.selector:
            return sel
    raise WorkflowError(f"no recipe selects with {wildcards.selector}")


def baseline_validation_file(wildcards):
    return validation_path(baseline_selection(wildcards)["validation"])


def pool_hidden_states_file(wildcards):
    """The pool's hidden states pooled as the selector pools them (rds: last token; rds_plus: weighted mean)."""
    pooling = "last" if baseline_selection(wildcards)["name"] == "rds" else "weighted_mean"
    return f"results/{wildcards.model}/{wildcards.dataset}/hidden_states/{pooling}.pt"


def baseline_flags(wildcards):
    """The scoring method and its settings (also the rule's params: a change rescores)."""
    sel = baseline_selection(wildcards)
    return ["--method", sel["name"], "--shots", str(sel["shots"]), "--min-words", str(sel.get("min_words", 0))]


def representation_flags():
    """The forward pass takes the gradient features' truncation, token budget and dtype (LESS's RDS beside LESS)."""
    g = CFG["gradients"]
    return ["--max-length", str(warmup_training()["max_length"]), "--max-tokens", str(g["max_tokens"]),
            "--dtype", g["dtype"]]
