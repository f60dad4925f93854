"""The local Rekognition's eyes (`local/vision.py`): what it finds in the real sample photos,
what it must not find in blank, noisy and generated pictures, and DetectLabels' parameters."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from infra.paths import PROJECT_DIR
from local import upload, vision

SAMPLES = PROJECT_DIR / "local" / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.jpg").read_bytes()


def encoded(picture: Image.Image, fmt: str = "JPEG", orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    if orientation is None:
        picture.save(out, fmt)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture.save(out, fmt, exif=exif)
    return out.getvalue()


def names(answer: dict[str, Any]) -> list[str]:
    return [label["Name"] for label in answer["Labels"]]


def boxes(answer: dict[str, Any]) -> list[dict[str, float]]:
    return [i["BoundingBox"] for label in answer["Labels"] for i in label["Instances"]]


def text_picture() -> Image.Image:
    picture = Image.new("RGB", (900, 400), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=28)
    for row, line in enumerate(
        ["The quick brown fox jumps over", "the lazy dog, 1234567890.", "Labelled locally."]
    ):
        draw.text((40, 40 + 50 * row), line, fill="black", font=font)
    return picture


@pytest.fixture(scope="module")
def astronaut() -> dict[str, Any]:
    return vision.detect_labels(sample("astronaut"))


def test_the_astronaut_is_a_face_a_head_and_a_person(astronaut: dict[str, Any]) -> None:
    labels = {label["Name"]: label for label in astronaut["Labels"]}
    assert set(labels) == {"Face", "Head", "Person"}
    assert labels["Face"]["Confidence"] >= 90
    assert labels["Face"]["Parents"] == [{"Name": "Head"}, {"Name": "Person"}]
    assert labels["Person"]["Aliases"] == [{"Name": "Human"}]
    assert labels["Person"]["Categories"] == [{"Name": "Person Description"}]
    assert labels["Person"]["Confidence"] == labels["Face"]["Confidence"]  # from its child
    [face] = labels["Face"]["Instances"]
    assert face["Confidence"] == labels["Face"]["Confidence"]
    # Her face: about 18 % of the portrait's width, a third of the way in, near the top.
    box = face["BoundingBox"]
    assert 0.3 < box["Left"] < 0.4 and 0.08 < box["Top"] < 0.18
    assert 0.14 < box["Width"] < 0.24 and 0.14 < box["Height"] < 0.24


@pytest.mark.parametrize("size", [(4000, 3000), (1200, 900)])
@pytest.mark.parametrize("share", [0.8, 0.5])
def test_a_face_scores_alike_at_any_size(size: tuple[int, int], share: float) -> None:
    """The portrait at 80 % or 50 % of the height of a large or small noisy photo: a face
    from 6 % to 19 % of the picture's width, each as confident (checked again at one size)."""
    width, height = size
    canvas = Image.effect_noise(size, 40).convert("RGB")
    side = round(height * share)
    portrait = Image.open(io.BytesIO(sample("astronaut"))).resize((side, side))
    canvas.paste(portrait, ((width - side) // 2, (height - side) // 2))
    answer = vision.detect_labels(encoded(canvas), max_labels=10, min_confidence=80)
    assert names(answer)[:3] == ["Face", "Head", "Person"]
    assert answer["Labels"][0]["Confidence"] >= 95
    [face] = answer["Labels"][0]["Instances"]
    expected_left = ((width - side) / 2 + 0.346 * side) / width
    assert face["BoundingBox"]["Left"] == pytest.approx(expected_left, abs=0.02)


def test_a_photo_of_a_coffee_cup_gets_no_labels() -> None:
    assert vision.detect_labels(sample("coffee"))["Labels"] == []


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (800, 600), (30, 120, 200)),
        Image.effect_noise((1600, 1200), 40).convert("RGB"),
        Image.frombytes("RGB", (640, 480), bytes((i * 7919) % 251 for i in range(640 * 480 * 3))),
    ],
    ids=["solid", "gaussian-noise", "pseudo-random-noise"],
)
def test_blank_and_noisy_pictures_get_no_labels(picture: Image.Image) -> None:
    for fmt in ("JPEG", "PNG"):
        assert vision.detect_labels(encoded(picture, fmt))["Labels"] == []


def test_the_generated_upload_sample_gets_no_labels(tmp_path: Path) -> None:
    data = upload.sample_photo(tmp_path / "sample.jpg").read_bytes()
    assert vision.detect_labels(data)["Labels"] == []


def test_printed_text_is_text() -> None:
    answer = vision.detect_labels(encoded(text_picture(), "PNG"))
    assert names(answer) == ["Text"]
    [text] = answer["Labels"]
    assert text["Confidence"] >= 80 and text["Categories"] == [{"Name": "Text and Documents"}]
    assert len(text["Instances"]) == 3, "one per line"
    tops = sorted(i["BoundingBox"]["Top"] for i in text["Instances"])
    assert tops == pytest.approx([0.11, 0.235, 0.36], abs=0.04)


