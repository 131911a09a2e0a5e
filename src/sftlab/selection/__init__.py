"""Selectors (the data-selection axis). Importing this package registers every selector."""

from .base import SELECTORS, Selector, build_selector, register_selector, take_fraction

__all__ = ["SELECTORS", "Selector", "build_selector", "register_selector", "take_fraction"]
