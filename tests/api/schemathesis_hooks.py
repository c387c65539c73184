"""Schemathesis hooks of test_api_schemathesis (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A generated group or agent body gets the path's id, so the case reaches the config
    validation and the Redis write instead of stopping at the id check."""
    ids = case.path_parameters or {}
    if "/members/" in case.path or not isinstance(case.body, dict) or "id" not in case.body:
        return
    path_id = ids.get("group_id") or ids.get("agent_id")
    if isinstance(path_id, str):
        case.body["id"] = path_id
