"""KEMI script of test_edge_kamailio.py: kamailio/kemi.py's routes with a stand-in for the digest
authentication being built, to run dispatcher.sip.edge's failed-auth limits on Kamailio's own
htable. A REGISTER is checked where the auth code will check it: a blocked source or user
gets 403 before anything else; one carrying `X-Test-Auth: wrong` stands for wrong credentials
(auth_failed, then 401); any other is registered as kemi.py does.
"""

import os
import sys

import KSR

# app_python3 puts this file's folder on sys.path, not kamailio/
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "kamailio"))

import kemi  # it puts the repo and the venv on sys.path

from dispatcher.sip import edge


class Routes(kemi.KamailioRoutes):
    def ksr_route_registrar(self, msg):
        if not KSR.is_REGISTER():
            return 1
        source, user = KSR.pv.get("$si"), KSR.pv.get("$fU")
        if edge.auth_blocked(KSR, source, user):
            KSR.sl.sl_send_reply(403, "Forbidden")
            return kemi.EXIT
        if KSR.hdr.is_present("X-Test-Auth") > 0:
            edge.auth_failed(KSR, source, user)
            KSR.sl.sl_send_reply(401, "Unauthorized")
            return kemi.EXIT
        return super().ksr_route_registrar(msg)


def mod_init():
    return Routes()
