"""Helpers shared by the model tests (a module, not conftest, so tests can import them)."""

from __future__ import annotations

import pytest

from dispatcher.config.model import ConfigError, validate_tenant


def problems(data: object) -> list[tuple[str, str]]:
    """The `(location, message)` list `validate_tenant` reports; fails if the data is valid."""
    with pytest.raises(ConfigError) as info:
        validate_tenant(data)
    return info.value.problems


def locations(data: object) -> list[str]:
    """Just the locations of the problems in `data`."""
    return [location for location, _ in problems(data)]
