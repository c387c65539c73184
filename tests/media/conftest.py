"""Fixtures of the media tests: the default prompt set, generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.media.prompts import Manifest, ensure_default_prompts


@pytest.fixture(scope="session")
def prompt_set(prompts_dir: Path) -> Manifest:
    """The whole default prompt set of this session (generated once, see `prompts_dir`)."""
    return ensure_default_prompts(prompts_dir)
