"""Kamailio KEMI routing script of the call-group dispatcher (app_python3).

Kamailio loads this file (modparam "app_python3" "load" in kamailio.cfg) into the
Python interpreter it embeds - Debian's /usr/bin/python3 - then calls mod_init()
once in the main process and child_init(rank) in every process it forks. Each
ksr_* method stands for one route block of a native kamailio.cfg; they follow
Kamailio's examples/kemi/kamailio-basic-kemi-python.py.

The routes stay thin: SIP hygiene, registrations and calls to registered users
here; call-group decisions go to the `dispatcher` package (dispatcher/sip/routing.py).
"""

import os
import site
import sys
import time

import KSR

# Return value of a route helper that answered or dropped the message: the
# caller stops, like `exit` in a native route (Kamailio's KEMI convention).
EXIT = -255

# Flags defined in kamailio.cfg; the numbers must match its #!define lines.
FLT_DLG = 4

# The dialog events the router acts on (ksr_dialog_event).
DIALOG_EVENTS = frozenset({"dialog:start", "dialog:end", "dialog:failed"})

# Process rank (Kamailio's PROC_TIMER) of the timer processes: tm runs a failure
# route there when a branch's ring timer (fr_inv_timer) fires.
PROC_TIMER = -1


def _use_project_python() -> None:
    """Put the repo root and the project venv's site-packages first on sys.path.

    The embedded interpreter is the system one and knows nothing of .venv.
    site.addsitedir (not a plain sys.path entry) also runs the venv's .pth
    files, which is how an editable install (`pip install -e`) is found.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    venv_site = os.path.join(repo, ".venv", "lib", version, "site-packages")
    if not os.path.isdir(venv_site):
        KSR.err(f"dispatcher: no venv for {version} at {venv_site}; run `make setup`\n")
    before = list(sys.path)
    site.addsitedir(venv_site)
    added = [path for path in sys.path if path not in before]
    # Ahead of /usr/lib/python3/dist-packages, so the venv's pinned versions win.
    sys.path[:] = [repo, *added, *(path for path in before if path != repo)]


_use_project_python()


def mod_init():
    """Called once by app_python3 in the main process, before the workers fork."""
    from dispatcher.redis_address import redacted

    tenant = os.environ.get("DISPATCHER_TENANT") or "demo"
    # The password hidden: REDIS_URL may carry one. With REDIS_SENTINELS it holds only
    # credentials and db, the Sentinels name the master; Settings checks both later.
    redis = redacted(os.environ.get("REDIS_URL") or "") or "unset"
    sentinels = os.environ.get("REDIS_SENTINELS")
    if sentinels:
        redis += f" sentinels={sentinels}"
    KSR.info(f"dispatcher KEMI: tenant={tenant} redis={redis} python={sys.version.split()[0]}\n")
    from dispatcher.sip.warmup import mend_registrations

    mend_registrations(KSR)  # before usrloc's first worker loads them
    return KamailioRoutes()


class KamailioRoutes:
    """The routes, one object per Kamailio process (app_python3 copies it on fork)."""

    def __init__(self) -> None:
        self.router = None  # dispatcher.sip.routing.Router of this process, or None
        self._router_opened = False
        self.rank = 0  # this process's rank (child_init)
        self.keeper = None  # dispatcher.sip.keeper.Keeper, in the keeper's rtimer process
        # when this node started (mod_init, before the fork): a restarted node releases the
        # calls it held before, not those it answered since
        self.started_ms = time.time_ns() // 1_000_000
        # REQINIT's rules from kamailio.cfg's defines, read here in the main process (before
        # the fork; nothing is opened): a bad define stops Kamailio at start.
        from dispatcher.sip.edge import EdgeRules
        from dispatcher.sip.warmup import starts_closed

        self.edge = EdgeRules.from_defines(KSR)
        # a node that shares registrations takes no call before it has them: until its
        # keeper opens it (dispatcher.sip.warmup); each process learns it once
        self.closed = starts_closed(KSR)

    def child_init(self, rank: int) -> int:
        # Called after fork in every process: rank > 0 SIP workers, PROC_TIMER
        # timer processes, 0 the main process and -2 RPC processes (these two
        # route nothing). Sockets open here, never in mod_init: one opened
        # before fork would be shared by every process (STYLE.md).
        self.rank = rank
        if rank > 0 or rank == PROC_TIMER:
            self.open_worker_state()
        return 0

    def open_worker_state(self):
        """This process's Router (its Decider and Redis connection), once.

        Imported here, not at module load, so the main process never opens
        anything. Also called lazily by the group routes, for any other process
        that runs one (e.g. a dialog timer). None when group routing is off.
        """
        if not self._router_opened:
            from dispatcher.sip.routing import Router

            self._router_opened = True
            self.router = Router.open(KSR)
            if self.router is not None:
                # dialog timeouts end here: their releases go through the keeper
                self.router.in_timer = self.rank == PROC_TIMER
        return self.router

    def takes_calls(self):
        """Whether this node takes calls yet (dispatcher.sip.warmup); once open, no more
        questions: one shared-memory read per INVITE while it is closed."""
        if self.closed:
            from dispatcher.sip.warmup import admits

            if self.open_worker_state() is None or admits(KSR):
                self.closed = False  # (without group routing no keeper opens it)
        return not self.closed

    # -- request_route {}
    def ksr_request_route(self, msg):
        # The nodes' DMQ bus (replicated registrations) first: its sync messages are larger
        # than MAX_MSG_SIZE and its peers are not phones. Only peers, only on its port.
        if KSR.is_method("KDMQ"):
            if self.edge.is_dmq_peer(KSR.pv.get("$Rp"), KSR.pv.get("$si")):
                KSR.dmq.handle_message()
            return 1

        if self.ksr_route_reqinit(msg) == EXIT:
            return 1

        # CANCEL matches the INVITE transaction it cancels (RFC 3261 9.2); tm
        # relays it to the branches of that transaction. A queued caller's INVITE is
        # suspended, with no branch to cancel: the router answers that one itself.
        if KSR.is_CANCEL():
            router = self.open_worker_state()
            if router is not None and router.queue.cancel_request():
                return 1
            if KSR.tm.t_check_trans() > 0:
                self.ksr_route_relay(msg)
            return 1

        if self.ksr_route_withindlg(msg) == EXIT:
            return 1

        # A node that just started, without the phones its peers hold: the INVITE is dropped
        # unanswered, as if the node were not up yet; it comes again (dispatcher.sip.warmup).
        if KSR.is_INVITE() and not self.takes_calls():
            return 1

        # -- only initial requests (no To tag) from here
        # a retransmission of a request whose transaction is being created
        # by another worker right now
        if KSR.tmx.t_precheck_trans() > 0:
            KSR.tm.t_check_trans()
            return 1
        if KSR.tm.t_check_trans() == 0:
            return 1

        # Preloaded Route headers are not ours to follow (no open relay).
        KSR.hdr.remove("Route")
        if KSR.is_method_in("IS"):
            # Stay in the path of the dialog (RFC 3261 16.6 step 4): ACK and BYE
            # must pass here for the dialog module to see the call end.
            KSR.rr.record_route()

        # Trusted sources by address, phones by digest (dispatcher.sip.authn): a request it
        # refuses has been answered (401/407/403/404/503).
        if KSR.is_method_in("RI"):
            router = self.open_worker_state()
            if router is not None and not router.auth.check():
                return 1

        if self.ksr_route_registrar(msg) == EXIT:
            return 1

        if KSR.corex.has_ruri_user() < 0:
            KSR.sl.sl_send_reply(484, "Address Incomplete")
            return 1

        # A Request-URI user that is a group extension goes to the router
        # (plan, claim, fork the wave); anything else to the user location.
        if KSR.is_INVITE():
            router = self.open_worker_state()
            if router is not None and router.route_invite():
                return 1
        self.ksr_route_location(msg)
        return 1

    # -- route[REQINIT]: per-request checks
    def ksr_route_reqinit(self, msg):
        # Flood (Kamailio's ANTIFLOOD habit): a source pike counts too many requests from is
        # banned for IPBAN_S, and its requests are dropped unanswered - a reply would amplify
        # the flood. PIKE_TRUSTED sources (this host, trunks, SBCs) are never counted.
        source = KSR.pv.get("$si")
        if not self.edge.is_trusted(source):
            if KSR.htable.sht_get("ipban", source) is not None:
                return EXIT
            if KSR.pike.pike_check_req() < 0:
                KSR.htable.sht_setxi("ipban", source, 1, self.edge.ipban_s)
                KSR.notice(f"pike: {source} floods; banned for {self.edge.ipban_s}s\n")
                return EXIT
        # Scanners (SCANNER_UA) learn nothing, not even that a SIP server is here.
        if self.edge.is_scanner(KSR.pv.get("$ua")):
            return EXIT
        if KSR.pv.get("$ml") > self.edge.max_msg_size:
            KSR.sl.sl_send_reply(513, "Message Too Large")
            return EXIT

        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return EXIT

        # OPTIONS to the server itself: a keepalive (and the start-up probe).
        if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.corex.has_ruri_user() < 0:
            KSR.sl.sl_send_reply(200, "Keepalive")
            return EXIT

        if KSR.sanity.sanity_check(17895, 7) < 0:
            KSR.err(f"malformed SIP message from {KSR.pv.get('$si')}:{KSR.pv.get('$sp')}\n")
            return EXIT
        return 1

    # -- route[WITHINDLG]: requests inside a dialog
    def ksr_route_withindlg(self, msg):
        if KSR.siputils.has_totag() < 0:
            return 1

        # A BYE may end an extra dialog of a group call (several agents answered at once),
        # one the dialog module does not track: the router releases that agent.
        if KSR.is_BYE():
            router = self.open_worker_state()
            if router is not None:
                router.answers.on_bye()

        # Sequential requests follow the route set recorded at dialog start.
        if KSR.rr.loose_route() > 0:
            self.ksr_route_relay(msg)
            return EXIT

        if KSR.is_ACK():
            # No route set: only an ACK for a negative final reply (RFC 3261
            # 17.1.1.3) matches a transaction; any other is dropped.
            if KSR.tm.t_check_trans() > 0:
                self.ksr_route_relay(msg)
            return EXIT

        # A caller leaving a voicemail message talks to this node itself.
        if KSR.is_BYE():
            router = self.open_worker_state()
            if router is not None and router.voicemail.on_bye():
                return EXIT

        KSR.sl.sl_send_reply(404, "Not here")
        return EXIT

    # -- route[REGISTRAR]
    def ksr_route_registrar(self, msg):
        if not KSR.is_REGISTER():
            return 1
        router = self.open_worker_state()
        if router is not None:
            router.register()  # under its tenant's domain, recorded for the dashboard
        elif KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()
        return EXIT

    # -- route[LOCATION]: calls to a registered user
    def ksr_route_location(self, msg):
        rc = KSR.registrar.lookup("location")
        if rc < 0:
            # A transaction first, so retransmissions of the INVITE get the
            # same reply and the ACK for it is absorbed; send_reply() is the
            # transaction-aware reply of sl.
            KSR.tm.t_newtran()
            if rc == -2:
                KSR.sl.send_reply(405, "Method Not Allowed")
            elif rc == -3:
                KSR.sl.send_reply(500, "Server Internal Error")
            else:
                KSR.sl.send_reply(404, "Not Found")
            return EXIT

        if KSR.is_INVITE():
            KSR.setflag(FLT_DLG)
        return self.ksr_route_relay(msg)

    # -- onreply_route[GROUP]: armed by the router for a group call's branches
    def ksr_onreply_group(self, msg):
        router = self.open_worker_state()
        if router is not None and not router.on_reply():
            KSR.set_drop()  # an agent's early media while the caller hears the queue
        return 1

    # -- failure_route[GROUP]: every branch of a wave failed
    def ksr_failure_group(self, msg):
        router = self.open_worker_state()
        if router is not None:
            router.on_failure()
        return 1

    # -- event_route[dialog:*] (modparam "dialog" "event_callback"): evname is
    # "dialog:start", "dialog:end" (BYE, timeout) or "dialog:failed"
    def ksr_dialog_event(self, msg, evname):
        if evname not in DIALOG_EVENTS:
            # dialog 5.6 calls back on every state change and names the others "unknown"
            # (later releases pass none): two calls of every answered call (180, ACK)
            return 1
        router = self.open_worker_state()
        if router is not None:
            router.dialog_event(evname)
        return 1

    # -- event_route[tm:local-request] (modparam "tm" "event_callback"): every request
    # Kamailio sends itself, i.e. the dialog module's keepalive OPTIONS and the BYEs with
    # which it ends a dialog that timed out or whose keepalives failed. Such a BYE releases
    # the call before it leaves: dialog:end alone may be skipped then (see kamailio.cfg).
    def ksr_tm_event(self, msg, evname):
        if evname == "tm:local-request" and KSR.is_BYE():
            router = self.open_worker_state()
            if router is not None:
                router.dialog_event("dialog:end")
        return 1

    # -- rtimer "keeper" (kamailio.cfg): the node's queue keeper, every 10 ms
    def ksr_queue_keeper(self, msg, evname=""):
        if self.keeper is None:
            router = self.open_worker_state()
            if router is None:
                return 1
            from dispatcher.sip.keeper import Keeper

            self.keeper = Keeper(router, self.started_ms)
        self.keeper.tick()
        return 1

    # -- route blocks t_continue resumes a queued caller's INVITE into (failure-route
    # context): an agent is free, it cannot wait any more, its CANCEL came
    def ksr_queue_serve(self, msg):
        router = self.open_worker_state()
        if router is not None:
            router.queue.serve()
        return 1

    def ksr_queue_overflow(self, msg):
        router = self.open_worker_state()
        if router is not None:
            router.queue.overflow()
        return 1

    def ksr_queue_cancel(self, msg):
        router = self.open_worker_state()
        if router is not None:
            router.queue.cancelled()
        return 1

    # -- route[RELAY]
    def ksr_route_relay(self, msg):
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return EXIT
