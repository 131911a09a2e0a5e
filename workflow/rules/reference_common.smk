"""Input functions of the reference rules (reference.smk): πref log-probs and the SFTMix reference run."""


def ref_logprobs_max_length(wildcards):
    """The truncation of log πref: that of the runs on this model × dataset, whose own log-probs it is compared with
    (MinorSFT / DPO-SFT weights, the deviation m_θ). One table per pair, so its runs must truncate alike."""
    lengths = {CFG["recipes"][r]["training"]["max_length"] for (m, d, r) in PLAN.experiment_runs()
               if (m, d) == (wildcards.model, wildcards.dataset)}
    if len(lengths) > 1:
        raise WorkflowError(f"runs on {wildcards.model} × {wildcards.dataset} use training.max_length "
                            f"{sorted(lengths)}: their reference log-probs are one table, so use one max_length per "
                            "model and dataset")
    return lengths.pop() if lengths else CFG["training"]["max_length"]


#: the training settings a run's forward path depends on (sftlab.training.forward_path)
FORWARD_PATH_KEYS = ("finetuning", "lora", "precision", "distributed", "attn_implementation")


def ref_logprobs_training(wildcards):
    """The training settings (JSON) whose forward path log πref is scored through: those of the runs on this model ×
    dataset whose loss compares their own log-probs with it (MinorSFT, DPO-SFT), so that r = 0 at step 0; else those
    of all its runs. One table per pair, so those runs must share the path: finetuning, precision, sharding."""
    runs = [CFG["recipes"][r] for (m, d, r) in PLAN.experiment_runs() if (m, d) == (wildcards.model, wildcards.dataset)]
    users = [r for r in runs if OBJECTIVES[r["objective"]["name"]].needs_reference()] or runs
    sharded = PLAN.processes_of("train") > 1
    paths = {(r["training"]["finetuning"], r["training"]["precision"], sharded and r["training"]["distributed"])
             for r in users}
    if len(paths) > 1:
        raise WorkflowError(f"runs on {wildcards.model} × {wildcards.dataset} use training.finetuning / precision / "
                            f"distributed {sorted(map(str, paths))}: their reference log-probs are one table, scored "
                            "through their forward path, so use one of each per model and dataset")
    training = users[0]["training"] if users else CFG["training"]
    # only what the path depends on: another learning rate is the same table
    keys = [k for k in FORWARD_PATH_KEYS if k in training and (k != "lora" or training["finetuning"] == "lora")]
    return PLAN.as_json({k: training[k] for k in keys})


def ref_logprobs_processes(wildcards):
    return PLAN.processes_of("train")


def reference_dir(wildcards):
    return f"results/{wildcards.model}/{wildcards.dataset}/reference"


def reference_trainer_checkpoints(wildcards):
    return f"{reference_dir(wildcards)}/trainer-checkpoints"


def tsne_model_dirs(wildcards):
    return list(PLAN.tsne_models(wildcards).values())


def tsne_model_args(wildcards):
    return PLAN.table_args("--model", PLAN.tsne_models(wildcards))


def reference_checkpoint_dirs(wildcards):
    return PLAN.reference_checkpoints(wildcards.model, wildcards.dataset)


def reference_checkpoint_args(wildcards):
    """train_reference's extra arguments: the run saves the reference checkpoints beside its model."""
    return ["--epoch-models", f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/reference",
            "--save-epochs", *map(str, PLAN.REFERENCE_CHECKPOINTS)]


def reference_run_alternation(position):
    """The models, datasets or recipes (``position`` 0, 1, 2) of the runs that are their pair's reference run."""
    return PLAN._alternation({(m, d, r)[position] for (m, d), r in PLAN.REFERENCE_RUNS.items()})
