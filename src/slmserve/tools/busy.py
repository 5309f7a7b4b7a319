"""Is the machine busy? A benchmark on shared cores measures its neighbours as much as its model: one compare run
on a busy 2-core machine measured the same weights at 8.9 and 55.8 tok/s at 8 users (issue #35).

`busy_reasons` says why, from the load average and the other processes on the cores; psutil (the tools extra)
reads the processes. The inputs can be given, so the rules are tested without a busy machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# Runnable processes per core over the last minute above which the figures are not the machine's own: on 2
# cores, 1.0 is a core's worth of other work. The average trails a job that just ended by a minute or so, so it
# is set higher than the sample of the processes now below.
BUSY_LOAD_PER_CORE = 0.5
# A process using this share of one core while nothing is measured is work the servers will compete with.
BUSY_PROCESS_CPU = 0.2
# Other servers, idle or not: requests may reach them while we measure.
_SERVER = re.compile(r"slmserve(?:\.cli)? (?:serve|cluster)\b|llama-server|llama_cpp\.server|vllm|ollama serve")


@dataclass
class OtherProcess:
    pid: int
    command: str
    cpu: float  # share of one core, over the sampling interval


def is_server(command: str) -> bool:
    return bool(_SERVER.search(command))


def busy_reasons(load1: float, cores: int, others: list[OtherProcess]) -> list[str]:
    """Why figures measured now would not be the machine's own; [] when it looks idle."""
    reasons = []
    if load1 > BUSY_LOAD_PER_CORE * cores:
        reasons.append(f"load average {load1:.1f} over the last minute on {cores} cores")
    for p in sorted(others, key=lambda p: -p.cpu):
        if p.cpu >= BUSY_PROCESS_CPU:
            reasons.append(f"pid {p.pid} at {p.cpu:.0%} of a core: {p.command[:60]}")
        elif is_server(p.command):
            reasons.append(f"pid {p.pid} is another server: {p.command[:60]}")
    return reasons


def other_processes(sample_s: float = 1.0) -> list[OtherProcess]:
    """The processes, but this one, its parents and its children, each with its CPU share over sample_s."""
    import psutil

    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents()), *(p.pid for p in me.children(recursive=True))}
    procs = [p for p in psutil.process_iter() if p.pid not in mine]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)  # the first call starts the interval
    time.sleep(sample_s)
    out = []
    for p in procs:
        try:
            cpu, command = p.cpu_percent(None) / 100, " ".join(p.cmdline()) or p.name()
        except psutil.Error:  # gone, or not ours to read
            continue
        if cpu >= BUSY_PROCESS_CPU or is_server(command):
            out.append(OtherProcess(p.pid, command, cpu))
    return out


def machine_busy(
    load: Callable[[], tuple[float, float, float]] = os.getloadavg,
    cores: Callable[[], int | None] = os.cpu_count,
    others: Callable[[], list[OtherProcess]] = other_processes,
) -> list[str]:
    """busy_reasons for this machine now."""
    return busy_reasons(load()[0], cores() or 1, others())