def test_boxes_are_fractions_of_the_picture(astronaut: dict[str, Any]) -> None:
    found = boxes(astronaut) + boxes(vision.detect_labels(encoded(text_picture())))
    found += boxes(vision.detect_labels(sample("astronaut"), min_confidence=0))
    assert len(found) >= 5
    for box in found:
        assert all(0 <= box[k] <= 1 for k in ("Left", "Top", "Width", "Height")), box
        assert box["Left"] + box["Width"] <= 1 + 1e-6 and box["Top"] + box["Height"] <= 1 + 1e-6


def test_max_labels_keeps_the_most_confident(astronaut: dict[str, Any]) -> None:
    assert names(vision.detect_labels(sample("astronaut"), max_labels=2)) == ["Face", "Head"]
    assert vision.detect_labels(sample("astronaut"), max_labels=0)["Labels"] == []
    assert names(astronaut) == ["Face", "Head", "Person"], "ties: by name"


def test_min_confidence_applies_to_labels_and_instances(astronaut: dict[str, Any]) -> None:
    everything = vision.detect_labels(sample("astronaut"), min_confidence=0)
    weak = [i["Confidence"] for label in everything["Labels"] for i in label["Instances"]]
    assert min(weak) < 55, "the defaults hide weaker detections"
    for floor in (55, 80, 90):
        answer = vision.detect_labels(sample("astronaut"), min_confidence=floor)
        assert answer["Labels"]
        for label in answer["Labels"]:
            assert label["Confidence"] >= floor
            assert all(i["Confidence"] >= floor for i in label["Instances"])
    face = astronaut["Labels"][0]["Confidence"]
    assert vision.detect_labels(sample("astronaut"), min_confidence=face + 0.01)["Labels"] == []


def test_a_jpeg_is_turned_upright_by_its_exif_orientation_first() -> None:
    """As Rekognition does: boxes are of the upright picture. The same pixels without the
    tag are a face lying on its side, which a frontal face detector does not find."""
    upright = Image.open(io.BytesIO(sample("astronaut")))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # shown after a 90° clockwise turn
    tagged = vision.detect_labels(encoded(sideways, orientation=6))
    assert names(tagged) == ["Face", "Head", "Person"]
    expected = vision.detect_labels(sample("astronaut"))["Labels"][0]["Instances"][0]
    got = tagged["Labels"][0]["Instances"][0]["BoundingBox"]
    assert got == pytest.approx(expected["BoundingBox"], abs=0.03)
    assert vision.detect_labels(encoded(sideways))["Labels"] == []


def test_a_png_is_taken_as_stored() -> None:
    sideways = Image.open(io.BytesIO(sample("astronaut"))).transpose(Image.Transpose.ROTATE_90)
    assert vision.detect_labels(encoded(sideways, "PNG", orientation=6))["Labels"] == []


def test_a_cat_brings_its_ancestors() -> None:
    box = {"Width": 0.5, "Height": 0.5, "Left": 0.25, "Top": 0.25}
    found = vision.assemble({"Cat": [{"BoundingBox": box, "Confidence": 91.5}]})
    assert [(label["Name"], label["Confidence"]) for label in found] == [
        ("Animal", 91.5), ("Cat", 91.5), ("Mammal", 91.5), ("Pet", 91.5),
    ]  # fmt: skip
    cat = next(label for label in found if label["Name"] == "Cat")
    assert cat["Parents"] == [{"Name": "Animal"}, {"Name": "Mammal"}, {"Name": "Pet"}]
    assert cat["Categories"] == [{"Name": "Animals and Pets"}]
    assert [len(label["Instances"]) for label in found] == [0, 1, 0, 0]


def test_overlapping_instances_of_one_label_are_one_object() -> None:
    def instance(left: float, confidence: float) -> dict[str, Any]:
        box = {"Width": 0.2, "Height": 0.4, "Left": left, "Top": 0.1}
        return {"BoundingBox": box, "Confidence": confidence}

    [person] = vision.assemble(
        {"Person": [instance(0.1, 70.0), instance(0.12, 85.0), instance(0.6, 60.0)]}
    )
    assert [i["Confidence"] for i in person["Instances"]] == [85.0, 60.0]


def test_label_filters_in_settings(astronaut: dict[str, Any]) -> None:
    def only(**general: list[str]) -> list[str]:
        settings = {"GeneralLabels": general}
        return names(vision.detect_labels(sample("astronaut"), settings=settings))

    assert only(LabelInclusionFilters=["Person"]) == ["Person"]
    assert only(LabelExclusionFilters=["Head"]) == ["Face", "Person"]
    assert only(LabelCategoryExclusionFilters=["Person Description"]) == []
    assert only(LabelCategoryInclusionFilters=["Animals and Pets"]) == []


