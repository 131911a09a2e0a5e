"""The composition axis: ``single`` runs, Disperse-Then-Merge (K shards → K sub-models → one merge), or a seed
soup (full-data runs with different seeds → one merge). ``members`` names and configures the member runs.

Merge methods are registered in ``merge.MERGE_METHODS`` (config name → mergekit method and parameters);
adding a mergekit method is one entry there. ``fisher`` (Fisher merging) is our own, in ``fisher``, dispatched by
``merge.merge``.
"""

from .disperse import DISPERSE_METHODS, kmeans_shards, random_shards, response_embeddings, shard_summary, write_shards
from .members import COMPOSED, mean_train_log, member_names, member_owner, member_training
from .merge import MERGE_METHODS, MERGE_SPACES, MergeMethod, merge, merge_adapters, merge_models, mergekit_config

__all__ = [
    "COMPOSED",
    "DISPERSE_METHODS",
    "MERGE_METHODS",
    "MERGE_SPACES",
    "MergeMethod",
    "kmeans_shards",
    "merge",
    "merge_adapters",
    "merge_models",
    "mergekit_config",
    "mean_train_log",
    "member_names",
    "member_owner",
    "member_training",
    "random_shards",
    "response_embeddings",
    "shard_summary",
    "write_shards",
]
