"""Random scenes of each kind (:data:`~covft.recipes.world.scene.SCENE_KINDS`), drawn from one generator.

Every draw goes through the caller's ``numpy`` generator in a fixed order, so a seed fixes the scene.
"""

from __future__ import annotations

import itertools

import numpy as np

from covft.recipes.world.scene import SCENE_KINDS, Scene, SceneRejected, Sign, WorldObject, round4
from covft.recipes.world.vocab import (
    COLORS,
    SHAPES,
    SIZES,
    TEXT_CHARS,
    TEXTURES,
    WORDS,
    looks_like_option_letter,
)


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    level = int(rng.integers(150, 186))
    tint = rng.integers(-8, 9, size=3)
    return tuple(int(np.clip(level + t, 0, 255)) for t in tint)


def _identities(rng: np.random.Generator, n: int, colors: list[str] | None = None) -> list[tuple[str, str]]:
    """``n`` distinct (color, shape) pairs."""
    palette = colors if colors is not None else list(COLORS)
    pairs = list(itertools.product(palette, SHAPES))
    picks = rng.choice(len(pairs), size=n, replace=False)
    return [pairs[int(i)] for i in picks]


def _overlaps(x: float, y: float, r: float, placed: list[WorldObject], gap: float) -> bool:
    return any(np.hypot(x - o.x, y - o.y) < (r + o.radius) * 1.05 + gap for o in placed)


def _free_of_box(x: float, y: float, r: float, box: tuple[float, float, float, float], gap: float) -> bool:
    x1, y1, x2, y2 = box
    return x + r + gap < x1 or x - r - gap > x2 or y + r + gap < y1 or y - r - gap > y2


