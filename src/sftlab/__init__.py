"""sftlab: reproduce and compare instruction-tuning methods along three axes (selection × objective × composition)."""

__version__ = "0.1.0"
