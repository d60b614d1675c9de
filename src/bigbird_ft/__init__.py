"""bigbird_ft: fine-tune BigBird long-document classifiers with Lightning + Hydra."""

from . import config  # noqa: F401  (registers the configs' ${pretrained_or_scratch:...} resolver)

__version__ = "0.1.0"


def load_exported(path):  # noqa: ANN001, ANN201  (lazy: importing the package stays cheap)
    """Rebuild a classifier from an exported ``hf_model/`` folder; see ``bigbird_ft.export``."""
    from .inference.export import load_exported as _load_exported

    return _load_exported(path)
