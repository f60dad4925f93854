"""Reading and shrinking images with Pillow: bytes in, bytes out, no AWS.

Pillow is imported inside each function: only the image functions pay for it at cold start.

Untrusted files are handled defensively:
- only JPEG and PNG are accepted, whatever the key's extension says;
- the pixel count is checked from the header, before anything is decoded, so a
  decompression bomb (a small file claiming a huge canvas) is refused without allocating it;
- a truncated or corrupt file is an `UnusableImage`, never a half-grey thumbnail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from chalicelib.images.model import FORMATS

#: Largest canvas accepted (width x height). 12-megapixel photos are common and 50 MP phones
#: exist; an RGB canvas of this size is 192 MB decoded, within a 1,024 MB function.
MAX_PIXELS = 64_000_000
#: JPEG thumbnails: quality 85 is visually lossless at these sizes; progressive loads nicely.
JPEG_QUALITY = 85
#: Rekognition reads S3 objects up to 15 MB, and images passed as bytes up to 5 MB.
REKOGNITION_MAX_S3_BYTES = 15 * 1024 * 1024
REKOGNITION_MAX_BYTES = 5 * 1024 * 1024
#: Long side of the copy sent to Rekognition when the original is too big for it.
ANALYSIS_COPY_SIDE = 2048
#: How JPEG and PNG files start: anything else is refused without reading further.
#: Orientations (EXIF tag 274) that swap width and height when applied.
_TRANSPOSED = {5, 6, 7, 8}
#: Orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE_METHODS = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
#: Modes Image.reduce() takes.
_REDUCIBLE_MODES = {"L", "LA", "I", "F", "RGB", "RGBA", "RGBX", "CMYK"}


class UnusableImage(Exception):
    """The file is not an image this app can use; `reason` says why, for the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    format: str  # JPEG or PNG
    width: int  # as displayed: EXIF orientation applied
    height: int

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]


@dataclass(frozen=True)
class Thumbnail:
    size: int  # the long side asked for
    data: bytes
    width: int
    height: int
    content_type: str


def inspect(data: bytes) -> ImageInfo:
    """Format and displayed size from the header; nothing is decoded."""
    image = _open(data)
    try:
        width, height = image.size
        orientation = _orientation(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnusableImage(f"the file is corrupt ({error})") from error
    finally:
        image.close()
    if orientation in _TRANSPOSED:
        width, height = height, width
    return ImageInfo("JPEG" if _is_jpeg(image.format) else "PNG", width, height)


def make_thumbnails(data: bytes, sizes: tuple[int, ...]) -> list[Thumbnail]:
    """One thumbnail per long side in `sizes` (never enlarged), EXIF orientation applied,
    in the original's format (PNG keeps transparency).

    Memory stays near one decoded canvas: JPEGs are decoded with draft mode (the decoder
    scales by 1/2, 1/4 or 1/8 while it reads, so a 12-megapixel photo is never decoded at
    full size), a PNG is reduced right after decoding, and everything after works on the
    small copy.
    """
    from PIL import Image

    image = _open(data)
    try:
        largest = max(sizes)
        width, height = image.size
        if _is_jpeg(image.format):
            # At least twice the largest thumbnail, so the final resample stays sharp.
            scale = min(1.0, 2 * largest / max(width, height))
            image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        try:
            image.load()
            orientation = _orientation(image)
            small = _reduced(image, 2 * largest)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UnusableImage(f"the image data is corrupt ({error})") from error
        if small is not image:
            image.close()
        method = _TRANSPOSE_METHODS.get(orientation)
        upright = small.transpose(Image.Transpose[method]) if method else small
        format_ = "JPEG" if _is_jpeg(image.format) else "PNG"
        source = _normalise_mode(upright, format_)
        thumbnails = []
        for size in sorted(sizes, reverse=True):  # each from the one before: cheaper
            copy = source.copy()
            copy.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=None)
            thumbnails.append(_encode(copy, size, format_))
            source = copy
        return sorted(thumbnails, key=lambda t: t.size)
    finally:
        image.close()


def analysis_copy(data: bytes) -> bytes:
    """A JPEG of at most ANALYSIS_COPY_SIDE px on its long side and under Rekognition's 5 MB
    limit for images sent as bytes: for originals too big for Rekognition to read from S3."""
    [thumbnail] = make_thumbnails(data, (ANALYSIS_COPY_SIDE,))
    if thumbnail.content_type == "image/jpeg" and len(thumbnail.data) <= REKOGNITION_MAX_BYTES:
        return thumbnail.data
    from PIL import Image

    with Image.open(io.BytesIO(thumbnail.data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def _open(data: bytes):  # type: ignore[no-untyped-def]
    """The image opened lazily (header only), checked for format and canvas size."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UnusableImage("the file is empty")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard, for anything that bypasses ours
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_PIXELS and twice that: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])  # MPO comes as JPEG
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnusableImage(f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise UnusableImage("the file is not a JPEG or PNG image") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnusableImage(f"the file is corrupt ({error})") from error
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise UnusableImage("the image has no pixels")
    if width * height > MAX_PIXELS:
        image.close()
        raise UnusableImage(
            f"decompression bomb refused: {width}x{height} is over {MAX_PIXELS:,} pixels"
        )
    return image


def _is_jpeg(format_: str | None) -> bool:
    """MPO (several pictures in one JPEG, as dual-camera phones write) is a JPEG too."""
    return format_ in ("JPEG", "MPO")


def _reduced(image, at_least: int):  # type: ignore[no-untyped-def]
    """The loaded image shrunk by a whole factor, its long side still >= `at_least`, so the
    full canvas can be dropped at once; the image itself if it is small enough."""
    factor = max(image.size) // at_least
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        if image.mode == "P":
            mode = "RGBA" if "transparency" in image.info else "RGB"
        else:
            mode = {"1": "L"}.get(image.mode, "I" if image.mode.startswith("I;16") else "RGBA")
        converted = image.convert(mode)
        reduced = converted.reduce(factor)
        converted.close()
        return reduced
    return image.reduce(factor)


def _orientation(image) -> int:  # type: ignore[no-untyped-def]
    """The EXIF orientation, read from the header only. (Pillow's `getexif()` on a PNG
    decodes the whole image unless its eXIf chunk comes before the pixels.)"""
    from PIL import Image

    try:
        if _is_jpeg(image.format):
            return int(image.getexif().get(274, 1))
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(274, 1))
    except (TypeError, ValueError, SyntaxError, OSError):
        return 1


def _normalise_mode(image, format_: str):  # type: ignore[no-untyped-def]
    """JPEG holds RGB or L; PNG keeps its alpha channel (palette and 16-bit made 8-bit RGBA)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey: scale to 8 bits (convert() would clip everything over 255 to white).
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if format_ == "JPEG":
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    return image.convert("RGBA")


def _encode(image, size: int, format_: str) -> Thumbnail:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    if format_ == "JPEG":
        image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    else:
        image.save(out, "PNG", optimize=True)
    return Thumbnail(size, out.getvalue(), image.width, image.height, FORMATS[format_])
