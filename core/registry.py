"""The seams where people extend are registries (name -> factory dicts, as torchvision's and timm's model registries):
``OPTIMIZERS``, ``SCHEDULERS``, ``STRATEGIES``, ``AUGMENT_POLICIES``, ``SWEEP_BACKENDS``, each beside what it holds.
This module gives them one way to add a name and one way to look one up, whose error lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

F = TypeVar("F")


def registrar(table: dict[str, Any], kind: str) -> Callable[[str], Callable[[F], F]]:
    """``register_optimizer = registrar(OPTIMIZERS, "optimizer")``; ``@register_optimizer("name")`` then adds a
    factory (each name once)."""
    def register(name: str) -> Callable[[F], F]:
        def add(factory: F) -> F:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = factory
            return factory
        return add
    return register


def lookup(table: dict[str, Any], kind: str, name: str, *, also: Iterable[str] = ()) -> Any:
    """``table[name]``; an unknown name is a ValueError listing the valid ones (``also``: names handled elsewhere)."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {[*also, *table]}")
    return table[name]
