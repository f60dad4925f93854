"""What the local Rekognition sees in a picture: bytes in, DetectLabels' answer out.

stock moto gives every image one canned label; the emulator (`local/rekognition.py`) answers
from the picture instead, with what ships inside a package: OpenCV's bundled Haar cascades for
faces (frontal), people (upper body, full body) and cats (frontal cat face, ears included), a
morphological-gradient detector of text lines, and the colours of the pixels. Nothing else is
recognised (no dogs, cars, scenes), and the confidences are the detectors' own, not
comparable with Rekognition's.

Confidence: a cascade fires on many overlapping windows around a real object and on few
around a chance pattern. The first pass (the picture at ANALYSIS_SIDE) groups its windows as
OpenCV does; each group is then looked at again with the object scaled to a standard size, so
that the count does not depend on how large the object is in the picture, and n confirming
windows score 100 * (1 - 0.5 ** (n / half_life)). The half-lives are set on photos and
textures: a frontal face (the astronaut in `local/samples/`, at 7 to 19 % of the picture's
width, on noise or grey) gets 61 to 71 windows (over 98), while the most any false group got
on photos and textures without one (coffee, coins, bricks, gravel, a motorcycle, microscopy,
the moon, noise) is 6 (34); the body cascades fire as often on the moon and coins (19) as on
people, so their half-life keeps them under Rekognition's default MinConfidence (55) unless
very strong. The cat cascade is counted as the face one: no cat photo under a free licence
could be checked (scikit-image's Chelsea is too close up, ears cropped: no cascade finds her).
Objects smaller than about 5 % of the picture's long side are not looked for. A text line
scores the same way from its count of glyph-like strokes.

As Rekognition does: a JPEG is turned upright by its EXIF orientation before detecting (boxes
are fractions of the upright picture); a PNG is taken as stored. Parents come with a label
and are labels of their own (Face: Head, Person; Cat: Animal, Mammal, Pet), each as confident
as its most confident child. Dominant colours are reported as Rekognition does, in
ImageProperties when IMAGE_PROPERTIES is asked for (never as labels), with their CSS name and
one of 12 simplified names (ours: Rekognition does not publish its list); no foreground or
background split. opencv-python-headless and numpy are imported on the first call only.
"""

from __future__ import annotations

import io
from typing import Any

from local.vision_cascades import CASCADES, cascade_groups
from local.vision_colour import image_properties
from local.vision_text import TEXT_HALF_LIFE, text_lines

#: The long side the cascades look at; a larger picture is scaled down first (speed), never up.
ANALYSIS_SIDE = 400
#: Text strokes are thin: the text detector looks at a larger copy.
TEXT_SIDE = 800
#: Dominant colours are counted on a copy this small.
COLOUR_SIDE = 96
#: Rekognition's limits and defaults for DetectLabels.
MAX_LABELS = 1000
DEFAULT_MIN_CONFIDENCE = 55.0
DEFAULT_DOMINANT_COLORS = 10
MAX_DOMINANT_COLORS = 20
FEATURES = ("GENERAL_LABELS", "IMAGE_PROPERTIES")
#: Rekognition's label taxonomy for what is detected here: parents, aliases, categories.
TAXONOMY: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Face": (("Head", "Person"), (), ("Person Description",)),
    "Head": (("Person",), (), ("Person Description",)),
    "Person": ((), ("Human",), ("Person Description",)),
    "Cat": (("Animal", "Mammal", "Pet"), (), ("Animals and Pets",)),
    "Mammal": (("Animal",), (), ("Animals and Pets",)),
    "Pet": (("Animal",), (), ("Animals and Pets",)),
    "Animal": ((), (), ("Animals and Pets",)),
    "Text": ((), (), ("Text and Documents",)),
}


class VisionError(Exception):
    """A request Rekognition refuses; `code` is its error code."""

    code = "InvalidParameterException"


