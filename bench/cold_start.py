"""Cold import: `import app` against a bare Chalice app plus boto3 and one client.

Every sample is a fresh interpreter. The child times its own import with perf_counter and
reports its peak RSS; the parent takes the child's wall time (interpreter start to exit).

Peak RSS is VmHWM from /proc/self/status, the high-water mark of the child's own address
space. `getrusage(RUSAGE_SELF).ru_maxrss` is recorded too (JSON only) but is not comparable:
Linux carries the pre-exec high-water mark over execve, so a child of a big parent (this
process, after the in-process benchmarks: ~250 MB) reports at least the parent's size.
Variants are interleaved (A, B, C, D, A, B, ...) so that they share the machine's noise, and
one untimed round first fills the bytecode caches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench import AWS_OVERRIDES, Result, median, ms, stage_env
from infra.paths import PROJECT_DIR

_TIMED = """\
import json, resource, time
_t0 = time.perf_counter()
{body}
_dt = time.perf_counter() - _t0
_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({{"import_s": _dt, "rss_kb": int(_hwm), "ru_maxrss_kb": _maxrss}}))
"""

_BASELINE = """\
from chalice import Chalice
app = Chalice(app_name="hello")

@app.route("/")
def index():
    return {"hello": "world"}

import boto3
boto3.client("dynamodb", region_name="us-east-1")
"""

#: Request models load on first use, not with the app (`import app` never imports Pydantic):
#: this is what the first POST of a new API container pays on top of the import.
_FIRST_BODY = """\
import app
from chalicelib.users import model
model.validate_signup({"email": "ada@example.com", "name": "Ada Lovelace"})
"""

#: `python -c pass` cannot report its own RSS: this reads it with no import at all.
_RSS_PROBE = """\
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""

#: name -> (description, code run in the child; None: `python -c pass`, timed by the parent)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "app": ("import app (dev stage env)", _TIMED.format(body="import app")),
    "baseline": ("Chalice hello-world + boto3 + 1 client", _TIMED.format(body=_BASELINE)),
    "app_first_client": (
        "import app + its DynamoDB client",
        _TIMED.format(body='import app\nfrom chalicelib.core import aws\naws.client("dynamodb")'),
    ),
    "app_first_body": (
        "import app + its first request body validated (Pydantic loaded, models built)",
        _TIMED.format(body=_FIRST_BODY),
    ),
    "python": ("python -c pass", None),
    "python_rss": ("bare interpreter (RSS probe)", _RSS_PROBE),
}
TARGET_RATIO = 1.2


def _sample(code: str | None, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code or "pass"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = child.stdout.read()  # type: ignore[union-attr]
    _, status = os.waitpid(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"cold-start child failed ({child.returncode}): {out.decode()[-2000:]}")
    sample = {"wall_s": wall}
    if code is _RSS_PROBE:
        sample["rss_kb"] = float(out.decode().split()[-1])
    elif code is not None:
        reported = json.loads(out.decode().strip().splitlines()[-1])
        sample.update(
            import_s=reported["import_s"],
            rss_kb=float(reported["rss_kb"]),
            ru_maxrss_kb=float(reported["ru_maxrss_kb"]),
        )
    return sample


def run(quick: bool) -> Result:
    runs = 5 if quick else 12
    env = {k: v for k, v in os.environ.items() if not k.startswith(AWS_OVERRIDES)}
    env.update(stage_env())
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _, code in VARIANTS.values():  # untimed: compile .pyc files, warm the page cache
        _sample(code, env)
    for _ in range(runs):
        for name, (_, code) in VARIANTS.items():
            samples[name].append(_sample(code, env))

    result = Result("cold_start", f"Cold import, fresh interpreter, median of {runs} interleaved")
    medians: dict[str, dict[str, float]] = {
        name: {key: median([sample[key] for sample in samples[name]]) for key in samples[name][0]}
        for name in VARIANTS
    }
    for name in ("app", "baseline", "app_first_client", "app_first_body"):
        m = medians[name]
        result.row(
            VARIANTS[name][0],
            f"import {ms(m['import_s'])}, peak RSS {m['rss_kb'] / 1024:.1f} MB, "
            f"wall {ms(m['wall_s'])}",
        )
    result.row(
        "python -c pass",
        f"wall {ms(medians['python']['wall_s'])}, "
        f"peak RSS {medians['python_rss']['rss_kb'] / 1024:.1f} MB",
    )
    ratio = medians["app"]["import_s"] / medians["baseline"]["import_s"]
    rss_ratio = medians["app"]["rss_kb"] / medians["baseline"]["rss_kb"]
    first_client_ratio = medians["app_first_client"]["import_s"] / medians["baseline"]["import_s"]
    result.row("RSS ratio app/baseline", f"{rss_ratio:.2f}")
    first_body_ratio = medians["app_first_body"]["import_s"] / medians["baseline"]["import_s"]
    result.row("app + first client / baseline (import time)", f"{first_client_ratio:.2f}")
    result.row("app + first body validated / baseline", f"{first_body_ratio:.2f}")
    result.metrics = {
        "runs": runs,
        "medians": medians,
        "samples": samples,
        "import_ratio_app_over_baseline": ratio,
        "rss_ratio_app_over_baseline": rss_ratio,
        "import_ratio_app_first_client_over_baseline": first_client_ratio,
        "import_ratio_app_first_body_over_baseline": first_body_ratio,
    }
    result.check(
        "import time ratio app/baseline (medians)",
        round(ratio, 3),
        f"<= {TARGET_RATIO}",
        ratio <= TARGET_RATIO,
    )
    result.check(
        "app + first request body validated / baseline (medians)",
        round(first_body_ratio, 3),
        f"<= {TARGET_RATIO}",
        first_body_ratio <= TARGET_RATIO,
    )
    return result