def _place_objects(
    rng: np.random.Generator,
    n: int,
    sizes: list[str],
    occlusion_rate: float,
    avoid: tuple[float, float, float, float] | None = None,
    colors: list[str] | None = None,
    textures: bool = True,
) -> list[WorldObject]:
    """Scatter ``n`` objects; with probability ``occlusion_rate`` each may overlap an earlier one."""
    placed: list[WorldObject] = []
    for color, shape in _identities(rng, n, colors):
        size = sizes[int(rng.integers(len(sizes)))]
        radius = SIZES[size]
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))] if textures else "solid"
        occlude = bool(placed) and rng.random() < occlusion_rate
        for _ in range(200):
            if occlude:
                other = placed[int(rng.integers(len(placed)))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = rng.uniform(0.55, 0.85) * (radius + other.radius)
                x, y = other.x + dist * np.cos(angle), other.y + dist * np.sin(angle)
                lo, hi = radius + 0.01, 1 - radius - 0.01
                if not (lo <= x <= hi and lo <= y <= hi):
                    continue
                if _overlaps(x, y, radius, [o for o in placed if o is not other], 0.02):
                    continue
            else:
                x, y = rng.uniform(radius + 0.01, 1 - radius - 0.01, size=2)
                if _overlaps(x, y, radius, placed, 0.02):
                    continue
            if avoid is not None and not _free_of_box(x, y, radius, avoid, 0.02):
                continue
            break
        else:
            raise SceneRejected("no room for another object")
        placed.append(
            WorldObject(
                shape,
                color,
                size,
                texture,
                round4(x),
                round4(y),
                round4(radius),
                depth=round4(rng.uniform(1, 3)),
            )
        )
    return placed


def sample_objects(
    rng: np.random.Generator, min_objects: int = 2, max_objects: int = 5, occlusion_rate: float = 0.15
) -> Scene:
    """A grey background with ``min_objects``..``max_objects`` shapes."""
    n = int(rng.integers(min_objects, max_objects + 1))
    objects = _place_objects(rng, n, list(SIZES), occlusion_rate)
    return Scene("objects", _background(rng), objects)


def sample_clutter(rng: np.random.Generator, occlusion_rate: float = 0.4) -> Scene:
    """Six to eight mostly small shapes, overlaps allowed: the world's "real-world" clutter."""
    n = int(rng.integers(6, 9))
    objects = _place_objects(rng, n, ["small", "small", "medium"], occlusion_rate)
    return Scene("clutter", _background(rng), objects)


def random_text(rng: np.random.Generator) -> str:
    """A word from :data:`WORDS` or a random 1-4 character string."""
    if rng.random() < 0.5:
        return WORDS[int(rng.integers(len(WORDS)))]
    while True:
        length = int(rng.integers(1, 5))
        text = "".join(TEXT_CHARS[int(i)] for i in rng.integers(len(TEXT_CHARS), size=length))
        if not looks_like_option_letter(text):
            return text


def sample_text(rng: np.random.Generator, text: str | None = None) -> Scene:
    """A sign with a short string, plus 0-2 small shapes around it."""
    text = random_text(rng) if text is None else text
    font_size = rng.uniform(0.18, 0.24)
    width = min(0.94, len(text) * 0.62 * font_size + 0.1)
    height = font_size * 1.35
    x1 = rng.uniform(0.03, 0.97 - width)
    y1 = rng.uniform(0.03, 0.97 - height)
    box = (round4(x1), round4(y1), round4(x1 + width), round4(y1 + height))
    dark_board = rng.random() < 0.3
    sign = Sign(
        text=text,
        box=box,
        font_size=round4(font_size),
        text_color="white" if dark_board else "black",
        board_color="black" if dark_board else "white",
    )
    n = int(rng.integers(0, 3))
    objects = _place_objects(rng, n, ["small", "medium"], 0.0, avoid=box)
    return Scene("text", _background(rng), objects, sign=sign)


_DIAGRAM_CELLS = ((0.3, 0.28), (0.7, 0.28), (0.3, 0.72), (0.7, 0.72))


def sample_diagram(rng: np.random.Generator) -> Scene:
    """Three or four labelled shapes on a white page, joined by a chain of arrows (plus maybe one)."""
    n = int(rng.integers(3, 5))
    cells = [_DIAGRAM_CELLS[int(i)] for i in rng.permutation(4)[:n]]
    colors = [c for c in COLORS if c != "white"]
    labels = [str(int(i) + 1) for i in rng.permutation(n)]
    objects = []
    for (cx, cy), (color, shape), label in zip(cells, _identities(rng, n, colors), labels, strict=True):
        x, y = cx + rng.uniform(-0.03, 0.03), cy + rng.uniform(-0.03, 0.03)
        objects.append(
            WorldObject(shape, color, "medium", "solid", round4(x), round4(y), SIZES["medium"], label=label)
        )
    order = [int(i) for i in rng.permutation(n)]
    arrows = list(zip(order[:-1], order[1:], strict=True))
    if n == 4 and rng.random() < 0.5:
        candidates = [
            (a, b)
            for a in range(n)
            for b in range(n)
            if a != b and (a, b) not in arrows and (b, a) not in arrows
        ]
        arrows.append(candidates[int(rng.integers(len(candidates)))])
    return Scene("diagram", (236, 236, 230), objects, arrows=arrows)


def sample_depth(rng: np.random.Generator) -> Scene:
    """Two or three shapes standing on a ground plane; the nearer, the larger and lower."""
    n = int(rng.integers(2, 4))
    horizon = round4(rng.uniform(0.3, 0.42))
    for _ in range(50):
        depths = np.sort(rng.uniform(1.0, 3.2, size=n))
        if np.all(np.diff(depths) > 0.45):
            break
    else:
        raise SceneRejected("depths too close")
    objects: list[WorldObject] = []
    for (color, shape), depth in zip(_identities(rng, n), depths[::-1], strict=True):
        radius = 0.17 / depth
        ground_y = horizon + (0.97 - horizon) / depth
        y = ground_y - radius
        x = rng.uniform(radius + 0.01, 1 - radius - 0.01)
        size = min(SIZES, key=lambda s: abs(SIZES[s] - radius))
        objects.append(
            WorldObject(
                shape, color, size, "solid", round4(x), round4(y), round4(radius), depth=round4(depth)
            )
        )
    sky = (196, 206, 220)
    ground = tuple(int(v) for v in rng.integers(120, 160, size=3))
    return Scene("depth", sky, objects, horizon=horizon, ground=ground)


def sample_scene(
    rng: np.random.Generator,
    kind: str,
    min_objects: int = 2,
    max_objects: int = 5,
    occlusion_rate: float = 0.15,
) -> Scene:
    """One scene of ``kind`` (see :data:`SCENE_KINDS`); retries internally until a layout fits."""
    for _ in range(100):
        try:
            if kind == "objects":
                return sample_objects(rng, min_objects, max_objects, occlusion_rate)
            if kind == "clutter":
                return sample_clutter(rng)
            if kind == "text":
                return sample_text(rng)
            if kind == "diagram":
                return sample_diagram(rng)
            if kind == "depth":
                return sample_depth(rng)
        except SceneRejected:
            continue
        raise ValueError(f"unknown scene kind {kind!r}; choose from {SCENE_KINDS}")
    raise RuntimeError(f"could not lay out a {kind!r} scene in 100 tries")