def test_image_properties_only_when_asked() -> None:
    data = encoded(Image.new("RGB", (300, 200), (70, 130, 180)), "PNG")  # CSS steelblue
    assert "ImageProperties" not in vision.detect_labels(data)
    answer = vision.detect_labels(data, features=["IMAGE_PROPERTIES"])
    assert answer["Labels"] == []
    [colour] = answer["ImageProperties"]["DominantColors"]
    assert colour == {
        "Red": 70, "Green": 130, "Blue": 180, "HexCode": "#4682B4",
        "CSSColor": "steelblue", "SimplifiedColor": "blue", "PixelPercent": 100.0,
    }  # fmt: skip
    quality = answer["ImageProperties"]["Quality"]
    assert quality["Contrast"] == 0 and quality["Sharpness"] == 0 and quality["Brightness"] > 0


def test_dominant_colours_of_a_photo(astronaut: dict[str, Any]) -> None:
    answer = vision.detect_labels(
        sample("astronaut"),
        features=["GENERAL_LABELS", "IMAGE_PROPERTIES"],
        settings={"ImageProperties": {"MaxDominantColors": 5}},
    )
    assert answer["Labels"] == astronaut["Labels"]
    colours = answer["ImageProperties"]["DominantColors"]
    assert 1 < len(colours) <= 5
    assert sum(c["PixelPercent"] for c in colours) == pytest.approx(100, abs=0.01)
    assert [c["PixelPercent"] for c in colours] == sorted(
        (c["PixelPercent"] for c in colours), reverse=True
    )
    assert "orange" in {c["SimplifiedColor"] for c in colours}, "her suit"
    assert all(c["SimplifiedColor"] in vision_colours() for c in colours)


def vision_colours() -> tuple[str, ...]:
    from local.vision_colour import SIMPLIFIED

    return SIMPLIFIED


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not an image at all", vision.InvalidImageFormat),
        (b"GIF89a" + bytes(100), vision.InvalidImageFormat),
        (b"\xff\xd8\xff\xe0" + bytes(200), vision.InvalidImageFormat),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), vision.InvalidImageFormat),
    ],
    ids=["text", "gif", "broken-jpeg", "broken-png"],
)
def test_what_is_not_a_jpeg_or_png_is_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        vision.detect_labels(data)
    assert raised.value.code == "InvalidImageFormatException"


def test_a_truncated_jpeg_is_refused() -> None:
    with pytest.raises(vision.InvalidImageFormat):
        vision.detect_labels(sample("astronaut")[:5000])


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_labels": -1},
        {"max_labels": 1001},
        {"min_confidence": -0.5},
        {"min_confidence": 100.5},
        {"features": ["GENERAL_LABELS", "FACES"]},
        {"settings": {"ImageProperties": {"MaxDominantColors": 21}}},
        {"settings": {"GeneralLabels": "Person"}},
    ],
)
def test_out_of_range_parameters_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(vision.InvalidParameter) as raised:
        vision.detect_labels(sample("coffee"), **arguments)
    assert raised.value.code == "InvalidParameterException"


def test_the_defaults_are_rekognitions() -> None:
    """MaxLabels 1000 and MinConfidence 55; 0, 100 and 1000 are in range."""
    default = vision.detect_labels(sample("astronaut"))
    assert default == vision.detect_labels(sample("astronaut"), max_labels=1000, min_confidence=55)
    assert default != vision.detect_labels(sample("astronaut"), min_confidence=0)
    assert vision.detect_labels(sample("astronaut"), min_confidence=100)["Labels"] == []


def test_opencv_is_imported_on_the_first_detection_only() -> None:
    script = (
        "import sys\n"
        "import local.fidelity, local.rekognition, local.vision\n"
        "heavy = {'cv2', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "local.vision.detect_labels(open('local/samples/coffee.jpg', 'rb').read())\n"
        "assert 'cv2' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_upload_samples_are_small_real_jpegs() -> None:
    assert set(upload.SAMPLES) == {"astronaut", "coffee"}
    for name, file in upload.SAMPLES.items():
        path = upload.SAMPLES_DIR / file
        assert path.stat().st_size <= 60_000, name
        with Image.open(path) as picture:
            assert picture.format == "JPEG" and min(picture.size) >= 400
    assert "public domain" in (upload.SAMPLES_DIR / "README.md").read_text()


def test_upload_takes_a_file_or_a_sample_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(sample("coffee"))
    argv = [str(photo), "--sample", "astronaut", "--state-dir", str(tmp_path)]
    assert upload.main(argv) == 2
    assert capsys.readouterr().err.strip() == "Give FILE or SAMPLE, not both."
