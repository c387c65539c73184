"""libfaketime for the servers the tests start: a redis-server whose clock a test moves, and
servers inside `make test`'s year-ahead run (the whole process tree shifted a year,
shared/STYLE.md "Time, clocks and real phones").

Debian's redis-server cannot start under libfaketime alone: it is linked with jemalloc, and
the two deadlock (libfaketime issue #130). `glibc_malloc.c`, built here with gcc on first use,
is preloaded before libfaketime and gives redis-server glibc's allocator (see the file), so
wherever libfaketime reaches a redis-server, `server_env` adds it.

A movable clock (`MovableClock`) is a relative offset in a file that libfaketime re-reads on
every clock read (FAKETIME_NO_CACHE): moving it moves the server's TIME, and its key expiry,
at once. It is relative to the clock the test process itself sees, so in the year-ahead run
it adds to that run's offset.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

SHIM_SOURCE = files(__package__).joinpath("glibc_malloc.c").read_bytes()
# Debian's faketime package; LD_PRELOAD may also name it with the $LIB token.
LIBFAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
# libfaketime's relative offsets: "+365d", "-90", "+2.5h" (its other forms are not offsets).
_OFFSET = re.compile(r"([+-]?\d+(?:\.\d+)?)([smhdy]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


class FaketimeError(RuntimeError):
    """libfaketime or the shim cannot be had, or FAKETIME is not an offset one can add to."""


def libfaketime() -> str:
    """Path of Debian's libfaketime; FaketimeError naming the package when it is missing."""
    found = sorted(glob.glob(LIBFAKETIME_GLOB))
    if not found:
        raise FaketimeError(
            f"libfaketime not found ({LIBFAKETIME_GLOB}): install Debian's faketime"
        )
    return found[0]


def shim() -> str:
    """Path of the built glibc_malloc shim (built once per content, atomically)."""
    digest = hashlib.sha256(SHIM_SOURCE).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"dispatcher-glibc-malloc-{digest}.so"
    if target.exists():
        return str(target)
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise FaketimeError("gcc not found: it builds the shim redis-server needs under faketime")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "glibc_malloc.c"
        source.write_bytes(SHIM_SOURCE)
        built = Path(tmp) / "glibc_malloc.so"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "FAKETIME"))}
        result = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(source), "-ldl"],
            capture_output=True,
            text=True,
            env=env,
        )
        if result.returncode != 0:
            raise FaketimeError(f"building {source.name} failed: {result.stderr.strip()}")
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(built, staged)
        os.replace(staged, target)  # atomic: parallel test processes may build it too
    return str(target)


def inherited_offset_s(env: Mapping[str, str] | None = None) -> float:
    """The offset in seconds libfaketime applies to this process (0 without libfaketime).

    FaketimeError for a FAKETIME that is no relative offset (an absolute date, a speed factor):
    a movable clock cannot be added to it.
    """
    env = os.environ if env is None else env
    if "libfaketime" not in env.get("LD_PRELOAD", ""):
        return 0.0
    spec = env.get("FAKETIME", "").strip()
    if not spec:
        return 0.0
    match = _OFFSET.fullmatch(spec)
    if match is None:
        raise FaketimeError(f"FAKETIME={spec!r} is no relative offset (like +365d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a redis-server child: where libfaketime is
    preloaded, the glibc_malloc shim goes first."""
    out = dict(os.environ if env is None else env)
    preload = out.get("LD_PRELOAD", "")
    if "libfaketime" in preload and "glibc-malloc" not in preload:
        out["LD_PRELOAD"] = f"{shim()}:{preload}"
    return out


class MovableClock:
    """A clock offset for one server, kept in `path`; `env()` is what the server starts with.

    The offset is relative to this process's own clock (`inherited_offset_s`): 0 means the
    server's TIME is the test's time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.base_s = inherited_offset_s()
        self.offset_s = 0.0
        self.set(0.0)

    def set(self, offset_s: float) -> None:
        """Move the server's clock to this process's clock + `offset_s` (takes effect on the
        server's next clock read)."""
        self.offset_s = float(offset_s)
        staged = self.path.with_suffix(".tmp")
        staged.write_text(f"{self.base_s + self.offset_s:+.3f}\n")
        os.replace(staged, self.path)  # a server never reads half a line

    def shift(self, seconds: float) -> None:
        """Move the server's clock `seconds` further."""
        self.set(self.offset_s + seconds)

    def env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a server with this clock starts with."""
        out = {
            k: v
            for k, v in (os.environ if env is None else env).items()
            # FAKETIME wins over the file; the shared memory of the faketime wrapper only
            # syncs absolute start times, which a relative file offset does not use.
            if k not in ("FAKETIME", "FAKETIME_SHARED", "LD_PRELOAD")
        }
        out.update(
            LD_PRELOAD=f"{shim()}:{libfaketime()}",
            FAKETIME_TIMESTAMP_FILE=str(self.path),
            FAKETIME_NO_CACHE="1",
            FAKETIME_DISABLE_SHM="1",
            # Timers and timeouts keep real time; only the wall clock moves.
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
        return out
