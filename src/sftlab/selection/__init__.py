"""Selectors (the data-selection axis). Importing this package registers every selector."""

from . import influence  # noqa: F401  (registers the "less" and "rose" selectors)
from . import confidence  # noqa: F401  (registers "confident", "unconfident")
from . import baselines  # noqa: F401  (registers "bm25", "dsir", "rds", "rds_plus")
from .base import SELECTORS, Selector, build_selector, register_selector, selectors_prepared_by, take_fraction

__all__ = ["SELECTORS", "Selector", "build_selector", "register_selector", "selectors_prepared_by", "take_fraction"]
