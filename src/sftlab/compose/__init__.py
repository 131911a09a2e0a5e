"""The composition axis: ``single`` runs, or Disperse-Then-Merge (K shards → K sub-models → one merge).

Merge methods are registered in ``merge.MERGE_METHODS`` (config name → mergekit method and parameters);
adding one is one entry there.
"""

from .disperse import DISPERSE_METHODS, kmeans_shards, random_shards, response_embeddings, shard_summary, write_shards
from .merge import MERGE_METHODS, MERGE_SPACES, MergeMethod, merge, merge_adapters, merge_models, mergekit_config

__all__ = [
    "DISPERSE_METHODS",
    "MERGE_METHODS",
    "MERGE_SPACES",
    "MergeMethod",
    "kmeans_shards",
    "merge",
    "merge_adapters",
    "merge_models",
    "mergekit_config",
    "random_shards",
    "response_embeddings",
    "shard_summary",
    "write_shards",
]
