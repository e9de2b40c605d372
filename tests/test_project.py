"""Project-wide checks: lint and format, the public surfaces, the demo command."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MOODFED

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["server", "client_sdk", "consent", "dashboard", "privacy"]


def test_ruff_finds_nothing_to_fix() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_its_public_api(package: str) -> None:
    module = importlib.import_module(package)
    assert (ROOT / package / "py.typed").exists()
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def _modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and ">>>" in path.read_text():
                found.append(
                    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                )
    return found


@pytest.mark.parametrize("name", _modules_with_examples())
def test_the_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_device_side_verifier_does_not_load_the_web_service() -> None:
    code = "import consent, sys; print('fastapi' in sys.modules, 'sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_moodfed_demo_runs_the_whole_platform() -> None:
    result = subprocess.run(
        [
            *MOODFED,
            "demo",
            "--no-dashboard",
            "--devices",
            "60",
            "--rounds",
            "2",
            "--analytics-weeks",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "completed: all 2 planned rounds ran" in out
    assert "withdrew before round 2" in out
    assert "analytics: 1 weekly release(s) of 4 queries" in out
    assert "consent ledger audit passed" in out
