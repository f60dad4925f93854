"""checkov on the templates, with the project's skips: `python -m infra.checkov_scan FILE...`.

`make lint` runs it on the packaged prod template as CloudFormation deploys it
(out/prod/cloudformation.json, written by `make package`: sam.json through the SAM translator).
That one file holds every resource once: infra/resources.json and the monitoring resources
(merged into sam.json), Chalice's functions and API, and what SAM generates from them
(versions, aliases, CodeDeploy's application, groups and role, permissions, the API's stage),
which a scan of sam.json would not see; scanning resources.json too would count each of its
findings twice. checkov comes from its own virtualenv (.venv/checkov, installed on first use
from requirements-checkov.txt: checkov pins a boto3 older than the app's, so it cannot share
the app's environment). A finding fails unless infra/checkov-skips.json skips it, with a
reason, for that check (and, where it names them, those logical ids); a skip that matches no
finding fails too, so the file never keeps an excuse for something fixed. checkov runs
offline (`--skip-download`).

Why one file of skips rather than `Metadata: checkov: skip` on each resource: most skips are
per check across many resources (every function, every table but the records'), and
several land on resources nobody writes (Chalice's functions, SAM's API stage and CodeDeploy
role), which have no Metadata to carry them; here each skip sits next to its reason, and an
unused one fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.paths import PROJECT_DIR

SKIPS = PROJECT_DIR / "infra" / "checkov-skips.json"
CHECKOV = PROJECT_DIR / ".venv" / "checkov" / "bin" / "checkov"


@dataclass(frozen=True)
class Finding:
    check: str
    resource: str  # the logical id
    file: str
    name: str

    def __str__(self) -> str:
        return f"{self.check} {self.file}:{self.resource}: {self.name}"


def load_skips(path: Path = SKIPS) -> list[dict[str, Any]]:
    skips = list(json.loads(path.read_text())["Skips"])
    for skip in skips:
        if not str(skip.get("reason", "")).strip():
            raise ValueError(f"{path.name}: the skip of {skip.get('check')} gives no reason")
    return skips


def skipped(finding: Finding, skip: dict[str, Any]) -> bool:
    if finding.check != skip["check"]:
        return False
    return "resources" not in skip or finding.resource in skip["resources"]


def judge(
    findings: list[Finding], skips: list[dict[str, Any]]
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """(findings no skip covers, skips that cover no finding)."""
    left = [f for f in findings if not any(skipped(f, s) for s in skips)]
    unused = [s for s in skips if not any(skipped(f, s) for f in findings)]
    return left, unused


def parse(report: Any) -> list[Finding]:
    """The failed checks of checkov's JSON report (one report, or one per framework)."""
    findings = []
    for part in report if isinstance(report, list) else [report]:
        for failed in part.get("results", {}).get("failed_checks", []):
            findings.append(
                Finding(
                    check=failed["check_id"],
                    resource=str(failed["resource"]).rsplit(".", 1)[-1],
                    file=Path(failed.get("file_path", "")).name,
                    name=failed.get("check_name", ""),
                )
            )
    return findings


def passed(report: Any) -> int:
    """How many checks passed, over every resource (the report's summaries)."""
    parts = report if isinstance(report, list) else [report]
    return sum(int(part.get("summary", {}).get("passed", 0)) for part in parts)


def run_checkov(files: list[Path], checkov: Path = CHECKOV) -> tuple[list[Finding], int]:
    """(the failed checks, how many passed)."""
    if not checkov.exists():
        raise SystemExit(f"{checkov} not found: `make lint` installs it")
    command = [str(checkov), "--framework", "cloudformation", "--skip-download", "--quiet",
               "--compact", "--output", "json"]  # fmt: skip
    for file in files:
        command += ["--file", str(file)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR)
    # Exit 1 means findings; anything else (or no JSON) is checkov itself failing.
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"checkov failed (exit {done.returncode}):\n{done.stderr}") from None
    if done.returncode not in (0, 1):
        raise SystemExit(f"checkov failed (exit {done.returncode}):\n{done.stderr}")
    return parse(report), passed(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    findings, passed_checks = run_checkov(args.files)
    left, unused = judge(findings, load_skips())
    for finding in left:
        print(f"checkov: {finding}")
    for skip in unused:
        print(f"checkov: skip of {skip['check']} {skip.get('resources', '')} matches nothing")
    print(
        f"checkov: {passed_checks} check(s) passed; {len(findings)} finding(s), "
        f"{len(findings) - len(left)} skipped with a reason, "
        f"{len(left)} left; {len(unused)} unused skip(s)"
    )
    return 1 if left or unused else 0


if __name__ == "__main__":
    sys.exit(main())
