"""buildsys: declarative builds of verified deployment artifacts for deep-learning models."""

__version__ = "0.1.0"
