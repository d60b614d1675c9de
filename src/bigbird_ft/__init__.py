"""bigbird_ft: fine-tune BigBird long-document classifiers with Lightning + Hydra."""

from . import resolvers  # noqa: F401  (the configs' ${pretrained_or_scratch:...})

__version__ = "0.1.0"


def load_exported(path):  # noqa: ANN001, ANN201  (lazy: importing the package stays cheap)
    """Rebuild a classifier from an exported ``hf_model/`` folder; see ``bigbird_ft.export``."""
    from .export import load_exported as _load_exported

    return _load_exported(path)
