"""The eligibility token never travels on the command line (issue 10, item 8).

``--eligibility-token`` is refused (the token would be in every local user's ``ps``);
the token comes from ``MOODFED_ELIGIBILITY_TOKEN`` or from a file only the service's
user can read, ``--eligibility-token-file``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from consent.cli import app
from consent.settings import ConsentSettings
from tests.consent.serving import consent_serve


def _environment(tmp_path: Path) -> dict[str, str | None]:
    """No MOODFED_ variable from the caller's shell; data in a temporary folder."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MOODFED_")}
    return cleared | {"MOODFED_DATA_DIR": str(tmp_path)}


def test_a_token_on_the_command_line_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--eligibility-token", "s3cret"], env=_environment(tmp_path)
    )
    assert result.exit_code == 2
    assert "visible to every local user in `ps`" in result.output
    assert "--eligibility-token-file" in result.output
    assert list(tmp_path.iterdir()) == []  # no database, no key, no token file


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    result = CliRunner().invoke(
        app, ["serve", "--eligibility-token-file", str(secret)], env=_environment(tmp_path)
    )
    assert result.exit_code == 2
    assert f"mode {mode:04o}" in result.output and "chmod 600" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_missing_or_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    for path, words in ((tmp_path / "nope", "cannot read"), (empty, "is empty")):
        result = CliRunner().invoke(
            app, ["serve", "--eligibility-token-file", str(path)], env=_environment(tmp_path)
        )
        assert result.exit_code == 2 and words in result.output, result.output


def test_a_token_in_both_the_environment_and_a_file_is_ambiguous(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("one")
    secret.chmod(0o600)
    env = _environment(tmp_path) | {"MOODFED_ELIGIBILITY_TOKEN": "two"}
    result = CliRunner().invoke(app, ["serve", "--eligibility-token-file", str(secret)], env=env)
    assert result.exit_code == 2 and "not both" in result.output


def test_settings_read_the_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-the-file\n")
    secret.chmod(0o600)
    settings = ConsentSettings(data_dir=tmp_path, eligibility_token_file=secret)
    assert settings.ensure_eligibility_token().get_secret_value() == "from-the-file"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_service_answers_with_the_token_from_a_0600_file(tmp_path: Path, workers: int) -> None:
    secret = tmp_path / "token"
    secret.write_text("token-from-a-file\n")
    secret.chmod(0o600)
    args = ["--eligibility-token-file", str(secret), "--workers", str(workers)]
    with consent_serve(tmp_path, args=args, token=None) as service:
        body = {"purpose": "model-training", "device_keys": []}
        with httpx.Client(base_url=service.url, timeout=30) as client:
            good = {"Authorization": "Bearer token-from-a-file"}
            assert client.post("/v1/eligibility", json=body, headers=good).status_code == 200
            bad = {"Authorization": "Bearer token-from-the-env"}
            assert client.post("/v1/eligibility", json=body, headers=bad).status_code == 401
        # Each worker process logs its requests too (the logging setup reaches them).
        service.log.wait_for(r'"POST /v1/eligibility" 200')
    assert "token-from-a-file" not in " ".join(service.log.lines)
