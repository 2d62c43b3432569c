"""Process supervision for the local stack: detached processes recorded in pid files, stopped and reclaimed.

Each process is started in its own session (so it survives the CLI that started it and never gets the
terminal's Ctrl-C), with output to ``<dir>/logs/<name>.log``, and recorded in ``<dir>/pids/<name>.json``:
pid, its kernel start time (``/proc/<pid>/stat`` field 22) and argv. The start time guards against pid reuse:
a record only matches the process that is alive with the same pid *and* the same start time, so stopping
or reclaiming never signals an unrelated process that happens to reuse the pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file holds."""

    name: str
    pid: int
    start_time: int
    argv: list[str]
    log: str
    #: The signal that asks this process to stop cleanly (Azurite ignores SIGTERM and stops on SIGINT).
    stop_signal: str = "SIGTERM"
    #: Seconds to wait after the stop signal before SIGKILL.
    stop_timeout: float = 10.0

    @property
    def alive(self) -> bool:
        """True when the recorded process still runs (same pid, same start time, not a zombie)."""
        return _start_time(self.pid) == self.start_time and not _is_zombie(self.pid)


def pid_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def log_dir(state_dir: Path) -> Path:
    return state_dir / "logs"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 overall; index 19 after pid and comm


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields[0] in ("Z", "X") if fields else False


def start(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: str = "SIGTERM",
    stop_timeout: float = 10.0,
    separate_stdout: bool = False,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` detached (new session), log to ``<dir>/logs/<name>.log``, record it in a pid file.

    With ``separate_stdout``, stdout goes to ``<dir>/logs/<name>.out`` instead (stderr still to the log).
    """
    pid_dir(state_dir).mkdir(parents=True, exist_ok=True)
    log_dir(state_dir).mkdir(parents=True, exist_ok=True)
    log_path = log_dir(state_dir) / f"{name}.log"
    with contextlib.ExitStack() as files:
        log = files.enter_context(open(log_path, "ab"))
        out = files.enter_context(open(log_dir(state_dir) / f"{name}.out", "wb")) if separate_stdout else log
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log if separate_stdout else subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    record = ProcessRecord(
        name=name, pid=process.pid, start_time=_start_time(process.pid) or 0, argv=list(argv), log=str(log_path),
        stop_signal=stop_signal, stop_timeout=stop_timeout,
    )
    write_record(state_dir, record)
    return process, record


def start_with_stdout(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: str = "SIGTERM",
    stop_timeout: float = 10.0,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """:func:`start` with stdout in ``<dir>/logs/<name>.out``: for a service whose first stdout line says
    where it listens."""
    return start(
        state_dir, name, argv, env=env, cwd=cwd, stop_signal=stop_signal, stop_timeout=stop_timeout,
        separate_stdout=True,
    )


def write_record(state_dir: Path, record: ProcessRecord) -> None:
    path = pid_dir(state_dir) / f"{record.name}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(asdict(record)))
    partial.replace(path)


def records(state_dir: Path) -> list[ProcessRecord]:
    """Every pid file under ``state_dir`` (unreadable ones are skipped)."""
    found: list[ProcessRecord] = []
    directory = pid_dir(state_dir)
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            found.append(ProcessRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def stop(state_dir: Path, record: ProcessRecord, *, timeout: float | None = None) -> bool:
    """Send the record's stop signal (SIGTERM unless recorded otherwise) to its process group, SIGKILL after
    ``timeout`` (default: the record's ``stop_timeout``), and remove its pid file.

    Returns True when a live process was stopped, False when it had already gone.
    """
    was_alive = record.alive
    if was_alive:
        _signal_group(record, signal.Signals[record.stop_signal])
        deadline = time.monotonic() + (record.stop_timeout if timeout is None else timeout)
        while record.alive and time.monotonic() < deadline:
            _reap(record.pid)
            time.sleep(0.05)
        if record.alive:
            _signal_group(record, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while record.alive and time.monotonic() < deadline:
                _reap(record.pid)
                time.sleep(0.05)
    _kill_group_leftovers(record)
    _reap(record.pid)
    (pid_dir(state_dir) / f"{record.name}.json").unlink(missing_ok=True)
    return was_alive


def stop_all(state_dir: Path, *, order: Sequence[str] = (), timeout: float | None = None) -> list[str]:
    """Stop every recorded process, one after the other: those named in ``order`` first, in that order, then
    the rest (sequential on purpose: kube-apiserver hangs on shutdown when etcd is gone first).

    Returns the names of processes that were alive and have been stopped.
    """
    by_name = {r.name: r for r in records(state_dir)}
    names = [n for n in order if n in by_name] + [n for n in by_name if n not in order]
    return [name for name in names if stop(state_dir, by_name[name], timeout=timeout)]


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the process group the record leads (started with a new session), else the process."""
    if not record.alive:
        return
    try:
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group_leftovers(record: ProcessRecord) -> None:
    """SIGKILL any process still in the record's process group (children such as task scripts).

    Linux never hands out a pid that is still in use as a process-group id, so while no *other* process has
    the recorded pid, a group with that id can only be the recorded process's own.
    """
    current = _start_time(record.pid)
    if current is not None and current != record.start_time:
        return  # the pid now belongs to an unrelated process: its group is not ours
    for pid in group_members(record):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def group_members(record: ProcessRecord) -> list[int]:
    """Live processes in the record's process group that started no earlier than the record's process."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or fields[0] in ("Z", "X"):
            continue
        if int(fields[2]) == record.pid and int(fields[19]) >= record.start_time:
            members.append(int(entry.name))
    return members


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (else it stays a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class OwnedDir:
    """A state directory owned by one live process, marked by an exclusive ``flock`` on ``<dir>/owner.lock``.

    The lock is released by the kernel when the owner dies, even by SIGKILL, so a later run can tell an
    orphaned directory (lock free) from one in use by a concurrent run (lock held) and reclaim only the former.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def try_acquire(self) -> bool:
        """Take the ownership lock without waiting; False when another live process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "owner.lock", "a+")  # held open for the owner's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        handle = self._handle
        self._handle = None
        if handle is not None:
            handle.close()


def reclaim_orphans(root: Path) -> list[str]:
    """Stop the processes of every directory under ``root`` whose owner has died, and delete the directory.

    Returns ``"<dir>: <process>"`` for each process that was still running (a stray from a killed run).
    Directories owned by live processes (concurrent runs) are left alone.
    """
    reclaimed: list[str] = []
    if not root.is_dir():
        return reclaimed
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        owner = OwnedDir(child)
        if not owner.try_acquire():
            continue
        try:
            for name in stop_all(child, order=STOP_ORDER, timeout=3):  # orphans: data is disposable
                reclaimed.append(f"{child.name}: {name}")
        finally:
            owner.release()
        shutil.rmtree(child, ignore_errors=True)
    return reclaimed


#: Stop order: consumers before what they consume.
STOP_ORDER: tuple[str, ...] = ("operator", "batch", "azurite", "kube-apiserver", "etcd")
