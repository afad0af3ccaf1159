"""The bench's view of the host: CPU time and memory of a process, the machine's steal time
(all from /proc), what the machine is, and the open-file limit SIPp needs."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

from devtools.bench_analysis import proc_cpu_ticks, proc_rss_kb, proc_stat_steal

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return proc_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_steal() -> tuple[int, int] | None:
    try:
        return proc_stat_steal(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return proc_rss_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def machine_info() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count() or 0),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "cpu": model or "unknown",
    }


def raise_nofile() -> None:
    """Raise this process's open-file limit to its hard limit (SIPp inherits it: a party of
    the bench holds a socket and files per call)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
