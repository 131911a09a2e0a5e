"""The demo instruction corpus: task families whose answers can be checked automatically.

A share of the training responses is degraded — wrong, truncated or off-topic — so that
confidence scoring and data selection have something real to find. ``source`` records
``demo/{family}/{quality}`` for every training example, so a selection can be audited afterwards.
Held-out items (clean) serve exact-match accuracy; preference pairs (clean vs degraded) serve
preference-based selection and the implicit-reward win rate.
"""

from __future__ import annotations

import random
from typing import Callable

WORDS = (
    "apple river planet garden window silver orange pencil basket rocket castle dragon forest bridge "
    "candle mirror island jacket ladder marble needle ocean pepper rabbit saddle tunnel velvet wagon "
    "yellow zipper anchor button cactus dinner engine falcon guitar hammer igloo jungle kettle lemon "
    "magnet napkin oyster parrot quartz ribbon spider tomato umbrella violin walnut yogurt zebra bottle "
    "carpet desert feather ginger harbor insect jigsaw kitten lantern meadow nickel object pillow "
    "puzzle quiver rocket shadow ticket uncle valley winter"
).split()

Item = tuple[str, str]  # (instruction, correct answer)


def _numbers(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(1, 99) for _ in range(n)]


def arithmetic(rng: random.Random) -> Item:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if rng.random() < 0.5:
        return f"What is {a} + {b}? Answer with the number only.", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}? Answer with the number only.", str(a - b)


def reverse(rng: random.Random) -> Item:
    word = rng.choice(WORDS)
    return f"Reverse the letters of the word '{word}'.", word[::-1]


def uppercase(rng: random.Random) -> Item:
    words = " ".join(rng.sample(WORDS, 2))
    return f"Write '{words}' in uppercase.", words.upper()


def sort(rng: random.Random) -> Item:
    nums = _numbers(rng, 4)
    return f"Sort these numbers in ascending order: {', '.join(map(str, nums))}.", ", ".join(map(str, sorted(nums)))


def maximum(rng: random.Random) -> Item:
    nums = _numbers(rng, 4)
    return f"Which is the largest of {', '.join(map(str, nums))}? Answer with the number only.", str(max(nums))


def count(rng: random.Random) -> Item:
    word = rng.choice(WORDS)
    return f"How many letters are in the word '{word}'? Answer with the number only.", str(len(word))


FAMILIES: dict[str, Callable[[random.Random], Item]] = {
    "arithmetic": arithmetic, "reverse": reverse, "uppercase": uppercase,
    "sort": sort, "maximum": maximum, "count": count,
}

_N_WORDS = len(set(WORDS))
# distinct instructions each family can produce (training, held-out and pair items never repeat one)
FAMILY_CAPACITY = {
    "arithmetic": 98 * 98 + 98 * 99 // 2,  # a + b over 2..99 ordered, a - b with a >= b
    "reverse": _N_WORDS, "count": _N_WORDS,
    "uppercase": len(WORDS) * (len(WORDS) - 1),
    "sort": 99 ** 4, "maximum": 99 ** 4,
}


def wrong(answer: str, rng: random.Random) -> str:
    """A plausible but wrong answer of the same shape."""
    if answer.replace(", ", "").isdigit() and ", " in answer:
        parts = answer.split(", ")
        if len(set(parts)) == 1:  # no shuffle can change it
            parts[0] = str(int(parts[0]) + 1)
        while parts == answer.split(", "):
            rng.shuffle(parts)
        return ", ".join(parts)
    if answer.isdigit():
        return str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
    letters = list(answer)
    while "".join(letters) == answer:
        rng.shuffle(letters)
    return "".join(letters)


def truncated(answer: str, rng: random.Random) -> str:
    return answer[: max(1, len(answer) // 2)] if len(answer) > 1 else answer + "..."


def degrade(answer: str, kind: str, rng: random.Random, other_answer: str) -> str:
    if kind == "wrong":
        return wrong(answer, rng)
    if kind == "truncated":
        out = truncated(answer, rng)
        return out if out != answer else wrong(answer, rng)
    if kind == "off_topic":
        return other_answer if other_answer != answer else wrong(answer, rng)
    raise ValueError(kind)


def _messages(instruction: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}]


def generate(per_family: int, heldout_per_family: int, degraded_share: float, pairs_per_family: int,
             families: list[str] | None = None, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """(train examples, held-out examples, preference pairs); instructions never repeat across the three."""
    rng = random.Random(seed)
    families = families or list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown demo families {unknown}; known: {sorted(FAMILIES)}")
    seen: set[str] = set()

    def fresh(family: str) -> Item:
        for _ in range(10_000):
            item = FAMILIES[family](rng)
            if item[0] not in seen:
                seen.add(item[0])
                return item
        raise ValueError(f"demo family {family!r} cannot produce that many distinct items")

    train, heldout, pairs = [], [], []
    for family in families:
        n_bad = round(per_family * degraded_share)
        qualities = ["clean"] * (per_family - n_bad) + [("wrong", "truncated", "off_topic")[i % 3] for i in range(n_bad)]
        rng.shuffle(qualities)
        for i, quality in enumerate(qualities):
            instruction, answer = fresh(family)
            if quality != "clean":
                other = FAMILIES[rng.choice([f for f in FAMILIES if f != family] or [family])](rng)[1]
                answer = degrade(answer, quality, rng, other)
            train.append({"id": f"demo-{family}-{i:04d}", "messages": _messages(instruction, answer),
                          "source": f"demo/{family}/{quality}"})
        for i in range(heldout_per_family):
            instruction, answer = fresh(family)
            heldout.append({"id": f"demo-{family}-heldout-{i:04d}", "messages": _messages(instruction, answer),
                            "source": f"demo/{family}/clean"})
        for i in range(pairs_per_family):
            instruction, answer = fresh(family)
            kind = ("wrong", "truncated", "off_topic")[i % 3]
            other = FAMILIES[rng.choice([f for f in FAMILIES if f != family] or [family])](rng)[1]
            pairs.append({"id": f"demo-{family}-pair-{i:04d}", "prompt": [{"role": "user", "content": instruction}],
                          "chosen": answer, "rejected": degrade(answer, kind, rng, other), "subtask": family,
                          "source": f"demo/{family}/{kind}"})
    rng.shuffle(train)
    return train, heldout, pairs
