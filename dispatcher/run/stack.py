"""`make run` / `make up` / `make down`: the whole stack on this machine, with the demo tenants.

run   foreground; Ctrl-C stops everything it started.
up    the same in the background (log in .run/stack.log); returns once it is ready.
down  stops what `up` started.

Redis is started here (durable: an append-only file in .run/redis) unless REDIS_URL names
one to use; RTPengine plays queue audio and records voicemail (its NG port and media ports on
loopback, its recordings in .run/rtpengine/spool); the default prompts are generated into
DISPATCHER_PROMPTS first; Kamailio listens on
127.0.0.1:SIP_PORT (default 5060) with the KEMI script that routes group calls; the admin API
on 127.0.0.1:API_PORT (default 8080), its bootstrap token DISPATCHER_ADMIN_TOKEN or, unset, one
generated for the session (printed, and in .run/admin-token). Kamailio and the API share
PROMETHEUS_MULTIPROC_DIR (.run/metrics, emptied at start) for the workers' metrics. The demo's two
tenants (dispatcher/demo/demo.yaml, the default tenant, and acme.yaml, with a domain of its
own) are imported on every start, so the demo is always in a known state; a carrier points
DISPATCHER_TENANT_FILE at its own file instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.model import Group, Tenant
from dispatcher.config.model import Voicemail as VoicemailTarget
from dispatcher.config.tenant_file import load_tenant
from dispatcher.media.prompts import ensure_default_prompts
from dispatcher.run.procs import ApiProcess, RedisProcess, pid_alive
from dispatcher.run.rtpengine import RtpengineProcess
from dispatcher.run.sipprocs import KamailioProcess
from dispatcher.settings import Settings
from dispatcher.state.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / ".run"
PID_FILE = RUN_DIR / "stack.pid"
READY_FILE = RUN_DIR / "stack.ready"
LOG_FILE = RUN_DIR / "stack.log"
DEMO_FILE = ROOT / "dispatcher" / "demo" / "demo.yaml"
# The demo's second tenant: its own domain and DID, the same extension and agent names.
DEMO_FILES = (DEMO_FILE, ROOT / "dispatcher" / "demo" / "acme.yaml")
TOKEN_FILE = RUN_DIR / "admin-token"
METRICS_DIR = RUN_DIR / "metrics"


def _banner(redis_url: str, tenant_files: list[Path], sip: str) -> str:
    tenants = [load_tenant(path) for path in tenant_files]
    first = tenants[0]
    lines = [
        "",
        "dispatcher stack is up",
        f"  SIP:     udp:{sip}   (Kamailio, log in {RUN_DIR}/kamailio/kamailio.log)",
        f"  phones:  register an agent's phone as <aor>@<the tenant's domain> through {sip},",
        "           e.g. alice@127.0.0.1 (the default tenant takes any domain no tenant names)",
        "           or alice@acme.localhost; from this host no password is asked (trusted),",
        "           from elsewhere set one: dispatcher credential set alice -t <tenant>",
        f"  media:   RTPengine (queue audio, voicemail), log in {RUN_DIR}/rtpengine/; "
        f"voicemail WAVs in {RUN_DIR}/voicemail/",
        f"  Redis:   {redis_url}   (keys {{t:<tenant>}}:*, events in {{t:<tenant>}}:events)",
    ]
    for tenant, path in zip(tenants, tenant_files, strict=True):
        where = ", ".join(tenant.domains) if tenant.domains else "any domain (the default)"
        lines += [f"  tenant:  {tenant.id} from {path}; domains: {where}", "  groups to call:"]
        lines += _group_lines(tenant)
    lines += _tail(redis_url, first.id)
    return "\n".join(lines)


def _group_lines(tenant: Tenant) -> list[str]:
    lines = []
    for group in tenant.groups:
        agents = ", ".join(m.agent for m in group.canonical_members())
        extras = [
            *(["queue"] if group.queued else []),
            *(["voicemail"] if _reaches_voicemail(group) else []),
        ]
        more = f"   [{', '.join(extras)}]" if extras else ""
        lines.append(f"    {group.extension}  {group.name:<20} {group.strategy:<16} {agents}{more}")
    dids = list(dict.fromkeys(rule.did for rule in tenant.inbound))
    if dids:
        lines.append("  numbers with inbound rules (by caller and time, see the tenant file):")
        lines += [f"    {did}  {len(tenant.inbound_rules(did))} rules" for did in dids]
    return lines


def _tail(redis_url: str, tenant_id: str) -> list[str]:
    return [
        f"  logs:    {RUN_DIR}/",
        "  watch:   redis-cli -u "
        + redis_url
        + f" XREAD BLOCK 0 STREAMS {{t:{tenant_id}}}:events $",
        "  stop:    Ctrl-C (make run) or make down (make up)",
        "",
    ]


def _reaches_voicemail(group: Group) -> bool:
    """Whether a caller of `group` can end in voicemail (no answer, or a queue overflow)."""
    targets: list[object] = [group.no_answer]
    if group.queue is not None:
        overflow = group.queue.overflow
        targets += [overflow.full, overflow.timeout, overflow.no_agents]
    return any(isinstance(t, VoicemailTarget) for t in targets)


def _api_banner(api_url: str, tenant: str, token: str | None) -> str:
    """How to reach the admin API; `token` is shown when generated for this session."""
    shown = (
        f"{token}   (generated for this session, also in {TOKEN_FILE};"
        " set DISPATCHER_ADMIN_TOKEN to choose one)"
        if token
        else "the value of DISPATCHER_ADMIN_TOKEN"
    )
    auth = f'-H "Authorization: Bearer $(cat {TOKEN_FILE})"'
    return "\n".join(
        [
            f"  admin API: {api_url}   (OpenAPI docs {api_url}/docs, log {RUN_DIR}/api/api.log)",
            f"  token:     {shown}",
            f"             curl {auth} {api_url}/v1/tenants/{tenant}/live",
            f"  dashboard: {api_url}/dashboard   (tenant {tenant}, sign in with the token)",
            f"  metrics:   curl {auth} {api_url}/metrics",
            f"  status:    .venv/bin/dispatcher status -t {tenant}   (with REDIS_URL set as above)",
        ]
    )


def _fresh_metrics_dir() -> Path:
    """An empty PROMETHEUS_MULTIPROC_DIR: files of an earlier run would add to the counts."""
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    METRICS_DIR.mkdir(parents=True)
    return METRICS_DIR


def run() -> int:
    """Start everything, import the tenant, wait for a signal, stop everything."""
    settings = Settings.from_env()
    RUN_DIR.mkdir(exist_ok=True)
    named = os.environ.get("DISPATCHER_TENANT_FILE")
    tenant_files = [Path(named)] if named else list(DEMO_FILES)
    redis_proc: RedisProcess | None = None
    kamailio: KamailioProcess | None = None
    rtpengine: RtpengineProcess | None = None
    api: ApiProcess | None = None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_proc = RedisProcess(RUN_DIR / "redis", durable=True)
            redis_proc.start()
            redis_url = redis_proc.url
        tenants = [load_tenant(path) for path in tenant_files]
        versions = []
        for one in tenants:
            with StateStore(redis_url, one.id) as store:
                versions.append(import_tenant(store, one))
        tenant = tenants[0]  # the node's default tenant
        admin_token = settings.admin_token or secrets.token_urlsafe(32)
        TOKEN_FILE.unlink(missing_ok=True)
        TOKEN_FILE.touch(mode=0o600)
        TOKEN_FILE.write_text(admin_token + "\n")
        # Kamailio and the API inherit it; prometheus_client reads it at import.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_metrics_dir())
        # The default prompts (espeak-ng, sox; a few seconds the first time), before the
        # first caller waits for them.
        ensure_default_prompts(settings.prompts_dir)
        rtpengine = RtpengineProcess(RUN_DIR / "rtpengine")
        rtpengine.start()
        kamailio = KamailioProcess(
            RUN_DIR / "kamailio",
            sip_port=settings.sip_port,
            redis_url=redis_url,
            tenant=tenant.id,
            rtpengine_ng=("127.0.0.1", rtpengine.ng_port),
            prompts_dir=settings.prompts_dir,
            voicemail_dir=RUN_DIR / "voicemail",
            rtpengine_spool=rtpengine.spool_dir,
        )
        kamailio.start()
        api = ApiProcess(
            RUN_DIR / "api",
            port=settings.api_port,
            env={"REDIS_URL": redis_url, "DISPATCHER_ADMIN_TOKEN": admin_token},
        )
        api.start()
        print(_banner(redis_url, tenant_files, kamailio.address), flush=True)
        shown = None if settings.admin_token else admin_token
        print(_api_banner(api.url, tenant.id, shown), flush=True)
        print(
            f"  config versions {dict(zip((t.id for t in tenants), versions, strict=True))}",
            flush=True,
        )
        READY_FILE.write_text(redis_url)
        while not stopping:
            time.sleep(0.2)
    finally:
        READY_FILE.unlink(missing_ok=True)
        if api is not None:
            api.stop()
        if kamailio is not None:
            kamailio.stop()
        if rtpengine is not None:
            rtpengine.close()
        if redis_proc is not None:
            redis_proc.stop()
    print("dispatcher stack stopped", flush=True)
    return 0


def up(timeout: float = 60.0) -> int:
    """Start `run` in the background and wait until it is ready."""
    if PID_FILE.exists() and pid_alive(int(PID_FILE.read_text())):
        print(f"already running (pid {PID_FILE.read_text()}); `make down` first")
        return 1
    RUN_DIR.mkdir(exist_ok=True)
    READY_FILE.unlink(missing_ok=True)
    with LOG_FILE.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.run.stack", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    PID_FILE.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY_FILE.exists():
            print(LOG_FILE.read_text().rsplit("dispatcher stack is up", 1)[-1])
            return 0
        if proc.poll() is not None:
            print(f"stack failed to start; see {LOG_FILE}:\n{LOG_FILE.read_text()[-2000:]}")
            return 1
        time.sleep(0.2)
    print(f"stack not ready after {timeout:.0f}s; see {LOG_FILE}")
    return 1


def down(timeout: float = 15.0) -> int:
    """Stop the background stack, if any."""
    if not PID_FILE.exists():
        print("nothing to stop")
        return 0
    pid = int(PID_FILE.read_text())
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    print("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m dispatcher.run.stack run|up|down`."""
    args = sys.argv[1:] if argv is None else argv
    commands = {"run": run, "up": up, "down": down}
    if len(args) != 1 or args[0] not in commands:
        print("usage: python -m dispatcher.run.stack run|up|down", file=sys.stderr)
        return 2
    return commands[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
