"""`make cluster-restart`: the app of each node hands its calls over to a new one, in turn.

Each node's new app starts with ``--take-over`` (ari_app/calls/handover.py): it registers the
Stasis application on the node's Asterisk, the running app lets go of its calls and exits,
the new one adopts them. Asterisk keeps running, so the edge's OPTIONS probes never fail and
it keeps both nodes in service; no caller notices (docs/scaling.md, "Rolling restart").
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.cluster import RUN_INFO, Progress, run_dir
from devtools.devstack import DevStack, build_stack
from devtools.runtime import RuntimeUnavailable, select_runtime
from devtools.stack import StackError


def hand_over_in_turn(
    nodes: Sequence[tuple[DevStack, int]], progress: Progress, *, detach: bool
) -> list[int]:
    """For each (node, pid of its running app), in turn: a new app takes the calls over and
    is ready (the old one exited, the new one answers /readyz). The new apps' pids."""
    pids = []
    for stack, pid in nodes:
        started = time.monotonic()
        stack.start_app(detach=detach, take_over_from=pid)
        assert stack.app_proc is not None
        pids.append(stack.app_proc.pid)
        progress(
            f"{stack.config.store.node}: app pid {pid} handed its calls over to pid "
            f"{stack.app_proc.pid} in {time.monotonic() - started:.1f} s"
        )
    return pids


def main() -> int:
    info_path = run_dir() / RUN_INFO
    if not info_path.exists():
        print("not up; `make cluster-up` first", file=sys.stderr)
        return 1
    info = json.loads(info_path.read_text())
    if any("env" not in node for node in info["nodes"]):
        print(
            "this cluster was started without its nodes' settings kept; "
            "`make cluster-down` and `make cluster-up` first",
            file=sys.stderr,
        )
        return 1
    try:
        runtime = select_runtime(info.get("runtime"), build=False)
        stacks = [
            (
                build_stack(runtime, Path(n["root"]), free_ports=False, extra_env=n["env"]),
                int(n["app_pid"]),
            )
            for n in info["nodes"]
        ]

        def progress(message: str) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

        pids = hand_over_in_turn(stacks, progress, detach=True)
    except (StackError, RuntimeUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for node, pid in zip(info["nodes"], pids, strict=True):
        node["app_pid"] = pid
    info_path.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
