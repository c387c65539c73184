"""Fixtures for the configuration model tests: the demo tenant as a file and as raw data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

DEMO_FILE = Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml"
_DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


@pytest.fixture
def demo_file() -> Path:
    """Path of the demo tenant shipped with the package."""
    return DEMO_FILE


@pytest.fixture
def demo() -> dict[str, Any]:
    """The demo tenant as decoded YAML, a fresh copy per test so tests may change it."""
    return copy.deepcopy(_DEMO_DATA)
