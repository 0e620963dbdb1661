"""The conflict world's closed vocabulary: shapes, colours, sizes, textures, words.

Everything a question or answer can mention is listed here, so the whole language of the world
stays small enough for a tiny language model trained from scratch to learn.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
"""Object shapes; every one has a regular plural (``shape + "s"``, "cross" -> "crosses")."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Object colours by name; none of them is close to the grey backgrounds."""

SIZES: dict[str, float] = {"small": 0.075, "medium": 0.105, "large": 0.145}
"""Size classes: the object's circumradius as a fraction of the image side."""

TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
"""Surface patterns; striped and dotted shade every other stripe or a grid of dots."""

TEXT_CHARS: str = "ABCDEFGHJKLMNPRSTUVWXYZ2345789"
"""Characters for random sign strings (no O/0, I/1, Q, 6 which a tiny model could confuse)."""

WORDS: tuple[str, ...] = (
    "CAT",
    "DOG",
    "SUN",
    "BOX",
    "MAP",
    "CUP",
    "HAT",
    "BUS",
    "KEY",
    "PEN",
    "RED",
    "ZOO",
    "STOP",
    "EXIT",
    "OPEN",
    "SALE",
    "PARK",
    "BAKE",
    "FISH",
    "BLUE",
    "TAXI",
    "MILK",
    "GO",
    "UP",
)
"""Short words for signs; random 1-4 character strings are mixed in as well."""

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")

PROPERTIES: tuple[tuple[str, str], ...] = (("hot", "cold"), ("heavy", "light"), ("wet", "dry"))
"""Pairs of made-up physical properties used by the science-style rule questions."""

SHAPE_SIDES: dict[str, int] = {"triangle": 3, "square": 4, "diamond": 4, "star": 10, "cross": 12}
"""Number of sides of each polygonal shape (for text-only questions)."""


def looks_like_option_letter(text: str) -> bool:
    """A lone A-H would be read as an option letter by multiple-choice scorers; signs never show one."""
    return len(text) == 1 and text in "ABCDEFGH"


def plural(shape: str) -> str:
    """The plural of a shape name."""
    return shape + ("es" if shape.endswith("s") else "s")


def name(color: str, shape: str) -> str:
    """The referring name of an object, e.g. ``"red circle"``; unique within every scene."""
    return f"{color} {shape}"
