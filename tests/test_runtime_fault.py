"""Fault test of the runtime: one worker killed mid-run ends the whole run cleanly.

``parplan run`` is started as a user would start it (a subprocess), its device processes are found
through /proc, one is killed with SIGKILL while the steps run, and the command must then end within
its timeout with exit 5 (the run failed), one message naming the killed device and the signal, no
traceback, and no device process left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc, no dependency)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # zombies are dead already
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _workers(pid: int) -> list[int]:
    """The device processes of a ``parplan run``: descendants running the spawn entry point."""
    out = []
    for c in _children(pid):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmd or b"spawn_main" in cmd:
            out.append(c)
    return out


TIMEOUT_S = 10


def _run_and_kill(*extra: str, victim: int) -> tuple[int, str, str, float, list[int]]:
    """Start a long ``parplan run``, SIGKILL device ``victim`` mid-run; (exit, stdout, stderr, s after kill, pids)."""
    cmd = [sys.executable, "-m", "parplan", "run", "--model", "gpt-tiny", "--cluster", "local"]
    cmd += ["--pp", "2", "--microbatches", "4", "--schedule", "1f1b", "--steps", "100000"]
    cmd += ["--timeout", str(TIMEOUT_S), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = sorted(_workers(proc.pid))
        assert len(workers) == 2, f"device processes not found (exit {proc.poll()})"
        time.sleep(4.0)  # well into the steps: process group joined, transfers in flight
        assert proc.poll() is None, "the run ended before the fault was injected"
        os.kill(workers[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=TIMEOUT_S * 3 + 30)
        return proc.returncode, out, err, time.monotonic() - killed_at, workers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_killed_worker_ends_run_with_clear_message_and_no_orphans() -> None:
    code, out, err, elapsed, workers = _run_and_kill(victim=1)
    assert code == 5, (code, err)
    assert elapsed < TIMEOUT_S, f"took {elapsed:.1f} s after the kill (transfer timeout {TIMEOUT_S} s)"
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1, err  # progress lines aside, one message
    assert "killed by SIGKILL" in lines[0] and "device " in lines[0], lines[0]
    time.sleep(0.5)
    left = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)]
    assert left == [], f"orphan device processes: {left}"


def test_killed_worker_under_json_is_one_error_document() -> None:
    """The same failure with --json: stdout is one error document with the run's exit code."""
    import json

    code, out, _, _, _ = _run_and_kill("--json", victim=0)
    assert code == 5
    doc = json.loads(out)
    assert doc["error"]["code"] == 5 and "killed by SIGKILL" in doc["error"]["message"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
