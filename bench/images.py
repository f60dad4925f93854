"""Images: the time to make a photo's two thumbnails, and what Pillow adds to the package.

(a) Thumbnails. One 12-megapixel (4000x3000) photo-like JPEG (three colour gradients plus
per-channel Gaussian noise, quality 90: a file of about 4 MB, as a phone makes) is made
once. `chalicelib.images.imaging.make_thumbnails(data, (128, 512))` is timed on it (median
and p95), interleaved with the same work without draft decoding: open, load at full size,
`ImageOps.exif_transpose`, then for 512 and 128 px a copy, `thumbnail(..., LANCZOS,
reducing_gap=None)` and the same JPEG encoding (quality, optimize, progressive). Draft mode
lets libjpeg scale by 1/2, 1/4 or 1/8 while decoding; the ratio shows what it saves. One
untimed round first (imports, page cache). Times are this machine's, on one core: the
make_thumbnails function has 1,024 MB, and Lambda gives a function CPU in proportion to its
memory (one vCPU at 1,769 MB), so expect it to take up to ~1.7 times as long there.

(b) Package size. out/dev/deployment.zip is measured when it exists, is newer than
requirements.txt and holds Pillow; otherwise `python -m infra.package --stage dev` builds it
first (it needs the package index for the manylinux wheels; a failure is reported, not
raised). Sizes are the zip entries' compressed sizes: Pillow (`PIL/`, `pillow.libs/`,
`pillow-*.dist-info/`) against the rest; the zip file itself against Lambda's 50 MB limit
for a zipped package uploaded directly, and its unzipped size against the 250 MB limit
(information).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import AWS_OVERRIDES, Result, median, ms, percentile
from infra.paths import PROJECT_DIR

SIZE = (4000, 3000)
PHOTO_QUALITY = 90
NOISE_SIGMA = 12
THUMBNAIL_SIZES = (128, 512)
TARGET_S = 0.3
STAGE = "dev"
ZIP_PATH = PROJECT_DIR / "out" / STAGE / "deployment.zip"
REQUIREMENTS = PROJECT_DIR / "requirements.txt"
PACKAGE_TIMEOUT_S = 900
#: Lambda quotas: deployment package (.zip) uploaded directly, zipped; and unzipped.
LAMBDA_ZIPPED_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
_PILLOW_ENTRY = re.compile(r"^(PIL/|pillow\.libs/|pillow-[^/]*\.dist-info/)", re.IGNORECASE)
MB = 1024 * 1024


def photo() -> bytes:
    """A 4000x3000 JPEG that compresses like a photo: smooth gradients and sensor noise."""
    from PIL import Image, ImageChops

    def gradient(angle: float) -> Image.Image:
        return Image.linear_gradient("L").rotate(angle).resize(SIZE, Image.Resampling.BILINEAR)

    base = Image.merge("RGB", (gradient(0), gradient(90), gradient(225)))
    noise = Image.merge("RGB", [Image.effect_noise(SIZE, NOISE_SIGMA) for _ in range(3)])
    out = io.BytesIO()
    ImageChops.add(base, noise, offset=-128).save(out, "JPEG", quality=PHOTO_QUALITY)
    return out.getvalue()


def thumbnails_without_draft(data: bytes) -> list[bytes]:
    """make_thumbnails' work, but decoding the JPEG at full size."""
    from PIL import Image, ImageOps

    from chalicelib.images.imaging import JPEG_QUALITY

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        source = ImageOps.exif_transpose(image)
        encoded = []
        for size in sorted(THUMBNAIL_SIZES, reverse=True):
            copy = source.copy()
            copy.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=None)
            out = io.BytesIO()
            copy.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
            encoded.append(out.getvalue())
            source = copy
    return encoded


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median_s": median(samples),
        "p95_s": percentile(samples, 95),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
    }


