"""Tenant files (JSON, YAML) and the Redis document: round trips and error reporting."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from dispatcher.config.model import ConfigError, Tenant
from dispatcher.config.tenant_file import (
    dump_tenant,
    format_of,
    load_tenant,
    parse_tenant,
    save_tenant,
    tenant_doc,
)


def error_of(path: Path) -> ConfigError:
    """The ConfigError `load_tenant(path)` raises."""
    with pytest.raises(ConfigError) as info:
        load_tenant(path)
    return info.value


# --- loading -----------------------------------------------------------------------------------


def test_load_demo(demo_file: Path) -> None:
    tenant = load_tenant(demo_file)
    assert tenant.id == "demo"
    assert len(tenant.agents) == 8
    assert len(tenant.groups) == 8


@pytest.mark.parametrize("name", ["t.json", "t.yaml", "t.yml", "T.YAML"])
def test_format_follows_the_extension(tmp_path: Path, demo: dict[str, Any], name: str) -> None:
    path = tmp_path / name
    fmt = format_of(path)
    path.write_text(orjson.dumps(demo).decode() if fmt == "json" else yaml.safe_dump(demo))
    assert load_tenant(path).id == "demo"
    assert load_tenant(str(path)) == load_tenant(path)


@pytest.mark.parametrize("name", ["tenant.toml", "tenant", "tenant.yaml.bak"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}")
    error = error_of(path)
    assert error.source == str(path)
    assert str(error).startswith(f"{path}: unknown file type")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert str(error_of(path)) == f"{path}: cannot read: No such file or directory"


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{\n  "id": "demo",\n  "name": "x",,\n}\n')
    error = error_of(path)
    assert len(error.problems) == 1
    assert str(error).startswith(f"{path}: line 3, column 15: ")


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("id: demo\nname: [unclosed\ntimezone: UTC\n")
    error = error_of(path)
    assert len(error.problems) == 1
    location, message = error.problems[0]
    assert location.startswith("line 3, column ")
    assert "flow sequence" in message
    assert str(error).startswith(f"{path}: line 3")


def test_yaml_duplicate_key_is_an_error(tmp_path: Path, demo_file: Path) -> None:
    path = tmp_path / "t.yaml"
    text = demo_file.read_text(encoding="utf-8")
    path.write_text(text.replace("id: demo\n", "id: demo\nid: other\n", 1), encoding="utf-8")
    assert error_of(path).problems == [
        ("line 6, column 1", "while constructing a mapping; found duplicate key 'id'")
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.yaml", b"", "expected a mapping (the tenant) at the top, got nothing"),
        ("t.yaml", b"- a\n- b\n", "expected a mapping (the tenant) at the top, got list"),
        ("t.json", b"[]", "expected a mapping (the tenant) at the top, got list"),
        ("t.json", b"", "empty document"),
    ],
)
def test_top_level_must_be_a_mapping(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    error = error_of(path)
    assert len(error.problems) == 1
    assert message in str(error)
    assert str(error).startswith(f"{path}: ")


@pytest.mark.parametrize("name", ["t.yaml", "t.json"])
def test_bytes_that_are_not_utf8(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'{"id": "d\xff"}')
    error = error_of(path)
    assert len(error.problems) == 1
    assert str(error).startswith(f"{path}: ")


def test_validation_errors_name_the_file(tmp_path: Path, demo_file: Path) -> None:
    path = tmp_path / "t.yaml"
    text = demo_file.read_text(encoding="utf-8")
    # Unquoted, YAML reads the extension as a number (and 0600 would be octal).
    path.write_text(text.replace('extension: "602"', "extension: 602"), encoding="utf-8")
    assert str(error_of(path)) == (
        f"{path}: groups[2].extension: must be a string of digits; quote it in YAML: '602'"
    )


def test_parse_tenant_formats(demo_file: Path) -> None:
    text = demo_file.read_text(encoding="utf-8")
    assert parse_tenant(text, "yml") == parse_tenant(text.encode(), "yaml")
    with pytest.raises(ConfigError, match="unknown format 'toml'"):
        parse_tenant(text, "toml")
    with pytest.raises(ConfigError) as info:
        parse_tenant("{", "json", source="inline")
    assert str(info.value).startswith("inline: line 1, column 2: ")


# --- dumping and round trips -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip(demo_file: Path, fmt: str) -> None:
    tenant = load_tenant(demo_file)
    text = dump_tenant(tenant, fmt)
    assert parse_tenant(text, fmt) == tenant
    assert dump_tenant(parse_tenant(text, fmt), fmt) == text


def test_dump_keeps_model_order_and_is_readable(demo_file: Path) -> None:
    tenant = load_tenant(demo_file)
    as_json = dump_tenant(tenant, "json")
    assert as_json.startswith('{\n  "id": "demo",\n  "name": ')
    assert as_json.endswith("}\n")
    as_yaml = dump_tenant(tenant, "yaml")
    assert as_yaml.startswith("id: demo\nname: ")
    assert "Grace Grün" in as_yaml  # not \xFC escapes
    assert "extension: '600'" in as_yaml  # quoted, or it would load as a number


@pytest.mark.parametrize("name", ["saved.json", "saved.yaml", "saved.yml"])
def test_save_and_load(tmp_path: Path, demo_file: Path, name: str) -> None:
    tenant = load_tenant(demo_file)
    path = tmp_path / name
    save_tenant(tenant, path)
    assert load_tenant(path) == tenant
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_save_replaces_and_keeps_the_mode(tmp_path: Path, demo_file: Path) -> None:
    tenant = load_tenant(demo_file)
    path = tmp_path / "t.yaml"
    path.write_text("old")
    path.chmod(0o640)
    save_tenant(tenant, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_tenant(path) == tenant


def test_save_creates_a_file_readable_per_umask(tmp_path: Path, demo_file: Path) -> None:
    umask = os.umask(0o022)
    try:
        save_tenant(load_tenant(demo_file), tmp_path / "t.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o644


def test_save_to_unknown_extension_writes_nothing(tmp_path: Path, demo_file: Path) -> None:
    with pytest.raises(ConfigError, match="unknown file type"):
        save_tenant(load_tenant(demo_file), tmp_path / "t.txt")
    assert list(tmp_path.iterdir()) == []


# --- the Redis document ------------------------------------------------------------------------


def test_tenant_doc_is_compact_canonical_json(demo_file: Path, tmp_path: Path) -> None:
    tenant = load_tenant(demo_file)
    doc = tenant_doc(tenant)
    assert isinstance(doc, bytes)
    assert doc == orjson.dumps(orjson.loads(doc))  # compact: no whitespace between tokens
    assert parse_tenant(doc, "json") == tenant
    # The same tenant from another source gives the same bytes.
    path = tmp_path / "t.json"
    save_tenant(tenant, path)
    assert tenant_doc(load_tenant(path)) == doc
    assert tenant_doc(parse_tenant(doc, "json")) == doc


def test_tenant_doc_changes_with_the_config(demo_file: Path) -> None:
    tenant = load_tenant(demo_file)
    changed = Tenant.model_validate({**tenant.model_dump(), "events_maxlen": 10})
    assert tenant_doc(changed) != tenant_doc(tenant)
