"""The naming rules of DESIGN §3: versioned packages and noun + past-tense-verb event names."""

from __future__ import annotations

import re

from .._errors import ContractError

_VERSION = re.compile(r"^v[1-9][0-9]*((alpha|beta)[0-9]*)?$")
_WORDS = re.compile(r"[A-Z][a-z0-9]*")
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# Past participles that do not end in -ed; the verb of an event name may be one of these.
_IRREGULAR_PAST = frozenset(
    [
        "Begun",
        "Bought",
        "Broken",
        "Brought",
        "Built",
        "Caught",
        "Chosen",
        "Come",
        "Cut",
        "Dealt",
        "Done",
        "Drawn",
        "Driven",
        "Eaten",
        "Fallen",
        "Felt",
        "Forgotten",
        "Found",
        "Frozen",
        "Given",
        "Gone",
        "Grown",
        "Held",
        "Hidden",
        "Hit",
        "Hung",
        "Kept",
        "Known",
        "Laid",
        "Led",
        "Left",
        "Lent",
        "Lost",
        "Made",
        "Meant",
        "Met",
        "Paid",
        "Put",
        "Quit",
        "Read",
        "Ridden",
        "Risen",
        "Run",
        "Said",
        "Seen",
        "Sent",
        "Set",
        "Shaken",
        "Shown",
        "Shut",
        "Sold",
        "Spent",
        "Split",
        "Spoken",
        "Spread",
        "Stolen",
        "Struck",
        "Stuck",
        "Sworn",
        "Taken",
        "Taught",
        "Thrown",
        "Told",
        "Torn",
        "Undone",
        "Understood",
        "Upheld",
        "Withdrawn",
        "Won",
        "Worn",
        "Written",
    ]
)


def check_package(package: str, full_name: str) -> None:
    """Raise ContractError unless the package's last component is a version like ``v1``."""
    if not package:
        raise ContractError(f"{full_name}: an event must live in a package that ends in a version, e.g. shop.orders.v1")
    last = package.rsplit(".", 1)[-1]
    if not _VERSION.match(last):
        raise ContractError(
            f"{full_name}: package {package!r} must end in a version component such as 'v1' or 'v2beta1'"
        )


def check_event_name(name: str, full_name: str) -> None:
    """Raise ContractError unless ``name`` is a noun followed by a past-tense verb."""
    if not _PASCAL.match(name):
        raise ContractError(f"{full_name}: event names are PascalCase, got {name!r}")
    words = _WORDS.findall(name)
    if name.endswith("Event"):
        raise ContractError(f"{full_name}: drop the 'Event' suffix; name what happened, e.g. OrderCreated")
    if len(words) < 2:
        raise ContractError(f"{full_name}: an event name is a noun plus a past-tense verb, e.g. OrderCreated")
    # The verb follows the noun, and words may follow the verb: UserSignedUp, ItemAddedToCart.
    if not any(word.endswith("ed") or word in _IRREGULAR_PAST for word in words[1:]):
        raise ContractError(
            f"{full_name}: {name!r} has no past-tense verb after its noun; events state a fact, "
            "e.g. OrderCreated rather than CreateOrder"
        )
