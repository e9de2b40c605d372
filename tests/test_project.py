"""Project-wide checks: lint, format and types, the public surfaces, the demo command."""

from __future__ import annotations

import doctest
import importlib
import re
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


@pytest.mark.slow
def test_mypy_strict_finds_no_error(tmp_path: Path) -> None:
    # py.typed ships in each package: its types are a promise, checked with the project's
    # [tool.mypy] configuration (strict). The cache goes to tmp_path, not the checkout.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            *PACKAGES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_every_type_ignore_names_its_error_and_says_why() -> None:
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                found = _IGNORE.search(line)
                if found and not (found["codes"] and re.match(r"\s*#\s*\S", found["rest"])):
                    unexplained.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not unexplained, "a `# type: ignore[code]` needs a `# reason` after it:\n" + "\n".join(
        unexplained
    )


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
    # The accounting line names what each user was charged for: secure rounds by default.
    assert "Poisson-subsampled distributed Skellam" in " ".join(out.split())
