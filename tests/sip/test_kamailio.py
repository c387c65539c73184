"""Kamailio with the project's cfg and KEMI script, driven by SIPp phones."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.run.procs import ProcessError
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, SippResult, run_sipp

pytestmark = pytest.mark.sip

SCENARIOS = Path(__file__).parent / "scenarios"
StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]


def register(workdir: Path, kamailio: KamailioProcess, user: str, contact_port: int) -> None:
    """REGISTER sip:user@kamailio with a Contact at 127.0.0.1:contact_port."""
    result = run_sipp(
        workdir,
        SCENARIOS / "register.xml",
        kamailio.address,
        calls=1,
        service=user,
        keys={"contact_port": contact_port, "expires": 300},
    )
    assert result.ok, result.errors or result.output


def call(workdir: Path, kamailio: KamailioProcess, number: str, calls: int = 1) -> SippResult:
    """Place `calls` calls from bob to `number`, 100 ms of talk each."""
    return run_sipp(
        workdir,
        SCENARIOS / "uac_call.xml",
        kamailio.address,
        calls=calls,
        rate=20,
        limit=calls,
        duration_ms=100,
        service=number,
        keys={"caller": "bob"},
        timeout=15,
    )


@pytest.mark.parametrize(
    ("phone_scenario", "ring_ms"),
    [("uas_answer.xml", None), ("uas_ring_then_answer.xml", 300)],
)
def test_call_to_registered_user_is_answered_end_to_end(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    phone_scenario: str,
    ring_ms: int | None,
) -> None:
    phone = start_phone(phone_scenario, duration_ms=ring_ms)
    register(tmp_path, kamailio, "alice", phone.local_port)
    contacts = kamailio.rpc("ul.lookup", "location", "alice@127.0.0.1")  # AORs are user@domain
    assert f"127.0.0.1:{phone.local_port}" in str(contacts)

    caller = call(tmp_path, kamailio, "alice", calls=3)

    assert caller.ok, caller.errors or caller.output
    assert (caller.stats.successful, caller.stats.failed) == (3, 0)
    # ACK and BYE reached the phone through Kamailio's Record-Route
    answered = phone.stop()
    assert (answered.stats.successful, answered.stats.failed) == (3, 0), answered.errors
    # the dialog module tracked each call start to end (kemi.py's FLT_DLG matches the cfg)
    dialogs = kamailio.rpc("stats.get_statistics", "dialog:")
    assert {"dialog:processed_dialogs = 3", "dialog:active_dialogs = 0"} <= set(dialogs)
    assert not kamailio.python_errors()


def test_call_to_unknown_user_gets_404(kamailio: KamailioProcess, tmp_path: Path) -> None:
    result = run_sipp(
        tmp_path,
        SCENARIOS / "uac_expect_404.xml",
        kamailio.address,
        calls=2,
        service="nobody",
        keys={"caller": "bob"},
    )

    assert result.ok, result.errors or result.output
    assert (result.stats.successful, result.stats.failed) == (2, 0)
    assert not kamailio.python_errors()


def test_busy_phone_fails_the_call_and_gets_its_ack(
    kamailio: KamailioProcess, start_phone: StartPhone, tmp_path: Path
) -> None:
    phone = start_phone("uas_busy.xml")
    register(tmp_path, kamailio, "carol", phone.local_port)

    caller = call(tmp_path, kamailio, "carol")

    assert caller.returncode == 1
    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    assert "486 Busy Here" in caller.errors
    rejected = phone.stop()
    assert (rejected.stats.successful, rejected.stats.failed) == (1, 0), rejected.errors
    assert not kamailio.python_errors()


def test_unanswered_phone_is_cancelled_when_the_ring_timer_fires(
    start_kamailio: StartKamailio, start_phone: StartPhone, tmp_path: Path
) -> None:
    kamailio = start_kamailio(extra_defines={"FR_INV_TIMER": 1000})
    phone = start_phone("uas_noanswer.xml")
    register(tmp_path, kamailio, "dave", phone.local_port)

    caller = call(tmp_path, kamailio, "dave")

    # tm ends the unanswered branch with CANCEL and answers the caller itself
    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    assert "408 Request Timeout" in caller.errors
    # the phone saw CANCEL, sent 200 + 487, and got the ACK for its 487
    cancelled = phone.stop()
    assert (cancelled.stats.successful, cancelled.stats.failed) == (1, 0), cancelled.errors
    assert not kamailio.python_errors()


def test_caller_hanging_up_while_it_rings_cancels_the_phone(
    kamailio: KamailioProcess, start_phone: StartPhone, tmp_path: Path
) -> None:
    phone = start_phone("uas_noanswer.xml")
    register(tmp_path, kamailio, "gina", phone.local_port)

    caller = run_sipp(
        tmp_path,
        SCENARIOS / "uac_cancel.xml",
        kamailio.address,
        calls=1,
        duration_ms=200,
        service="gina",
        keys={"caller": "bob"},
    )

    # the caller got 200 for its CANCEL and the phone's 487, relayed by tm
    assert caller.ok, caller.errors or caller.output
    cancelled = phone.stop()
    assert (cancelled.stats.successful, cancelled.stats.failed) == (1, 0), cancelled.errors
    assert not kamailio.python_errors()


def test_two_instances_run_side_by_side(
    start_kamailio: StartKamailio, start_phone: StartPhone, tmp_path: Path
) -> None:
    first = start_kamailio()
    second = start_kamailio()

    assert first.sip_port != second.sip_port
    assert first.run_dir != second.run_dir
    for instance in (first, second):
        assert instance.answers_options()
        assert instance.pid_file.read_text().strip() == str(instance.proc.pid)
        assert instance.ctl_socket.is_socket()
        assert (instance.run_dir / "kamailio_rpc.fifo").exists()
    # without Redis each keeps its own registrations: usrloc is in memory (db_mode 0)
    phone = start_phone("uas_answer.xml")
    register(tmp_path, first, "erin", phone.local_port)
    assert first.rpc("ul.lookup", "location", "erin@127.0.0.1")
    with pytest.raises(ProcessError, match="AOR not found"):
        second.rpc("ul.lookup", "location", "erin@127.0.0.1")


def test_environment_reaches_the_kemi_script(start_kamailio: StartKamailio) -> None:
    # registrations in memory: in Redis (nobody listens there) Kamailio would not start
    kamailio = start_kamailio(
        tenant="acme", redis_url="redis://:secret@127.0.0.1:6399/0", shared_registrations=False
    )

    log = kamailio.log_text()
    assert "dispatcher KEMI: tenant=acme redis=redis://:***@127.0.0.1:6399/0" in log
    assert "secret" not in log


def test_kamailio_log_has_no_python_traceback(
    kamailio: KamailioProcess, start_phone: StartPhone, tmp_path: Path
) -> None:
    # every route of the KEMI script once: REGISTER, INVITE with its replies,
    # in-dialog ACK and BYE, a 404 and an OPTIONS keepalive
    phone = start_phone("uas_answer.xml")
    register(tmp_path, kamailio, "frank", phone.local_port)
    assert call(tmp_path, kamailio, "frank").ok
    unknown = run_sipp(
        tmp_path,
        SCENARIOS / "uac_expect_404.xml",
        kamailio.address,
        calls=1,
        service="nobody",
        keys={"caller": "bob"},
    )
    assert unknown.ok
    assert kamailio.answers_options()

    assert not kamailio.python_errors()


def test_python_errors_finds_an_exception_in_the_kemi_script(
    start_kamailio: StartKamailio, tmp_path: Path
) -> None:
    script = tmp_path / "failing_kemi.py"
    script.write_text(
        "import KSR\n"
        "def mod_init():\n"
        "    return Routes()\n"
        "class Routes:\n"
        "    def child_init(self, rank):\n"
        "        return 0\n"
        "    def ksr_request_route(self, msg):\n"
        "        KSR.sl.sl_send_reply(200, 'OK')\n"
        "        raise RuntimeError('boom')\n"
    )
    kamailio = start_kamailio(kemi_script=script)

    # the start-up OPTIONS raised; the traceback is logged just after the reply
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        errors = kamailio.python_errors()
        if any("RuntimeError: boom" in error for error in errors):
            break
        time.sleep(0.05)
    assert all("ksr_request_route" in error for error in errors)
    assert any("RuntimeError: boom" in error for error in errors)


def test_start_failure_quotes_the_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    broken = KamailioProcess(
        tmp_path_factory.mktemp("kam"), kemi_script=Path("/nonexistent/kemi.py"), children=1
    )

    with pytest.raises(ProcessError, match="kamailio exited") as failure:
        broken.start()
    # app_python3 imports the script as module "kemi" from its folder
    assert "No module named 'kemi'" in str(failure.value)
    assert "failed to load python script" in str(failure.value)


def test_phone_on_a_taken_port_fails_to_start(start_phone: StartPhone) -> None:
    phone = start_phone("uas_answer.xml")

    with pytest.raises(ProcessError, match="sipp exited"):
        start_phone("uas_answer.xml", local_port=phone.local_port)
