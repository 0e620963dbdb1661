"""Drawing scenes into pixels, with the masks that prove what each answer refers to.

Drawing is aliasing-free on purpose: every object pixel is exactly its colour (or its texture
shade) and every text pixel exactly the text colour, so tests can check answers against pixels.
Order: background, ground, sign, arrows, objects far to near, diagram labels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from covft.recipes.world.sampling import sample_scene
from covft.recipes.world.scene import Scene, SceneRejected, WorldObject
from covft.recipes.world.vocab import COLORS

Box = tuple[int, int, int, int]


@dataclass
class Rendering:
    """An image and, per object (scene order), its full mask and its visible (unoccluded) part."""

    image: Image.Image
    masks: list[np.ndarray]
    visible: list[np.ndarray]
    text_mask: np.ndarray | None = None

    def pixel_box(self, index: int) -> Box:
        """Inclusive pixel bounds (x1, y1, x2, y2) of object ``index``'s full mask."""
        ys, xs = np.nonzero(self.masks[index])
        return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())

    def normalized_box(self, index: int) -> tuple[float, float, float, float]:
        """The object's box in LLaVA's normalised form, 2 decimals, rounded outward so it contains the object."""
        height, width = self.masks[index].shape
        x1, y1, x2, y2 = self.pixel_box(index)
        return (
            np.floor(x1 / width * 100) / 100,
            np.floor(y1 / height * 100) / 100,
            np.ceil((x2 + 1) / width * 100) / 100,
            np.ceil((y2 + 1) / height * 100) / 100,
        )