def time_thumbnails(runs: int) -> dict[str, Any]:
    from chalicelib.images.imaging import inspect, make_thumbnails

    data = photo()
    info = inspect(data)
    made = make_thumbnails(data, THUMBNAIL_SIZES)  # untimed round
    thumbnails_without_draft(data)
    draft: list[float] = []
    full: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        make_thumbnails(data, THUMBNAIL_SIZES)
        draft.append(time.perf_counter() - started)
        started = time.perf_counter()
        thumbnails_without_draft(data)
        full.append(time.perf_counter() - started)
    return {
        "runs": runs,
        "photo": {"width": info.width, "height": info.height, "bytes": len(data)},
        "thumbnails": {
            t.size: {"width": t.width, "height": t.height, "bytes": len(t.data)} for t in made
        },
        "draft": _stats(draft),
        "no_draft": _stats(full),
        "draft_over_no_draft": median(draft) / median(full),
    }


@dataclass
class PackageSizes:
    zip_path: str
    source: str  # "existing" or "built"
    zip_bytes: int = 0
    pillow_bytes: int = 0
    other_bytes: int = 0
    pillow_unzipped: int = 0
    unzipped_bytes: int = 0
    entries: int = 0
    pillow_entries: int = 0
    pillow_version: str | None = None
    top_other: dict[str, int] = field(default_factory=dict)


class PackagingFailed(Exception):
    """The package could not be built; the message says why (stderr's tail)."""


