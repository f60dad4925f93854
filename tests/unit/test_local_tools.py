"""The local tools' first answers to a new user's mistakes, and the chalice commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from infra import chalice_commands
from infra.paths import PROJECT_DIR
from local import stack, upload

CHALICE = Path(sys.executable).with_name("chalice")


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No AWS settings at all, a home without ~/.aws and no local stack: a new machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    return {**env, "HOME": str(tmp_path), "LOCAL_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["/venv/bin/chalice", "local", "--port", "8001"], "local"),
        (["chalice", "--debug", "--project-dir", ".", "package", "out"], "package"),
        (["chalice", "deploy", "--stage", "prod"], "deploy"),
        (["chalice", "gen-policy"], None),
        (["/usr/bin/pytest", "local"], None),  # not the chalice CLI
    ],
)
def test_the_chalice_subcommand_is_read_from_argv(argv: list[str], command: str | None) -> None:
    assert chalice_commands.chalice_command(argv) == command


@pytest.mark.parametrize("command", ["package", "deploy"])
def test_plain_chalice_package_and_deploy_stop_with_one_line(command: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(CHALICE), command, "--stage", "dev"] + ([str(out)] if command == "package" else [])
    done = subprocess.run(
        args, cwd=PROJECT_DIR, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"`chalice {command}` alone leaves out this app's resources and event-source "
        f"settings: run `make {command} STAGE=<stage>` (README, 'Deploy to AWS')."
    ]
    assert not out.exists()


def test_chalice_local_without_emulator_or_region_stops_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CHALICE), "local", "--no-autoreload", "--port", str(stack.free_port())],
        cwd=PROJECT_DIR, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "run `make run`" in line and "chalice local --port 8001" in line


def test_chalice_local_beside_a_stack_uses_its_emulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = {"api_url": "http://127.0.0.1:8000", "emulator_url": "http://127.0.0.1:5999"}
    monkeypatch.setattr(chalice_commands, "_running_stack", lambda: running)
    # set, then removed: monkeypatch then restores its absence (the command sets it)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "unset")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_PROFILE", "someones-real-account")
    chalice_commands.check_command(["chalice", "local", "--port", "8001"])
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert "AWS_PROFILE" not in os.environ
    assert boto3.session.Session().region_name == "us-east-1"


def test_chalice_local_on_the_stacks_own_port_is_told_to_move(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    running = {"api_url": "http://127.0.0.1:8000", "emulator_url": "http://127.0.0.1:5999"}
    monkeypatch.setattr(chalice_commands, "_running_stack", lambda: running)
    # set, then removed: monkeypatch then restores its absence (the command sets it)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "unset")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    chalice_commands._prepare_chalice_local(["chalice", "local"])
    assert exits[:1] == [2]
    assert "chalice local --port 8001" in capsys.readouterr().err


def test_an_unknown_stage_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert stack.main(["--stage", "bogus"]) == 2
    assert capsys.readouterr().err.strip() == (
        "Unknown stage 'bogus': .chalice/config.json has ['dev', 'staging', 'prod']."
    )


def test_a_missing_upload_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upload.main([str(tmp_path / "photo.jpg"), "--state-dir", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"No file {tmp_path / 'photo.jpg'}")


def test_the_sample_photo_is_a_sideways_jpeg(tmp_path: Path) -> None:
    path = upload.sample_photo(tmp_path / "sample.jpg")
    with Image.open(path) as picture:
        assert (picture.format, picture.size) == ("JPEG", (1600, 1200))
        assert picture.getexif()[0x0112] == 6
    assert upload.sample_photo(path) == path  # made once


def test_queue_policies_reach_the_emulator(aws: dict[str, Any]) -> None:
    """moto's CloudFormation skips AWS::SQS::QueuePolicy; provisioning applies them."""
    import json

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="serverless-app-dev-image-uploads")["QueueUrl"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])[
        "Attributes"]["Policy"])  # fmt: skip
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == (
        "arn:aws:s3:::serverless-app-dev-uploads"
    )
