"""The Haar cascades of the local Rekognition (`local/vision.py`): which ones, and how their
windows become objects with a count of confirming windows (see `local/vision.py` for how that
count becomes a confidence)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cascade:
    label: str
    file: str
    min_size: tuple[int, int]  # pixels of the ANALYSIS_SIDE copy
    half_life: float  # confirming windows for 50 % confidence


CASCADES = (
    Cascade("Face", "haarcascade_frontalface_alt2.xml", (20, 20), 10.0),
    Cascade("Person", "haarcascade_upperbody.xml", (44, 36), 20.0),
    Cascade("Person", "haarcascade_fullbody.xml", (28, 56), 20.0),
    Cascade("Cat", "haarcascade_frontalcatface_extended.xml", (32, 32), 10.0),
)
SCALE_FACTOR = 1.1
#: Each object found is looked at again with its window this many times the cascade's own.
STANDARD_SIZE = 3.0
CONFIRM_SCALE_FACTOR = 1.05
#: Objects looked at again, per cascade (the best first pass groups): bounds the time.
MAX_CANDIDATES = 20
#: Windows whose edges all lie within this fraction of their size are one group (OpenCV's).
GROUP_EPS = 0.2

_lock = threading.Lock()  # OpenCV's cascades are not safe to share between threads
_classifiers: list[Any] = []


def cascade_groups(gray: Any, fine: Any) -> list[list[tuple[tuple[float, ...], int]]]:
    """For each cascade, its objects in `gray`: (x, y, w, h) and the windows that confirm it
    when looked at again at the cascade's standard size (`_confirmations`, in `fine`, a larger
    copy of the same picture)."""
    import cv2

    equalized = cv2.equalizeHist(gray)
    zoom = fine.shape[1] / gray.shape[1]
    with _lock:
        if not _classifiers:
            for cascade in CASCADES:
                classifier = cv2.CascadeClassifier(cv2.data.haarcascades + cascade.file)
                if classifier.empty():
                    raise RuntimeError(f"OpenCV could not load {cascade.file}")
                _classifiers.append(classifier)
        results = []
        for cascade, classifier in zip(CASCADES, _classifiers, strict=True):
            windows, _, _ = classifier.detectMultiScale3(
                equalized,
                scaleFactor=SCALE_FACTOR,
                minNeighbors=0,
                minSize=cascade.min_size,
                outputRejectLevels=True,
            )
            candidates = sorted(_groups([tuple(int(v) for v in w) for w in windows]),
                                key=lambda group: -group[1])[:MAX_CANDIDATES]  # fmt: skip
            confirmed = []
            for box, _ in candidates:
                found = _confirmations(classifier, fine, tuple(v * zoom for v in box))
                if found:
                    confirmed.append((box, found))
            results.append(confirmed)
    return results


def _confirmations(classifier: Any, fine: Any, box: tuple[float, ...]) -> int:
    """How many windows find the object in `box` once its surroundings (half its size on
    each side) are scaled so that it is STANDARD_SIZE times the cascade's window: a count that
    does not grow with the object's size in the picture, as the first pass's does."""
    import cv2

    window_width, window_height = classifier.getOriginalWindowSize()
    x, y, w, h = box
    scale = STANDARD_SIZE * window_width / w
    left, top = round(x - w / 2), round(y - h / 2)
    right, bottom = round(x + 1.5 * w), round(y + 1.5 * h)
    crop = fine[max(0, top) : max(0, bottom), max(0, left) : max(0, right)]
    if crop.size == 0:
        return 0
    crop = cv2.copyMakeBorder(
        crop,
        max(0, -top),
        max(0, bottom - fine.shape[0]),
        max(0, -left),
        max(0, right - fine.shape[1]),
        cv2.BORDER_REPLICATE,
    )
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    crop = cv2.equalizeHist(cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
    low = (round(window_width * STANDARD_SIZE / 1.5), round(window_height * STANDARD_SIZE / 1.5))
    high = (round(window_width * STANDARD_SIZE * 1.5), round(window_height * STANDARD_SIZE * 1.5))
    windows, _, _ = classifier.detectMultiScale3(
        crop,
        scaleFactor=CONFIRM_SCALE_FACTOR,
        minNeighbors=0,
        minSize=low,
        maxSize=high,
        outputRejectLevels=True,
    )
    expected = (w * scale / 2, h * scale / 2, w * scale, h * scale)
    return sum(1 for window in windows if _similar(tuple(window), expected, 2 * GROUP_EPS))


def _similar(a: tuple[float, ...], b: tuple[float, ...], eps: float = GROUP_EPS) -> bool:
    """OpenCV's SimilarRects: every edge within eps of the two boxes' mean size."""
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return all(abs(p - q) <= delta for p, q in zip(_edges(a), _edges(b), strict=True))


def _groups(windows: list[tuple[int, ...]]) -> list[tuple[tuple[float, ...], int]]:
    """OpenCV's grouping (groupRectangles' similarity), keeping each group's size: the mean
    box of every group of two or more windows, not inside a group of more windows."""
    parent = list(range(len(windows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            if _similar(a, windows[j]):
                parent[root(i)] = root(j)
    members: dict[int, list[tuple[int, ...]]] = {}
    for i, window in enumerate(windows):
        members.setdefault(root(i), []).append(window)
    groups = [
        (tuple(sum(w[k] for w in ws) / len(ws) for k in range(4)), len(ws))
        for ws in members.values()
        if len(ws) >= 2
    ]
    return [
        (box, n)
        for box, n in groups
        if not any(m > n and _inside(box, other) for other, m in groups if other is not box)
    ]


def _edges(box: tuple[float, ...]) -> tuple[float, ...]:
    return box[0], box[1], box[0] + box[2], box[1] + box[3]


def _inside(inner: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    dx, dy = outer[2] * GROUP_EPS, outer[3] * GROUP_EPS
    return (
        inner[0] >= outer[0] - dx
        and inner[1] >= outer[1] - dy
        and inner[0] + inner[2] <= outer[0] + outer[2] + dx
        and inner[1] + inner[3] <= outer[1] + outer[3] + dy
    )
