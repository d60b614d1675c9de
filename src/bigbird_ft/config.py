"""From config to objects: the resolvers the yaml files use, and the lists of callbacks and loggers.

``${pretrained_or_scratch:${model.pretrained},A,B}`` is A for an encoder with pretrained weights and B
for one from random init: ``conf/optim/auto.yaml`` picks the recipe with it, so the recipe follows the
encoder (a ``model.pretrained=`` override included) in one visible place. Registered when ``bigbird_ft``
is imported; this module imports only omegaconf at load time, so that stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf

from .errors import UserError

T = TypeVar("T")


def pretrained_or_scratch(pretrained: Any, if_pretrained: Any, if_scratch: Any) -> Any:
    return if_pretrained if pretrained not in (None, "", "null") else if_scratch


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("pretrained_or_scratch", pretrained_or_scratch, replace=True)


class Registry(Generic[T]):
    """Name -> class for the parts a config names by ``name`` (attention backends, heads): one module
    per option registers itself, and a config dict builds one with ``build(**config, **context)``.

    Hydra's ``_target_`` would name classes by import path; a registry keeps the short names that
    checkpoints already store (``attention.name``, ``head.name``).
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key  # "attention backend", "attention": for the one-line error
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            raise UserError(f"unknown {self.kind} '{name}'; set {self.key}= to one of {', '.join(self.names())}")
        return self._classes[name]

    def build(self, name: str, *args: Any, **options: Any) -> T:
        return self.get(name)(*args, **options)


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Every ``_target_`` entry of an optional group of objects (``callbacks``, ``logger``)."""
    import hydra

    if not cfg:
        return []
    return [hydra.utils.instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


register_resolvers()
