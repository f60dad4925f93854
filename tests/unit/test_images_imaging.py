"""Pillow on real bytes: thumbnails of every shape, EXIF orientation, transparency, and the
files an upload may hold that must be refused (not an image, another format, truncated, a
decompression bomb) as `UnusableImage`, never as a crash or a half-grey thumbnail."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chalicelib.images.imaging import (
    ANALYSIS_COPY_SIDE,
    MAX_PIXELS,
    REKOGNITION_MAX_BYTES,
    ImageInfo,
    Thumbnail,
    UnusableImage,
    analysis_copy,
    inspect,
    make_thumbnails,
)

SIZES = (128, 512)
RED, BLUE = (255, 0, 0), (0, 0, 255)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION = 274  # the EXIF tag


def encode(image: Image.Image, format_: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format_, **options)
    return out.getvalue()


def decode(thumbnail: Thumbnail) -> Image.Image:
    """The thumbnail's bytes decoded in full (a corrupt file raises here)."""
    image = Image.open(io.BytesIO(thumbnail.data))
    image.load()
    return image


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random RGB pixels: the worst case for the encoders, and a big file."""
    width, height = size
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3))


def halves(
    size: tuple[int, int], left: tuple[int, ...] | int, right: tuple[int, ...] | int, mode: str
) -> Image.Image:
    image = Image.new(mode, size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR (with a valid CRC) claims another canvas: a decompression bomb's
    header, built without ever allocating the canvas."""
    png = encode(Image.new("1", (1, 1)), "PNG")
    assert png[12:16] == b"IHDR"
    chunk = png[12:29]  # type + 13 bytes of data
    chunk = chunk[:4] + struct.pack(">II", width, height) + chunk[12:]
    return png[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def jpeg_claiming(width: int, height: int) -> bytes:
    """An 8x8 baseline JPEG whose SOF0 claims another canvas."""
    jpeg = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def is_red(pixel: tuple[int, ...]) -> bool:
    return pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def is_blue(pixel: tuple[int, ...]) -> bool:
    return pixel[2] > 200 and pixel[0] < 60 and pixel[1] < 60


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A 12-megapixel noisy JPEG (about 14 MB): made once for the module."""
    return encode(noise((4000, 3000)), "JPEG", quality=90)


# --- thumbnails of every shape -----------------------------------------------------------


def test_a_12_megapixel_jpeg_gives_both_thumbnails(photo: bytes) -> None:
    assert inspect(photo) == ImageInfo("JPEG", 4000, 3000)
    small, large = make_thumbnails(photo, SIZES)
    assert (small.size, small.width, small.height) == (128, 128, 96)
    assert (large.size, large.width, large.height) == (512, 512, 384)
    for thumbnail in (small, large):
        assert thumbnail.content_type == "image/jpeg"
        image = decode(thumbnail)
        assert (image.format, image.mode) == ("JPEG", "RGB")
        assert image.size == (thumbnail.width, thumbnail.height)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((3000, 4000), [(96, 128), (384, 512)]),  # portrait
        ((6000, 500), [(128, 11), (512, 43)]),  # panorama
        ((500, 6000), [(11, 128), (43, 512)]),  # tall strip
        ((100, 60), [(100, 60), (100, 60)]),  # smaller than both: never enlarged
        ((300, 200), [(128, 85), (300, 200)]),  # between the two sizes
        ((1, 1), [(1, 1), (1, 1)]),
    ],
)
def test_thumbnails_keep_the_aspect_ratio_and_never_enlarge(
    size: tuple[int, int], expected: list[tuple[int, int]]
) -> None:
    data = encode(Image.new("RGB", size, (30, 120, 200)), "JPEG")
    thumbnails = make_thumbnails(data, SIZES)
    assert [t.size for t in thumbnails] == list(SIZES)
    assert [(t.width, t.height) for t in thumbnails] == expected
    assert [decode(t).size for t in thumbnails] == expected


def test_a_grayscale_jpeg_stays_a_jpeg() -> None:
    data = encode(Image.new("L", (800, 600), 90), "JPEG")
    for thumbnail in make_thumbnails(data, SIZES):
        image = decode(thumbnail)
        assert (image.format, thumbnail.content_type) == ("JPEG", "image/jpeg")
        assert image.mode in ("L", "RGB")


def test_a_cmyk_jpeg_is_made_rgb() -> None:
    """Browsers show CMYK JPEGs badly or not at all."""
    data = encode(Image.new("CMYK", (800, 600), (0, 255, 255, 0)), "JPEG")
    [thumbnail] = make_thumbnails(data, (128,))
    assert decode(thumbnail).mode == "RGB"


# --- EXIF orientation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "displayed", "red_at"),
    [
        (1, (400, 200), "left"),
        (3, (400, 200), "right"),  # upside down
        (6, (200, 400), "top"),  # camera held rotated: shown turned 90 degrees clockwise
        (8, (200, 400), "bottom"),  # turned 90 degrees counter-clockwise
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, displayed: tuple[int, int], red_at: str
) -> None:
    """Phones store the sensor's pixels and say in EXIF how to turn them: a thumbnail made
    from the raw pixels would lie on its side."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = encode(halves((400, 200), RED, BLUE, "RGB"), "JPEG", exif=exif, quality=95)

    assert inspect(data) == ImageInfo("JPEG", *displayed)
    small, large = make_thumbnails(data, SIZES)
    assert (large.width, large.height) == displayed  # smaller than 512: not enlarged
    assert (small.width, small.height) == tuple(side * 128 // 400 for side in displayed)
    for thumbnail in (small, large):
        image = decode(thumbnail).convert("RGB")
        w, h = image.size
        probes = {
            "left": (w // 8, h // 2),
            "right": (w - 1 - w // 8, h // 2),
            "top": (w // 2, h // 8),
            "bottom": (w // 2, h - 1 - h // 8),
        }
        opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
        assert is_red(image.getpixel(probes[red_at]))
        assert is_blue(image.getpixel(probes[opposite[red_at]]))


def test_a_portrait_photo_with_orientation_6_is_upright() -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = encode(halves((400, 200), RED, BLUE, "RGB"), "JPEG", exif=exif)
    info = inspect(data)
    assert (info.width, info.height) == (200, 400)
    for thumbnail in make_thumbnails(data, SIZES):
        assert thumbnail.height > thumbnail.width
        assert decode(thumbnail).size == (thumbnail.width, thumbnail.height)


# --- PNG -------------------------------------------------------------------------------


def test_png_keeps_its_transparency() -> None:
    data = encode(halves((600, 400), (0, 0, 0, 0), (*RED, 255), "RGBA"), "PNG")
    assert inspect(data) == ImageInfo("PNG", 600, 400)
    small, large = make_thumbnails(data, SIZES)
    assert (large.width, large.height) == (512, 341)
    for thumbnail in (small, large):
        assert thumbnail.content_type == "image/png"
        image = decode(thumbnail)
        assert (image.format, image.mode) == ("PNG", "RGBA")
        w, h = image.size
        assert image.getpixel((w // 8, h // 2))[3] == 0  # transparent stays transparent
        assert image.getpixel((w - 1 - w // 8, h // 2)) == (*RED, 255)


def test_a_palette_png_is_usable() -> None:
    image = halves((600, 400), 0, 1, "P")
    image.putpalette([*RED, *BLUE])
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    for thumbnail in make_thumbnails(data, SIZES):
        decoded = decode(thumbnail).convert("RGB")
        w, h = decoded.size
        assert decoded.getpixel((w // 8, h // 2)) == RED
        assert decoded.getpixel((w - 1 - w // 8, h // 2)) == BLUE


def test_a_palette_png_with_a_transparent_index_keeps_it() -> None:
    image = halves((600, 400), 0, 1, "P")
    image.putpalette([*RED, *BLUE])
    data = encode(image, "PNG", transparency=0)
    [thumbnail] = make_thumbnails(data, (512,))
    decoded = decode(thumbnail).convert("RGBA")
    assert decoded.getpixel((10, 100))[3] == 0
    assert decoded.getpixel((500, 100)) == (*BLUE, 255)


def test_a_16_bit_grayscale_png_is_usable() -> None:
    image = Image.new("I;16", (640, 480))
    image.putdata([(x * 100) % 65536 for x in range(640)] * 480)
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert inspect(data) == ImageInfo("PNG", 640, 480)
    small, large = make_thumbnails(data, SIZES)
    assert [(t.width, t.height) for t in (small, large)] == [(128, 96), (512, 384)]
    for thumbnail in (small, large):
        assert decode(thumbnail).format == "PNG"


def test_a_16_bit_grayscale_png_keeps_its_tones() -> None:
    data = encode(Image.new("I;16", (300, 200), 32768), "PNG")  # mid-grey
    [thumbnail] = make_thumbnails(data, (128,))
    value = decode(thumbnail).convert("L").getpixel((10, 10))
    assert 120 <= value <= 136


# --- headers cut short -----------------------------------------------------------------


def test_a_jpeg_cut_inside_its_header_is_unusable() -> None:
    """A file that ends before its frame header (SOF) does is refused, not retried."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x010E] = "x" * 2000  # ImageDescription: a longer APP1 segment, before the SOF
    data = encode(Image.new("RGB", (64, 48)), "JPEG", exif=exif)
    frame_end = data.index(b"\xff\xc0") + 2 + 17  # marker, then length 17 (3 components)
    for cut in range(1, frame_end):
        with pytest.raises(UnusableImage, match=r"corrupt|not a JPEG or PNG"):
            inspect(data[:cut])


# --- refusals --------------------------------------------------------------------------


def other_format(format_: str) -> bytes:
    return encode(Image.new("RGB", (64, 48), RED), format_)


REFUSED = [
    pytest.param(b"", "empty", id="zero bytes"),
    pytest.param(b"\x00" + random.Random(2).randbytes(4095), "not a JPEG or PNG", id="random"),
    pytest.param(b"Dear diary,\nno image today.\n" * 40, "not a JPEG or PNG", id="text"),
    pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a JPEG or PNG", id="svg"),
    pytest.param(other_format("GIF"), "not a JPEG or PNG", id="gif"),
    pytest.param(other_format("BMP"), "not a JPEG or PNG", id="bmp"),
    pytest.param(other_format("TIFF"), "not a JPEG or PNG", id="tiff"),
    pytest.param(PNG_SIGNATURE, "corrupt|not a JPEG or PNG", id="png signature only"),
    pytest.param(png_claiming(0, 10), "no pixels|not a JPEG or PNG", id="zero width"),
]


@pytest.mark.parametrize(("data", "reason"), REFUSED)
def test_files_that_are_not_usable_images_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(UnusableImage, match=reason) as inspected:
        inspect(data)
    with pytest.raises(UnusableImage, match=reason) as thumbnailed:
        make_thumbnails(data, SIZES)
    assert inspected.value.reason == str(inspected.value)
    assert thumbnailed.value.reason


def test_a_truncated_jpeg_gives_no_half_grey_thumbnail(photo: bytes) -> None:
    """Its header is whole (inspect is content), its pixels are not."""
    half = photo[: len(photo) // 2]
    assert inspect(half) == ImageInfo("JPEG", 4000, 3000)
    with pytest.raises(UnusableImage, match="corrupt") as refused:
        make_thumbnails(half, SIZES)
    assert "truncated" in refused.value.reason


def test_a_truncated_png_gives_no_thumbnail() -> None:
    data = encode(noise((300, 200), seed=3), "PNG")
    with pytest.raises(UnusableImage, match="corrupt"):
        make_thumbnails(data[: len(data) // 2], SIZES)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_claiming(20_000, 20_000), id="png 400 MP"),
        pytest.param(png_claiming(9_000, 9_000), id="png 81 MP"),  # Pillow only warns
        pytest.param(png_claiming(MAX_PIXELS + 1, 1), id="png one row"),
        pytest.param(jpeg_claiming(65_535, 65_535), id="jpeg 4.3 GP"),
        pytest.param(jpeg_claiming(10_000, 6_401), id="jpeg just over"),
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header(data: bytes) -> None:
    """A few bytes claiming a canvas of hundreds of megapixels: refused before anything is
    decoded (decoding it would need gigabytes)."""
    assert len(data) < 1000
    for call in (inspect, lambda d: make_thumbnails(d, SIZES), analysis_copy):
        with pytest.raises(UnusableImage, match="decompression bomb"):
            call(data)


def test_the_largest_canvas_allowed_is_not_a_bomb() -> None:
    """Exactly MAX_PIXELS passes the size check (then fails on its missing pixel data)."""
    with pytest.raises(UnusableImage) as refused:
        make_thumbnails(png_claiming(MAX_PIXELS // 8000, 8000), SIZES)
    assert "decompression bomb" not in refused.value.reason


# --- the copy sent to Rekognition ------------------------------------------------------


def test_the_analysis_copy_of_a_big_jpeg_fits_rekognition(photo: bytes) -> None:
    copy = analysis_copy(photo)
    assert len(copy) <= REKOGNITION_MAX_BYTES
    image = Image.open(io.BytesIO(copy))
    assert image.format == "JPEG"
    assert max(image.size) <= ANALYSIS_COPY_SIDE
    assert image.size == (2048, 1536)


def test_the_analysis_copy_of_a_png_is_a_jpeg() -> None:
    data = encode(halves((3000, 2000), (0, 0, 0, 0), (*RED, 255), "RGBA"), "PNG")
    image = Image.open(io.BytesIO(analysis_copy(data)))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (2048, 1365))


# --- anything at all -------------------------------------------------------------------

SEEDS = [
    encode(Image.new("RGB", (20, 10), RED), "JPEG"),
    encode(Image.new("L", (20, 10)), "JPEG", progressive=True),
    encode(Image.new("RGBA", (20, 10)), "PNG"),
    encode(Image.new("P", (20, 10)), "PNG", transparency=0),
]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A small real JPEG or PNG with a few bytes changed, cut or inserted: gets past the
    signature check, where arbitrary bytes almost never do."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "cut", "insert"]))
        if action == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


ANY_BYTES = st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.sampled_from([b"\xff\xd8\xff", PNG_SIGNATURE]), st.binary(max_size=2000)).map(
        b"".join
    ),
    damaged(),
)


@settings(max_examples=1000, deadline=None)
@given(ANY_BYTES)
def test_any_bytes_give_an_image_or_unusable_image(data: bytes) -> None:
    """Whatever a user uploads, the pipeline sees a result or UnusableImage, never an
    exception it would take for an outage and retry."""
    try:
        info = inspect(data)
    except UnusableImage as error:
        assert error.reason
    else:
        assert info.format in ("JPEG", "PNG")
    try:
        thumbnails = make_thumbnails(data, SIZES)
    except UnusableImage as error:
        assert error.reason
    else:
        assert [t.size for t in thumbnails] == list(SIZES)
