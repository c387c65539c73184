"""Schemathesis against the served OpenAPI spec: whatever it generates, valid or not, the API
answers without a server error (no 5xx).

The schemathesis CLI runs its examples, coverage and fuzzing phases on every operation, at
most MAX_EXAMPLES cases each, with the bootstrap token, on the demo tenant, seeded so a failure
reproduces. Path ids of groups and agents are pinned to ones that exist and a generated body's
`id` is set to the path's (schemathesis_hooks.py), so cases reach the config validation and
the Redis writes instead of stopping at 404 or the id check. (Its pytest plugin does not run
on pytest 9, hence the CLI.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from api_support import BOOTSTRAP

from dispatcher.run.procs import ApiProcess

pytestmark = pytest.mark.redis

MAX_EXAMPLES = 30
SEED = 20240601
CONFIG = f"""
headers = {{ Authorization = "Bearer {BOOTSTRAP}" }}

[parameters]
"path.tenant" = "demo"
"path.group_id" = "sales"
"path.agent_id" = "alice"
"""


def test_no_server_errors(admin: httpx.Client, api_server: ApiProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    here = Path(__file__).resolve().parent
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{api_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "2",
            "--report-dir",
            str(tmp_path / "report"),
            # an event stream never ends by design: each case would wait for the request
            # timeout (minutes in all); test_dashboard.py tests it
            "--exclude-path-regex",
            "events/stream$",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
            "NO_COLOR": "1",
        },
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    assert "Operations:       " in run.stdout and " passed" in summary, summary
    # the API is still whole afterwards
    assert admin.get("/healthz").json() == {"status": "ok"}
