"""Names the router shares with kamailio/kamailio.cfg and kamailio/kemi.py: flags, routes,
htables, AVPs and dialog variables."""

FLT_DLG = 4
FAILURE_ROUTE = "ksr_failure_group"
REPLY_ROUTE = "ksr_onreply_group"
HTABLE = "dsp"
AVP_CTX = "$avp(dsp_ctx)"
AVP_TENANT = "$avp(dsp_tenant)"  # the transaction's tenant, for its reply and failure routes
AVP_WAVE = "$avp(dsp_wave)"
DLG_CALL = "$dlg_var(dsp_call)"
DLG_TENANT = "$dlg_var(dsp_tenant)"  # the dialog's tenant, for its events
DLG_CANCELLED = "$dlg_var(dsp_cancelled)"
DLG_ANSWER = "$dlg_var(dsp_answer)"
DLG_MEDIA = "$dlg_var(dsp_media)"  # "1": the call's media runs through RTPengine
ULC_PROFILE = "dsp"
LOCATION = "location"
# releases handed from Kamailio's timer processes to the keeper (dispatcher.sip.handoff)
HANDOFF_TABLE = "dsprel"
# the tenants whose calls this node routed lately, for the reconciler (dispatcher.sip.reconcile)
SERVED_TABLE = "dsptn"
# the node's shared state (kamailio.cfg, dspnode): its outages (dispatcher.sip.routing) and
# whether it takes calls yet (dispatcher.sip.warmup)
NODE_TABLE = "dspnode"