@functools.lru_cache(maxsize=64)
def font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``pixels`` size (works offline, no system fonts needed)."""
    return ImageFont.load_default(size=max(6, pixels))


def shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` centred at (cx, cy) with circumradius ``r`` (pixels)."""
    if shape == "square":
        h = r * 0.8
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + r * np.cos(a), cy + 0.15 * r + r * np.sin(a)) for a in angles]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + rr * np.cos(a), cy + rr * np.sin(a)) for rr, a in zip(radii, angles, strict=True)]
    if shape == "cross":
        a, e = 0.33 * r, 0.92 * r
        return [
            (cx - a, cy - e),
            (cx + a, cy - e),
            (cx + a, cy - a),
            (cx + e, cy - a),
            (cx + e, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + e),
            (cx - a, cy + e),
            (cx - a, cy + a),
            (cx - e, cy + a),
            (cx - e, cy - a),
            (cx - a, cy - a),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: WorldObject, size: int) -> np.ndarray:
    """Boolean mask of ``obj`` drawn on a ``size`` x ``size`` image."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = obj.x * size, obj.y * size, obj.radius * size
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(shape_points(obj.shape, cx, cy, r), fill=255)
    return np.asarray(canvas) > 0


def shade(color: str) -> tuple[int, int, int]:
    """The second colour of a striped/dotted object: darker; mid grey for black, dark grey for white
    (0.6 x white would be as grey as the background and erase the object's outline)."""
    if color == "black":
        return (85, 85, 85)
    if color == "white":
        return (95, 95, 95)
    return tuple(int(v * 0.6) for v in COLORS[color])


def texture_pattern(texture: str, size: int) -> np.ndarray:
    """Boolean map of the pixels that take the shade colour for ``texture``."""
    ys, xs = np.mgrid[0:size, 0:size]
    if texture == "striped":
        width = max(1, round(size / 32))
        return ((xs + ys) // width) % 2 == 1
    if texture == "dotted":
        period = max(3, round(3 * size / 64))
        return (xs % period == 1) & (ys % period == 1)
    return np.zeros((size, size), dtype=bool)


def text_mask(text: str, center: tuple[float, float], pixels: int, size: int) -> np.ndarray:
    """Boolean mask of ``text`` in the built-in font, centred at ``center`` (pixels)."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text(center, text, fill=255, font=font(pixels), anchor="mm")
    return np.asarray(canvas) >= 128


def sign_text_mask(scene: Scene, size: int) -> np.ndarray | None:
    """The pixels of the scene's sign text, or None when there is no sign."""
    if scene.sign is None:
        return None
    x1, y1, x2, y2 = scene.sign.box
    center = ((x1 + x2) / 2 * size, (y1 + y2) / 2 * size)
    return text_mask(scene.sign.text, center, round(scene.sign.font_size * size), size)


def _draw_arrow(draw: ImageDraw.ImageDraw, a: WorldObject, b: WorldObject, size: int) -> None:
    ax, ay, bx, by = a.x * size, a.y * size, b.x * size, b.y * size
    length = float(np.hypot(bx - ax, by - ay))
    ux, uy = (bx - ax) / length, (by - ay) / length
    start = (ax + ux * a.radius * size * 1.1, ay + uy * a.radius * size * 1.1)
    tip = (bx - ux * b.radius * size * 1.15, by - uy * b.radius * size * 1.15)
    width = max(1, round(size / 64))
    draw.line([start, tip], fill=(30, 30, 30), width=width)
    head = max(3.0, size * 0.07)
    px, py = -uy, ux
    base = (tip[0] - ux * head, tip[1] - uy * head)
    draw.polygon(
        [
            tip,
            (base[0] + px * head * 0.5, base[1] + py * head * 0.5),
            (base[0] - px * head * 0.5, base[1] - py * head * 0.5),
        ],
        fill=(30, 30, 30),
    )


def label_position(obj: WorldObject) -> tuple[float, float]:
    """Where a diagram label goes (normalised): beside the node, on the outer side, away from arrows."""
    side = -1 if obj.x < 0.5 else 1
    return min(0.94, max(0.06, obj.x + side * (obj.radius + 0.07))), obj.y - obj.radius * 0.6


def render(scene: Scene, size: int = 64) -> Rendering:
    """Draw ``scene`` on a ``size`` x ``size`` RGB image."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = scene.background
    if scene.horizon is not None and scene.ground is not None:
        pixels[round(scene.horizon * size) :] = scene.ground
    text_pixels = None
    if scene.sign is not None:
        x1, y1, x2, y2 = (round(v * size) for v in scene.sign.box)
        pixels[y1:y2, x1:x2] = COLORS[scene.sign.board_color]
        text_pixels = sign_text_mask(scene, size)
        pixels[text_pixels] = COLORS[scene.sign.text_color]
    if scene.arrows:
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for a, b in scene.arrows:
            _draw_arrow(draw, scene.objects[a], scene.objects[b], size)
        pixels = np.array(image)
    masks = [object_mask(obj, size) for obj in scene.objects]
    order = sorted(range(len(scene.objects)), key=lambda i: (-scene.objects[i].depth, i))
    covered = np.zeros((size, size), dtype=bool)
    visible: list[np.ndarray] = [np.zeros(0)] * len(masks)
    for i in reversed(order):  # nearest first, to know what each farther object keeps
        visible[i] = masks[i] & ~covered
        covered |= masks[i]
    for i in order:
        obj = scene.objects[i]
        fill = np.empty((size, size, 3), dtype=np.uint8)
        fill[:] = COLORS[obj.color]
        fill[texture_pattern(obj.texture, size)] = shade(obj.color)
        pixels[masks[i]] = fill[masks[i]]
    for obj in scene.objects:
        if obj.label is not None:
            lx, ly = label_position(obj)
            mask = text_mask(obj.label, (lx * size, ly * size), round(0.17 * size), size)
            pixels[mask] = (20, 20, 20)
    return Rendering(Image.fromarray(pixels), masks, visible, text_pixels)


def visible_enough(scene: Scene, rendering: Rendering, min_fraction: float) -> bool:
    """Every object keeps at least ``min_fraction`` of its pixels visible (so it can be counted)."""
    return all(
        mask.sum() > 0 and vis.sum() >= min_fraction * mask.sum()
        for mask, vis in zip(rendering.masks, rendering.visible, strict=True)
    )


def draw_scene(
    rng: np.random.Generator,
    kind: str,
    size: int,
    *,
    min_objects: int = 2,
    max_objects: int = 5,
    occlusion_rate: float = 0.15,
) -> tuple[Scene, Rendering]:
    """Sample a scene of ``kind`` and render it, resampling until every object is clearly visible."""
    min_fraction = 0.4 if kind == "clutter" else 0.55
    for _ in range(100):
        scene = sample_scene(rng, kind, min_objects, max_objects, occlusion_rate)
        rendering = render(scene, size)
        if visible_enough(scene, rendering, min_fraction):
            return scene, rendering
    raise SceneRejected(f"could not draw a clearly visible {kind!r} scene in 100 tries")
