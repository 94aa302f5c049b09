"""Sample models built by the recipes under ``recipes/``."""
