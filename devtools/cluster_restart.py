"""`make cluster-restart`: the app of each node hands its calls over to a new one, in turn.

Each node's new app starts with ``--take-over`` (ari_app/calls/handover.py): it registers the
Stasis application on the node's Asterisk, the running app lets go of its calls and exits,
the new one adopts them. Asterisk keeps running, so the edge's OPTIONS probes never fail and
it keeps both nodes in service; no caller notices (docs/scaling.md, "Rolling restart").
After each node the edge's view is checked: every node active, or the restart stops there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from devtools.cluster import ACTIVE, RUN_INFO, Progress, print_progress, run_dir
from devtools.devstack import DevStack, build_stack
from devtools.edge import EdgeError, KamailioEdge
from devtools.runtime import RuntimeUnavailable, select_runtime
from devtools.stack import StackError


def hand_over(
    stack: DevStack, pid: int, progress: Progress, *, edge: KamailioEdge, nodes: int
) -> int:
    """A new app takes the calls of the node's running app (``pid``) over and is ready (the
    old one exited, the new one answers /readyz); then the edge must still have all
    ``nodes`` in service (EdgeError otherwise). The new app's pid."""
    started = time.monotonic()
    stack.start_app(detach=True, take_over_from=pid)
    assert stack.app_proc is not None
    progress(
        f"{stack.config.store.node}: app pid {pid} handed its calls over to pid "
        f"{stack.app_proc.pid} in {time.monotonic() - started:.1f} s"
    )
    states = edge.node_states()
    if len(states) != nodes or not all(flags.startswith(ACTIVE[0]) for flags in states.values()):
        raise EdgeError(f"the edge does not have every node in service: {states}")
    progress(f"edge: every node in service: {json.dumps(states)}")
    return stack.app_proc.pid


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
        edge = KamailioEdge(Path(info["edge"]["directory"]))
        for node in info["nodes"]:  # in turn; cluster.json follows each handover
            stack = build_stack(
                runtime, Path(node["root"]), free_ports=False, extra_env=node["env"]
            )
            node["app_pid"] = hand_over(
                stack, int(node["app_pid"]), print_progress, edge=edge, nodes=len(info["nodes"])
            )
            info_path.write_text(json.dumps(info, indent=2))
    except (StackError, EdgeError, RuntimeUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
