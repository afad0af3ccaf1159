"""The one SIPp command line (devtools.sipp.SippCommand) the tests, the demo and the bench
start their parties with."""

from __future__ import annotations

from pathlib import Path

from devtools.sipp import SippCommand


def in_runtime(path: Path) -> str:
    return f"/rt{path}"


def test_a_party_that_answers_gets_only_what_it_is_given() -> None:
    command = SippCommand(scenario=Path("/w/scenario.xml"), local_port=5080)
    assert command.argv(in_runtime) == [
        "sipp", "-sf", "/rt/w/scenario.xml", "-i", "127.0.0.1", "-p", "5080", "-t", "u1",
        "-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error",
    ]  # fmt: skip


def test_a_caller_with_every_option_calls_the_remote_last() -> None:
    command = SippCommand(
        scenario=Path("/w/scenario.xml"),
        local_port=5090,
        calls=20,
        timeout_seconds=45,
        media_ports=(40000, 40099),
        control_port=41000,
        recv_timeout_ms=20000,
        socket_buffer=4096,
        message_file=Path("/w/messages.log"),
        error_file=Path("/w/errors.log"),
        stat_file=Path("/w/stat.csv"),
        screen_file=Path("/w/screen.log"),
        auto_answer=True,
        rate=2.5,
        limit=100,
        pause_ms=500,
        service="5551000",
        keys={"caller_prefix": "1555", "tone": "/rt/w/tone.wav"},
        extra=("-trace_rtt",),
        remote="127.0.0.1:5060",
    )
    assert command.argv(in_runtime) == [
        "sipp", "-sf", "/rt/w/scenario.xml", "-i", "127.0.0.1", "-p", "5090", "-t", "u1",
        "-m", "20", "-nostdin", "-timeout", "45s", "-timeout_error",
        "-min_rtp_port", "40000", "-max_rtp_port", "40099", "-cp", "41000",
        "-recv_timeout", "20000", "-buff_size", "4096",
        "-trace_msg", "-message_file", "/rt/w/messages.log",
        "-trace_err", "-error_file", "/rt/w/errors.log",
        "-trace_stat", "-stf", "/rt/w/stat.csv", "-fd", "1",
        "-trace_screen", "-screen_file", "/rt/w/screen.log",
        "-aa", "-r", "2.5", "-rp", "1000", "-l", "100", "-d", "500", "-s", "5551000",
        "-key", "caller_prefix", "1555", "-key", "tone", "/rt/w/tone.wav",
        "-trace_rtt", "127.0.0.1:5060",
    ]  # fmt: skip
