"""Reading and writing tenant configs: JSON and YAML files, and the canonical Redis document.

Files keep the model's field order (not sorted keys), so a saved file reads like the model.
Every failure, from an unreadable file to an unknown member agent, is a `ConfigError` whose
lines start with the file name.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from dispatcher.config.model import ConfigError, Tenant, validate_tenant

FORMATS = ("json", "yaml")
_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing duplicate keys instead of keeping the last one silently."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: construct_mapping reports it with its position
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def format_of(path: str | os.PathLike[str]) -> str:
    """`"json"` or `"yaml"` from the file's extension (.json, .yaml, .yml); ConfigError else."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(
            [("", f"unknown file type {suffix or '(none)'!r}; use .json, .yaml or .yml")],
            str(path),
        )
    return _SUFFIXES[suffix]


def _check_format(fmt: str) -> str:
    fmt = "yaml" if fmt == "yml" else fmt
    if fmt not in FORMATS:
        raise ConfigError([("", f"unknown format {fmt!r}; use 'json' or 'yaml'")])
    return fmt


def _decode(text: str | bytes, fmt: str) -> object:
    """Parse JSON or YAML into plain data; syntax errors become ConfigError with line and column."""
    if fmt == "json":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError([(f"line {exc.lineno}, column {exc.colno}", exc.msg)]) from None
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = "; ".join(part for part in (exc.context, exc.problem) if part)
        location = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(location, message or str(exc))]) from None
    except yaml.YAMLError as exc:  # e.g. bytes that are not UTF-8: the message has the position
        raise ConfigError([("", str(exc))]) from None


def load_document(path: str) -> object:
    """Plain data from a JSON or YAML file (format from the extension), or from standard
    input for "-" (read as YAML, which JSON is a part of); ConfigError naming the source."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            return _decode(sys.stdin.buffer.read(), "yaml")
        fmt = format_of(path)
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([("", f"cannot read: {exc.strerror or exc}")]) from None
        return _decode(text, fmt)
    except ConfigError as exc:
        raise exc.with_source(source) from None


def parse_tenant(text: str | bytes, fmt: str, source: str | None = None) -> Tenant:
    """Parse and validate a tenant from JSON or YAML text (`fmt` "json" or "yaml").

    Raises ConfigError listing every problem; `source` (a file name) prefixes each line.
    """
    try:
        data = _decode(text, _check_format(fmt))
        if not isinstance(data, dict):
            kind = "nothing" if data is None else type(data).__name__
            raise ConfigError([("", f"expected a mapping (the tenant) at the top, got {kind}")])
        return validate_tenant(data)
    except ConfigError as exc:
        raise (exc.with_source(source) if source else exc) from None


def load_tenant(path: str | os.PathLike[str]) -> Tenant:
    """Read, parse and validate a tenant file; the format comes from the extension."""
    fmt = format_of(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror or exc}")], str(path)) from None
    return parse_tenant(text, fmt, source=str(path))


def _plain(tenant: Tenant) -> dict[str, Any]:
    return tenant.model_dump(mode="json")


def dump_tenant(tenant: Tenant, fmt: str) -> str:
    """The tenant as a JSON (indent 2) or YAML document, fields in model order.

    Defaults and inherited values (group time zones, voicemail mailboxes) are written out, so the
    file says exactly what is configured.
    """
    if _check_format(fmt) == "json":
        return orjson.dumps(
            _plain(tenant), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
        ).decode()
    return yaml.safe_dump(_plain(tenant), sort_keys=False, allow_unicode=True)


def save_tenant(tenant: Tenant, path: str | os.PathLike[str]) -> None:
    """Write the tenant to `path` in the format of its extension, atomically.

    The text goes to a temporary file in the same folder that then replaces `path`, so a process
    reading the file (a reload) sees the old or the new config, never half of one.
    """
    data = dump_tenant(tenant, format_of(path)).encode()
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # Not tempfile.mkstemp: its files are 0600, and the replaced config must stay readable by
    # Kamailio's user. A new file gets 0666 minus the umask, an existing file keeps its mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            if target.exists():
                os.fchmod(out.fileno(), stat.S_IMODE(target.stat().st_mode))
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tenant_doc(tenant: Tenant) -> bytes:
    """The compact JSON stored in Redis and cached by workers.

    Canonical in the sense that equal tenants give identical bytes (model field order, no
    whitespace), so a worker can compare documents to see whether the config changed; and
    `parse_tenant(tenant_doc(t), "json") == t`.
    """
    return orjson.dumps(_plain(tenant))
