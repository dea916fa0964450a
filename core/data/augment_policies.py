"""Stronger per-sample augmentation from torchvision ``transforms.v2``: an automatic policy and random erasing.

Recipe choices (issue 15) on top of the basic crop/flip/jitter; a policy picks a different operation per image,
so they have no batched equivalent and stay on the per-sample path. The order is torchvision's reference
recipe's: ``[crop, flip] -> policy (uint8) -> float -> [jitter] -> normalise -> random erasing``, so an erased
patch is the dataset mean. Policies are a registry (:data:`AUGMENT_POLICIES`): ``trivialaugment``
(``TrivialAugmentWide``), ``randaugment`` (``RandAugment(2, 9)``, timm's ``rand-m9-n2``), ``none``; a new one is
a function and ``@register_augment_policy("augmix")``.
"""

from __future__ import annotations

from collections.abc import Callable

from core.registry import lookup, registrar

__all__ = ["AUGMENT_POLICIES", "erasing_ops", "policy_ops", "register_augment_policy"]

AUGMENT_POLICIES: dict[str, Callable[[], list]] = {}  # name -> the uint8-stage transforms (a fresh list per call)


register_augment_policy = registrar(AUGMENT_POLICIES, "augment_policy")  # @register_augment_policy("name")


@register_augment_policy("none")
def _none() -> list:
    return []


@register_augment_policy("trivialaugment")
def _trivialaugment() -> list:
    from torchvision.transforms import v2

    return [v2.TrivialAugmentWide()]


@register_augment_policy("randaugment")
def _randaugment() -> list:
    from torchvision.transforms import v2

    return [v2.RandAugment(num_ops=2, magnitude=9)]


def check_policy(policy: str, random_erasing: float) -> None:
    """ValueError naming the valid choices (DataConfig calls this at construction)."""
    lookup(AUGMENT_POLICIES, "augment_policy", policy)
    if isinstance(random_erasing, bool) or not isinstance(random_erasing, (int, float)) \
            or not 0.0 <= random_erasing <= 1.0:
        raise ValueError(f"random_erasing must be a probability in [0, 1] (0 = off), got {random_erasing!r}")


def policy_ops(policy: str) -> list:
    """The uint8 stage: the registered policy's transforms (``[]`` for ``none``)."""
    check_policy(policy, 0.0)
    return AUGMENT_POLICIES[policy]()


def erasing_ops(probability: float) -> list:
    """The normalised-float stage: ``[]`` when ``probability`` is 0, else ``RandomErasing(p)`` (value 0)."""
    check_policy("none", probability)
    if probability == 0:
        return []
    from torchvision.transforms import v2

    return [v2.RandomErasing(p=float(probability), value=0)]
