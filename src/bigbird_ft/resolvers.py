"""OmegaConf resolvers the configs use; registered when ``bigbird_ft`` is imported.

``${pretrained_or_scratch:${model.pretrained},A,B}`` is A for an encoder with pretrained weights and B for
one from random init: ``conf/optim/auto.yaml`` picks the recipe with it, so the recipe follows the encoder
(a `model.pretrained=` override included) in one visible place instead of code that second-guesses the
config.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def pretrained_or_scratch(pretrained: Any, if_pretrained: Any, if_scratch: Any) -> Any:
    return if_pretrained if pretrained not in (None, "", "null") else if_scratch


def register() -> None:
    OmegaConf.register_new_resolver("pretrained_or_scratch", pretrained_or_scratch, replace=True)


register()
