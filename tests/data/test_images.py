"""Images decoded as a person sees them: every Pillow mode, high bit depth scaled, alpha, EXIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covft.data.images import BACKGROUND, open_image, to_rgb


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def grey_ramp(dtype: type, top: float) -> np.ndarray:
    """A 4x4 ramp from 0 to ``top`` (0, top/3, 2top/3, top per row)."""
    return np.repeat(np.linspace(0, top, 4)[None, :], 4, axis=0).astype(dtype)


@pytest.mark.parametrize(
    ("make", "suffix"),
    [
        (lambda: Image.fromarray(grey_ramp(np.uint16, 65535)), ".png"),  # I;16 (16-bit PNG)
        (lambda: Image.fromarray(grey_ramp(np.uint16, 65535)), ".tif"),  # I;16 (16-bit TIFF)
        (lambda: Image.fromarray(grey_ramp(np.uint16, 65535)), ".pgm"),  # I, no depth in the file
        (lambda: Image.fromarray(grey_ramp(np.int32, 2**31 - 1)), ".tif"),  # I, 32 bits declared
        (lambda: Image.fromarray(grey_ramp(np.float32, 1.0)), ".tif"),  # F in [0, 1]
    ],
    ids=["I;16-png", "I;16-tiff", "I-pgm16", "I-tiff32", "F-tiff"],
)
def test_high_bit_depth_greyscale_is_scaled_not_clipped(make, suffix: str, tmp_path: Path) -> None:
    source = saved(make(), tmp_path / f"ramp{suffix}")
    with Image.open(source) as handle:
        assert handle.mode in ("I;16", "I", "F")
        clipped = pixels(handle.convert("RGB"))  # what LLaVA's convert("RGB") gives
    result = pixels(open_image(source))
    assert result[0, :, 0].tolist() == [0, 85, 170, 255]  # the ramp, scaled onto 0..255
    assert (result[..., 0] == result[..., 1]).all() and (result[..., 1] == result[..., 2]).all()
    assert not np.array_equal(clipped, result)


def test_16_bit_modes_of_either_byte_order_scale_alike() -> None:
    ramp = grey_ramp(np.uint16, 65535)
    little = Image.fromarray(ramp)
    big = Image.frombytes("I;16B", (4, 4), ramp.astype(">u2").tobytes())
    assert little.mode == "I;16" and big.mode == "I;16B"
    assert (
        pixels(to_rgb(little))[0, :, 0].tolist() == pixels(to_rgb(big))[0, :, 0].tolist() == [0, 85, 170, 255]
    )


def test_floats_outside_zero_to_one_are_scaled_from_their_range_and_nan_is_black() -> None:
    values = grey_ramp(np.float32, 300.0)
    values[3, 3] = np.nan
    result = pixels(to_rgb(Image.fromarray(values)))
    assert result[0, :, 0].tolist() == [0, 85, 170, 255] and result[3, 3, 0] == 0


def test_negative_32_bit_values_are_black() -> None:
    values = np.array([[-5, 0, 255]], dtype=np.int32)
    assert pixels(to_rgb(Image.fromarray(values)))[0, :, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_a_fully_transparent_image_is_the_documented_background(mode: str) -> None:
    image = Image.new("RGBA", (3, 2), (200, 10, 10, 0))
    converted = image.convert(mode) if mode not in ("PA", "La") else _as(mode, image)
    assert converted.mode == mode
    assert (pixels(to_rgb(converted)) == BACKGROUND).all()
    assert BACKGROUND == (255, 255, 255)


def _as(mode: str, rgba: Image.Image) -> Image.Image:
    if mode == "PA":
        palette = rgba.convert("RGB").convert("P")
        return Image.merge("PA", (palette, rgba.getchannel("A"))).copy()
    grey = rgba.convert("L")
    return Image.merge("La", (grey, rgba.getchannel("A")))


def test_half_transparent_pixels_are_blended_onto_the_background(tmp_path: Path) -> None:
    source = saved(Image.new("RGBA", (2, 2), (0, 0, 0, 128)), tmp_path / "half.png")
    assert pixels(open_image(source))[0, 0].tolist() == [127, 127, 127]  # 255 * (1 - 128/255)


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    source = saved(image, tmp_path / "p.png", transparency=0)
    with Image.open(source) as handle:
        assert handle.mode == "P"
    assert pixels(open_image(source)).tolist() == [[[255, 255, 255], [200, 0, 0]]]


@pytest.mark.parametrize(
    ("mode", "value", "expected", "suffix"),
    [
        ("1", 1, (255, 255, 255), ".png"),
        ("L", 77, (77, 77, 77), ".png"),
        ("P", 0, (10, 20, 30), ".png"),
        ("RGB", (1, 2, 3), (1, 2, 3), ".png"),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3), None),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0), ".jpg"),
        ("YCbCr", (76, 85, 255), (254, 0, 0), None),
        ("LAB", (255, 128, 128), (254, 255, 254), ".tif"),
        ("HSV", (0, 255, 255), (255, 0, 0), None),
    ],
)
def test_every_other_mode_converts_to_its_colour(
    mode: str, value, expected: tuple[int, int, int], suffix: str | None, tmp_path: Path
) -> None:
    image = Image.new(mode, (2, 2), value)
    if mode == "P":
        image.putpalette([10, 20, 30] + [0] * 765)
    if suffix is None:
        result = to_rgb(image)
    else:
        options = {"quality": 100} if suffix == ".jpg" else {}
        source = saved(image, tmp_path / f"x{suffix}", **options)
        with Image.open(source) as handle:
            assert handle.mode == mode
        result = open_image(source)
    assert np.abs(pixels(result)[0, 0] - np.array(expected)).max() <= 2


def test_exif_orientation_is_applied_when_the_file_is_opened(tmp_path: Path) -> None:
    stored = Image.new("RGB", (4, 2), (0, 0, 255))
    stored.putpixel((0, 0), (255, 0, 0))  # the red corner, top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: show the stored image turned 90 degrees clockwise
    source = saved(stored, tmp_path / "turned.png", exif=exif)
    result = open_image(source)
    assert result.size == (2, 4)
    assert pixels(result)[0, 1].tolist() == [255, 0, 0]  # top-left went to the top-right
    assert pixels(to_rgb(result)).tolist() == pixels(result).tolist()  # no second rotation
    with Image.open(source) as handle:
        assert handle.convert("RGB").size == (4, 2)  # what ignoring the tag gives
        assert to_rgb(handle).size == (4, 2)  # a decoded image's orientation is the caller's


def test_rgb_images_pass_through_unchanged() -> None:
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(image))


def test_the_collator_converts_any_pil_image_the_same_way() -> None:
    import covft

    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny")
    ramp16 = Image.fromarray(grey_ramp(np.uint16, 65535))
    ramp8 = Image.fromarray(grey_ramp(np.uint8, 255)).convert("RGB")

    def collated(image: Image.Image):
        sample = {
            "id": "s",
            "image": image,
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}],
        }
        return model.collate([sample])["pixel_values"]

    assert np.array_equal(collated(ramp16).numpy(), collated(ramp8).numpy())
