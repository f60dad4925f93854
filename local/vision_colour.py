"""Colour and quality for the local Rekognition's ImageProperties (`local/vision.py`).

Dominant colours: the picture, scaled down, quantised by median cut (deterministic, no random
seeds), each colour with its share of the pixels, hex code, nearest CSS colour name (CIE Lab
distance to Pillow's CSS table) and one of 12 simplified names. Quality: brightness is the
mean luminance, contrast its spread, sharpness the Laplacian's energy, each 0-100.
"""

from __future__ import annotations

from functools import cache
from typing import Any

#: The 12 simplified colour names (Rekognition does not publish its list).
SIMPLIFIED = (
    "red", "orange", "yellow", "green", "teal", "blue",
    "purple", "pink", "brown", "black", "white", "grey",
)  # fmt: skip
#: Laplacian variance for about 63 % sharpness.
SHARPNESS_SCALE = 300.0


def image_properties(picture: Any, max_colours: int) -> dict[str, Any]:
    """ImageProperties: Quality and DominantColors of an RGB Pillow image."""
    from local.vision import COLOUR_SIDE, _scaled

    small = _scaled(picture, COLOUR_SIDE)
    return {"Quality": quality(picture), "DominantColors": dominant_colours(small, max_colours)}


def dominant_colours(picture: Any, max_colours: int) -> list[dict[str, Any]]:
    from PIL import Image

    if max_colours == 0:
        return []
    quantised = picture.quantize(colors=max_colours, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = sorted(quantised.getcolors(max_colours) or [], reverse=True)
    total = picture.width * picture.height
    colours = []
    for count, index in counts:
        red, green, blue = palette[3 * index : 3 * index + 3]
        colours.append({
            "Red": red,
            "Green": green,
            "Blue": blue,
            "HexCode": f"#{red:02X}{green:02X}{blue:02X}",
            "CSSColor": css_name((red, green, blue)),
            "SimplifiedColor": simplified((red, green, blue)),
            "PixelPercent": round(100 * count / total, 4),
        })  # fmt: skip
    return colours


def quality(picture: Any) -> dict[str, float]:
    import cv2
    import numpy as np

    from local.vision import ANALYSIS_SIDE, _scaled

    gray = np.asarray(_scaled(picture, ANALYSIS_SIDE).convert("L"), dtype=np.float64)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    return {
        "Brightness": round(100 * float(gray.mean()) / 255, 4),
        "Sharpness": round(100 * (1 - float(np.exp(-sharpness / SHARPNESS_SCALE))), 4),
        "Contrast": round(min(100.0, 100 * float(gray.std()) / 127.5), 4),
    }


def css_name(rgb: tuple[int, int, int]) -> str:
    import numpy as np

    names, lab = _css_table()
    distances = ((lab - _lab([rgb])[0]) ** 2).sum(axis=1)
    return names[int(np.argmin(distances))]


def simplified(rgb: tuple[int, int, int]) -> str:
    """One of SIMPLIFIED, by hue, saturation and value."""
    import colorsys

    hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    hue *= 360
    if value < 0.2:
        return "black"
    if saturation < 0.15:
        return "white" if value > 0.85 else "grey"
    if 10 <= hue < 45 and value < 0.6:
        return "brown"
    if (hue < 10 or hue >= 335) and saturation < 0.5 and value > 0.7:
        return "pink"
    for limit, name in ((10, "red"), (40, "orange"), (70, "yellow"), (160, "green"),
                        (195, "teal"), (255, "blue"), (290, "purple"), (335, "pink")):  # fmt: skip
        if hue < limit:
            return name
    return "red"


@cache
def _css_table() -> tuple[list[str], Any]:
    from PIL import ImageColor

    names = sorted(ImageColor.colormap)
    return names, _lab([ImageColor.getrgb(name)[:3] for name in names])


def _lab(colours: list[tuple[int, ...]]) -> Any:
    import cv2
    import numpy as np

    rgb = np.asarray(colours, dtype=np.float32).reshape(-1, 1, 3) / 255
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)