class InvalidParameter(VisionError):
    code = "InvalidParameterException"


class InvalidImageFormat(VisionError):
    code = "InvalidImageFormatException"


class ImageTooLarge(VisionError):
    code = "ImageTooLargeException"


def detect_labels(
    data: bytes,
    max_labels: int | None = None,
    min_confidence: float | None = None,
    features: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """DetectLabels' answer for `data` (a JPEG or PNG), with its parameters' defaults and
    range checks (InvalidParameter), InvalidImageFormat for anything else."""
    max_labels = MAX_LABELS if max_labels is None else max_labels
    min_confidence = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    features = list(features) if features else ["GENERAL_LABELS"]
    settings = settings or {}
    if not isinstance(settings, dict) or not all(
        isinstance(settings.get(k) or {}, dict) for k in ("GeneralLabels", "ImageProperties")
    ):
        raise InvalidParameter("Settings must be an object of GeneralLabels and ImageProperties")
    colours = (settings.get("ImageProperties") or {}).get("MaxDominantColors")
    colours = DEFAULT_DOMINANT_COLORS if colours is None else colours
    if not isinstance(max_labels, int) or not 0 <= max_labels <= MAX_LABELS:
        raise InvalidParameter(f"MaxLabels must be between 0 and {MAX_LABELS}")
    if not isinstance(min_confidence, int | float) or not 0 <= min_confidence <= 100:
        raise InvalidParameter("MinConfidence must be between 0 and 100")
    if any(f not in FEATURES for f in features) or len(set(features)) != len(features):
        raise InvalidParameter(f"Features must be among {', '.join(FEATURES)}")
    if not isinstance(colours, int) or not 0 <= colours <= MAX_DOMINANT_COLORS:
        raise InvalidParameter(f"MaxDominantColors must be between 0 and {MAX_DOMINANT_COLORS}")
    picture = decode(data)
    answer: dict[str, Any] = {"Labels": [], "LabelModelVersion": "3.0"}
    if "GENERAL_LABELS" in features:
        found = [label for label in labels(picture) if label["Confidence"] >= min_confidence]
        for label in found:
            label["Instances"] = [
                i for i in label["Instances"] if i["Confidence"] >= min_confidence
            ]
        found = _filtered(found, settings.get("GeneralLabels") or {})
        answer["Labels"] = found[:max_labels]
    if "IMAGE_PROPERTIES" in features:
        answer["ImageProperties"] = image_properties(picture, colours)
    return answer


def decode(data: bytes) -> Any:
    """The picture as an upright RGB Pillow image (EXIF orientation applied to a JPEG only),
    decoded at no more than about twice TEXT_SIDE when the JPEG allows it (draft mode)."""
    from PIL import Image, ImageOps

    if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n")):
        raise InvalidImageFormat("Request has invalid image format")
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.format == "JPEG":
            side = max(picture.size)
            if side > 2 * TEXT_SIDE:
                scale = 2 * TEXT_SIDE / side
                picture.draft("RGB", (int(picture.width * scale), int(picture.height * scale)))
            picture = ImageOps.exif_transpose(picture)
        return picture.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ImageTooLarge("Image size is too large") from error
    except Exception as error:  # a broken file fails Pillow in many ways (struct.error, ...)
        raise InvalidImageFormat("Request has invalid image format") from error


def labels(picture: Any) -> list[dict[str, Any]]:
    """Every label found in an RGB Pillow image, most confident first."""
    return assemble(detections(picture))


def detections(picture: Any) -> dict[str, list[dict[str, Any]]]:
    """Each detector's instances (box and confidence) by label."""
    import numpy as np

    found: dict[str, list[dict[str, Any]]] = {}
    gray = np.asarray(_scaled(picture, ANALYSIS_SIDE).convert("L"))
    text = np.asarray(_scaled(picture, TEXT_SIDE).convert("L"))
    for cascade, boxes in zip(CASCADES, cascade_groups(gray, text), strict=True):
        for box, windows in boxes:
            confidence = 100 * (1 - 0.5 ** (windows / cascade.half_life))
            found.setdefault(cascade.label, []).append(_instance(box, gray.shape, confidence))
    for box, glyphs in text_lines(text):
        confidence = 100 * (1 - 0.5 ** (glyphs / TEXT_HALF_LIFE))
        found.setdefault("Text", []).append(_instance(box, text.shape, confidence))
    return found


def assemble(found: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Labels in Rekognition's shape from instances by label: each label as confident as its
    best instance, its ancestors added as labels of their own (as confident as their most
    confident child), one instance per object, most confident first."""
    confidences = {
        name: max(i["Confidence"] for i in items) for name, items in found.items() if items
    }
    for name in list(confidences):
        for parent in TAXONOMY[name][0]:
            confidences[parent] = max(confidences.get(parent, 0.0), confidences[name])
    result = []
    for name, confidence in confidences.items():
        parents, aliases, categories = TAXONOMY[name]
        instances = _without_overlaps(found.get(name, []))
        result.append({
            "Name": name,
            "Confidence": round(confidence, 4),
            "Instances": instances,
            "Parents": [{"Name": p} for p in parents],
            "Aliases": [{"Name": a} for a in aliases],
            "Categories": [{"Name": c} for c in categories],
        })  # fmt: skip
    return sorted(result, key=lambda label: (-label["Confidence"], label["Name"]))


def _scaled(picture: Any, side: int) -> Any:
    from PIL import Image

    scale = side / max(picture.size)
    if scale >= 1:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _instance(box: tuple[float, ...], shape: tuple[int, ...], confidence: float) -> dict[str, Any]:
    """A label instance; its box in fractions of the picture, clipped to it."""
    height, width = shape[:2]
    left, top = max(0.0, box[0] / width), max(0.0, box[1] / height)
    right = min(1.0, (box[0] + box[2]) / width)
    bottom = min(1.0, (box[1] + box[3]) / height)
    return {
        "BoundingBox": {
            "Width": round(right - left, 6),
            "Height": round(bottom - top, 6),
            "Left": round(left, 6),
            "Top": round(top, 6),
        },
        "Confidence": round(confidence, 4),
    }


def _without_overlaps(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One instance per object: of two boxes overlapping by more than half of the smaller
    (an upper body inside a full body), the more confident one."""
    kept: list[dict[str, Any]] = []
    for instance in sorted(instances, key=lambda i: -float(i["Confidence"])):
        if not any(_overlap(instance["BoundingBox"], k["BoundingBox"]) > 0.5 for k in kept):
            kept.append(instance)
    return kept


def _overlap(a: dict[str, float], b: dict[str, float]) -> float:
    width = min(a["Left"] + a["Width"], b["Left"] + b["Width"]) - max(a["Left"], b["Left"])
    height = min(a["Top"] + a["Height"], b["Top"] + b["Height"]) - max(a["Top"], b["Top"])
    smaller = min(a["Width"] * a["Height"], b["Width"] * b["Height"])
    return max(0.0, width) * max(0.0, height) / smaller if smaller > 0 else 0.0


def _filtered(found: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Settings.GeneralLabels: inclusion and exclusion filters on names and categories."""
    names = set(settings.get("LabelInclusionFilters") or [])
    excluded = set(settings.get("LabelExclusionFilters") or [])
    categories = set(settings.get("LabelCategoryInclusionFilters") or [])
    excluded_categories = set(settings.get("LabelCategoryExclusionFilters") or [])

    def kept(label: dict[str, Any]) -> bool:
        of = {c["Name"] for c in label["Categories"]}
        return (
            (not names or label["Name"] in names)
            and label["Name"] not in excluded
            and (not categories or bool(of & categories))
            and not of & excluded_categories
        )

    return [label for label in found if kept(label)]
