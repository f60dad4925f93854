"""Text-like regions for the local Rekognition (`local/vision.py`): lines of glyph-sized
strokes, found with a morphological gradient.

Printed text is a row of small, strong edges of one height with short gaps: the gradient's
strong pixels, joined across those gaps, make a wide flat blob per line. A blob counts as a
line when it is at least twice as wide as high, not a large part of the picture, dense with
edges, and holds at least MIN_STROKES separate strokes about as high as the line (letters);
its confidence grows with that count. Stripes, horizons and fur have too few such strokes, or
too many joined into one; noise joins into blobs as high as the picture.
"""

from __future__ import annotations

from typing import Any

#: Strokes in a line for 50 % confidence (12 strokes: 75 %; 24: about 94 %).
TEXT_HALF_LIFE = 6.0
#: Fewer strokes than this is not a line of text.
MIN_STROKES = 4
#: Gradients weaker than this are never text edges (grey levels, 0-255).
MIN_EDGE = 40
#: Line heights, pixels of the TEXT_SIDE copy, and as a share of the picture's height.
MIN_HEIGHT = 8
MAX_HEIGHT_SHARE = 0.15
#: Gaps between strokes bridged into one line (pixels of the TEXT_SIDE copy): letters and words.
JOIN_GAP = 15
#: Share of a line's box that is edges.
MIN_FILL = 0.3


def text_lines(gray: Any) -> list[tuple[tuple[int, int, int, int], int]]:
    """(x, y, w, h) and glyph-like strokes of each text-like line in a grayscale array."""
    import cv2

    height = gray.shape[0]
    gradient = cv2.morphologyEx(
        gray, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    )
    otsu, _ = cv2.threshold(gradient, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    _, edges = cv2.threshold(gradient, max(otsu, MIN_EDGE), 255, cv2.THRESH_BINARY)
    joined = cv2.morphologyEx(
        edges, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (JOIN_GAP, 1))
    )
    contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lines = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if h < MIN_HEIGHT or h > MAX_HEIGHT_SHARE * height or w < 2 * h:
            continue
        region = edges[y : y + h, x : x + w]
        if cv2.countNonZero(region) < MIN_FILL * w * h:
            continue
        strokes = _glyphs(gray[y : y + h, x : x + w])
        if strokes >= MIN_STROKES:
            lines.append(((x, y, w, h), strokes))
    return lines


def _glyphs(line: Any) -> int:
    """Ink blobs (the darker or lighter pixels, whichever are fewer) between a third of the
    line's height and all of it, and no wider than one and a half times it: letters."""
    import cv2

    height = line.shape[0]
    _, ink = cv2.threshold(line, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    if cv2.countNonZero(ink) > ink.size / 2:
        ink = cv2.bitwise_not(ink)
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return sum(
        1 for _, _, w, h, _ in stats[1:count] if height / 3 <= h <= height and w <= 1.5 * height
    )