def deployment_zip(zip_path: Path = ZIP_PATH, command: list[str] | None = None) -> tuple[Path, str]:
    """The stage's deployment.zip, built first when missing, older than requirements.txt,
    or without Pillow (a package built before Pillow could be installed for the runtime)."""
    if (
        zip_path.exists()
        and zip_path.stat().st_mtime > REQUIREMENTS.stat().st_mtime
        and _holds_pillow(zip_path)
    ):
        return zip_path, "existing"
    command = command or [sys.executable, "-m", "infra.package", "--stage", STAGE]
    env = {k: v for k, v in os.environ.items() if not k.startswith(AWS_OVERRIDES)}
    try:
        done = subprocess.run(
            command,
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=PACKAGE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PackagingFailed(f"{' '.join(command[1:])}: {error}") from error
    if done.returncode != 0 or not zip_path.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise PackagingFailed(
            f"`{' '.join(['python', *command[1:]])}` exited {done.returncode}"
            + ("" if zip_path.exists() else f", no {_shown(zip_path)}")
            + (f": {tail}" if tail else "")
        )
    return zip_path, "built"


def _holds_pillow(zip_path: Path) -> bool:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return any(_PILLOW_ENTRY.match(name) for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)


def measure_zip(zip_path: Path, source: str) -> PackageSizes:
    sizes = PackageSizes(_shown(zip_path), source)
    sizes.zip_bytes = zip_path.stat().st_size
    others: dict[str, int] = {}
    with zipfile.ZipFile(zip_path) as archive:
        for entry in archive.infolist():
            sizes.entries += 1
            sizes.unzipped_bytes += entry.file_size
            if _PILLOW_ENTRY.match(entry.filename):
                sizes.pillow_entries += 1
                sizes.pillow_bytes += entry.compress_size
                sizes.pillow_unzipped += entry.file_size
                found = re.match(r"pillow-([^/]+)\.dist-info/", entry.filename, re.IGNORECASE)
                if found:
                    sizes.pillow_version = found[1]
            else:
                sizes.other_bytes += entry.compress_size
                top = entry.filename.split("/")[0]
                others[top] = others.get(top, 0) + entry.compress_size
    sizes.top_other = dict(sorted(others.items(), key=lambda kv: -kv[1])[:5])
    return sizes


def run(quick: bool) -> Result:
    runs = 5 if quick else 15
    timing = time_thumbnails(runs)
    draft, full = timing["draft"], timing["no_draft"]
    ratio = timing["draft_over_no_draft"]

    result = Result("images", "Thumbnails of a 12 MP JPEG (draft decoding); Pillow in the package")
    photo_ = timing["photo"]
    result.row(
        "photo",
        f"{photo_['width']}x{photo_['height']} JPEG q{PHOTO_QUALITY}, "
        f"{photo_['bytes'] / MB:.1f} MB (gradients + noise)",
    )
    result.row(
        "thumbnails made",
        ", ".join(f"{size}: {t['width']}x{t['height']} {t['bytes'] / 1024:.0f} KiB"
                  for size, t in sorted(timing["thumbnails"].items())),
    )  # fmt: skip
    result.row(
        f"make_thumbnails 128+512 ({runs} runs)",
        f"median {ms(draft['median_s'])}, p95 {ms(draft['p95_s'])}, min {ms(draft['min_s'])}",
    )
    result.row(
        "same without draft decoding",
        f"median {ms(full['median_s'])}, p95 {ms(full['p95_s'])}, min {ms(full['min_s'])}",
    )
    result.row("draft / no draft (median)", f"{ratio:.2f} ({1 / ratio:.1f}x faster with draft)")
    result.row("note", "one core here; Lambda at 1,024 MB has ~0.58 vCPU")
    result.check("thumbnails 12 MP, median", round(draft["median_s"], 3),
                 f"<= {TARGET_S * 1000:.0f} ms", draft["median_s"] <= TARGET_S)  # fmt: skip
    result.check("thumbnails 12 MP, p95", round(draft["p95_s"], 3),
                 f"<= {TARGET_S * 1000:.0f} ms", draft["p95_s"] <= TARGET_S)  # fmt: skip
    result.check("thumbnails without draft, median", round(full["median_s"], 3), "info", None)
    result.check("draft / no-draft time", round(ratio, 3), "info (< 1: saves)", None)
    metrics: dict[str, Any] = {"thumbnails": timing, "target_s": TARGET_S}

    try:
        zip_path, source = deployment_zip()
        sizes = measure_zip(zip_path, source)
    except (PackagingFailed, zipfile.BadZipFile, OSError) as error:
        result.row("deployment package", f"NOT MEASURED: packaging failed: {error}")
        result.check("deployment package built", "failed", "built", False)
        metrics["package"] = {"error": str(error)}
        result.metrics = metrics
        return result

    zip_ratio = sizes.zip_bytes / LAMBDA_ZIPPED_LIMIT
    how = "as found: newer than requirements.txt" if source == "existing" else "built now"
    result.row("deployment package", f"{sizes.zip_path} ({how}), {sizes.entries} entries")
    result.row(
        "zip size",
        f"{sizes.zip_bytes:,} B ({sizes.zip_bytes / MB:.2f} MB): Pillow "
        f"{sizes.pillow_bytes:,} B ({sizes.pillow_bytes / MB:.2f} MB, "
        f"{sizes.pillow_entries} entries), rest {sizes.other_bytes:,} B "
        f"({sizes.other_bytes / MB:.2f} MB) compressed",
    )
    result.row(
        "largest of the rest",
        ", ".join(f"{name} {size / MB:.2f} MB" for name, size in sizes.top_other.items()),
    )
    result.row(
        "unzipped",
        f"{sizes.unzipped_bytes / MB:.1f} MB of Lambda's 250 MB (Pillow "
        f"{sizes.pillow_unzipped / MB:.1f} MB)",
    )
    if sizes.pillow_bytes == 0:
        result.row(
            "WARNING",
            "no Pillow in the package although requirements.txt pins it: the zip is stale or "
            "Chalice could not install it; rebuild with `python -m infra.package --stage dev`",
        )
    result.check("zip vs 50 MB direct upload", round(zip_ratio, 3), "< 1.0", zip_ratio < 1.0)
    result.check("Pillow in the zip (compressed)", sizes.pillow_bytes,
                 "> 0 (pinned)", sizes.pillow_bytes > 0)  # fmt: skip
    result.check("unzipped vs 250 MB", round(sizes.unzipped_bytes / LAMBDA_UNZIPPED_LIMIT, 3),
                 "info", None)  # fmt: skip
    metrics["package"] = {
        **sizes.__dict__,
        "zipped_limit_bytes": LAMBDA_ZIPPED_LIMIT,
        "zip_over_limit": zip_ratio,
        "unzipped_limit_bytes": LAMBDA_UNZIPPED_LIMIT,
    }
    result.metrics = metrics
    return result
