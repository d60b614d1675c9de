"""bigbird_ft: fine-tune BigBird long-document classifiers with Lightning + Hydra."""

__version__ = "0.1.0"
