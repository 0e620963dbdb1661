"""A contact sheet of the world: a few samples of every task family with their questions and answers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from covft.recipes.world import formats
from covft.recipes.world.render import font
from covft.recipes.world.tasks import FAMILIES, make_sample

PREVIEW_STREAM = 9
"""Random-stream tag of preview samples (neither training nor suite)."""


def _strip_instructions(text: str) -> str:
    for suffix in (formats.SHORT_ANSWER, formats.MULTIPLE_CHOICE, formats.YES_NO):
        text = text.replace(suffix, "")
    return text.replace("<image>\n", "").strip()


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, width) or [""]
    return lines


def contact_sheet(
    out_path: str | Path,
    seed: int = 0,
    per_family: int = 2,
    image_size: int = 64,
    scale: int = 3,
    families: tuple[str, ...] = FAMILIES,
) -> Path:
    """Draw ``per_family`` fresh samples of each family (one row per family) into a PNG at ``out_path``.

    Each cell shows the image enlarged ``scale`` times (nearest neighbour, so pixels stay honest)
    and the conversation without LLaVA's instruction suffixes. Returns the written path.
    """
    picture = image_size * scale
    text_width, pad = 340, 8
    cell_w, cell_h = picture + text_width + 2 * pad, max(picture, 150) + 2 * pad
    sheet = Image.new("RGB", (cell_w * per_family, cell_h * len(families)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    title, body = font(14), font(12)
    for row, family in enumerate(families):
        for col in range(per_family):
            rng = np.random.default_rng([seed, PREVIEW_STREAM, row, col])
            sample = make_sample(family, rng, image_size)
            x0, y0 = col * cell_w + pad, row * cell_h + pad
            if sample.rendering is not None:
                sheet.paste(sample.rendering.image.resize((picture, picture), Image.NEAREST), (x0, y0))
            else:
                draw.rectangle([x0, y0, x0 + picture - 1, y0 + picture - 1], fill=(225, 225, 225))
                draw.text(
                    (x0 + picture // 2, y0 + picture // 2),
                    "(no image)",
                    fill=(90, 90, 90),
                    font=body,
                    anchor="mm",
                )
            tx, ty = x0 + picture + pad, y0
            draw.text((tx, ty), family, fill=(20, 20, 120), font=title)
            ty += 20
            for human, gpt in sample.turns:
                for prefix, text, color in (("Q: ", human, (30, 30, 30)), ("A: ", gpt, (150, 30, 30))):
                    for k, line in enumerate(_wrap(_strip_instructions(text), 46)):
                        if ty > y0 + cell_h - 2 * pad - 12:
                            break
                        draw.text((tx, ty), (prefix if k == 0 else "   ") + line, fill=color, font=body)
                        ty += 14
            draw.line(
                [(col * cell_w, (row + 1) * cell_h - 1), ((col + 1) * cell_w, (row + 1) * cell_h - 1)],
                fill=(210, 210, 210),
            )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
