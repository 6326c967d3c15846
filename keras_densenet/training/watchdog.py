"""Watching a multi-process job: a process that vanishes ends the job in one line.

A process that is killed closes its connections, and the others' next gloo
collective fails at once (`launch.stop_on_lost_process` reports it). A host
that vanishes without closing them (powered off, its link cut) leaves the
others waiting in a collective that never returns; JAX's own heartbeat
notices after 100 s and then aborts the process with a fatal error of its
own. So every process of a job runs a `JobMonitor`: two daemon threads that
work while the main thread waits inside a collective.

- The beat thread writes a counter under ``keras_densenet/alive/N`` in the
  key-value store of JAX's coordination service (hosted by process 0) every
  `BEAT_INTERVAL_S`, and reads what the others wrote.
- The judge thread makes no call that can block. In process 0, a process
  whose counter has not moved for ``silence_s`` is lost; in the others,
  process 0 is lost when the store has not answered for ``silence_s``.

A process that stops the job (a lost process, a job that cannot form)
publishes why under ``keras_densenet/stop/N``. The others print their own
line and exit with the same status, and process 0, whose exit would take the
store away, first waits a few seconds for them to read it, so that every
process ends with one line of this package, not with JAX's fatal error.
Every exit goes through `exit_once`: one line on stderr, then `os._exit`,
which skips JAX's exit handler (it would wait for the lost process).

Keras-free: the client comes from `core.internals.distributed_client`.

Example:

>>> print(lost_line(2, 0, lost=1, cause="no sign of life for 30 s").replace(": ", ":\\n"))
lost process 1 of the 2-process job (no sign of life for 30 s):
process 0 stops. Run the same command in every process to resume from the last completed epoch
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Callable, Optional

#: Seconds of silence after which a process is lost. JAX's heartbeat gives
#: up after 100 s and aborts: this must come well before it.
DEFAULT_SILENCE_S = 30.0
#: Seconds between two beats of a process.
BEAT_INTERVAL_S = 1.0
#: How long process 0 waits for the others to read its stop before it exits.
ACK_WAIT_S = 5.0
#: Bound of one call to the store from a path that must go on (stopping).
CALL_BOUND_S = 2.0
#: The store's keys of this package.
ROOT = "keras_densenet"
#: Exit statuses: the job was lost while it ran; it never formed.
LOST, NOT_FORMED = 1, 2

#: What to do after a lost process.
RESUME = "Run the same command in every process to resume from the last completed epoch"

_EXITING = threading.Lock()
_MONITOR: list = [None]


def lost_line(num_processes: int, process_id: int, lost: Optional[int] = None, cause: str = "") -> str:
    """The one line of a process that stops because the job lost a process.

    Args:
        num_processes: processes of the job.
        process_id: this process.
        lost: the lost process, if known.
        cause: what showed it, in a few words.
    """
    others = [p for p in range(num_processes) if p != process_id]
    if lost is not None:
        who = f"process {lost}"
    else:
        who = f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(map(str, others))}"
    return f"lost {who} of the {num_processes}-process job ({cause}): process {process_id} stops. {RESUME}"


def exit_once(line: str, code: int, prefix: str = "keras-densenet", error_fd: int = 2,
              before_exit: Optional[Callable[[], None]] = None, end_line: bool = False):
    """Writes ``PREFIX: error: LINE`` to `error_fd` and ends the process
    with `code` (`os._exit`). The first caller wins; any other thread that
    calls it afterwards waits for the end."""
    _EXITING.acquire()  # never released: the process ends below
    if end_line:  # the progress bar's line
        _quietly(sys.stdout.write, "\n")
        _quietly(sys.stdout.flush)
    _quietly(os.write, error_fd, f"{prefix}: error: {line}\n".encode())
    if before_exit is not None:
        _quietly(before_exit)
    os._exit(code)


def _quietly(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 -- on the way out: nothing is worth more than the exit
        return None


def _bounded(fn, *args, timeout: float = CALL_BOUND_S) -> bool:
    """Calls `fn` in a daemon thread, waiting `timeout` s at most (a store
    that went away may never answer); whether it returned without error."""
    done = []

    def call():
        fn(*args)
        done.append(True)

    thread = threading.Thread(target=_quietly, args=(call,), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(done)


def current() -> Optional["JobMonitor"]:
    """The monitor of this process's job, if one runs."""
    return _MONITOR[0]


class JobMonitor:
    """Sees that another process of the job is gone, and ends this one in one line.

    Args:
        client: JAX's coordination-service client (its key-value store).
        num_processes: processes of the job.
        process_id: this process.
        silence_s: seconds without a sign of life after which a process is lost.
        not_formed_line: makes the line of a job that could not form from a cause.

    Attributes:
        prefix: the first words of every line (the command's name).
        formed: whether the job formed: afterwards a loss stops it with
            `LOST` and says how to resume; before, with `NOT_FORMED`.
        error_fd: where the line goes (stderr, unless it is redirected
            while the job forms).
    """

    def __init__(self, client, num_processes: int, process_id: int, silence_s: float = DEFAULT_SILENCE_S,
                 not_formed_line: Callable[[str], str] = lambda cause: f"the job could not form ({cause})"):
        self._client = client
        self.num_processes, self.process_id, self.silence_s = num_processes, process_id, float(silence_s)
        self._not_formed_line = not_formed_line
        self.prefix, self.formed, self.error_fd = "keras-densenet", False, 2
        self._finished = threading.Event()
        now = time.monotonic()
        self._last_answer = now  # the store's last answer
        self._failing_since: Optional[float] = None  # first call without an answer since then
        self._seen = {p: now for p in range(num_processes)}  # process 0: each one's last beat
        self._beats: dict = {}
        self._done: set = set()

    # --- the store ---------------------------------------------------------

    def _key(self, kind: str, process: Optional[int] = None) -> str:
        return f"{ROOT}/{kind}/" + ("" if process is None else str(process))

    def _set(self, key: str, value: str) -> None:
        try:
            self._client.key_value_set(key, value, allow_overwrite=True)
        except TypeError:  # older jaxlib: no overwrite flag
            _quietly(self._client.key_value_delete, key)
            self._client.key_value_set(key, value)

    def _entries(self, kind: str) -> dict:
        """``{process: value}`` of one kind of key."""
        entries = self._client.key_value_dir_get(self._key(kind))
        return {int(key.rsplit("/", 1)[1]): value for key, value in entries}

    # --- the threads -------------------------------------------------------

    def start(self) -> "JobMonitor":
        """Beats once (a store this JAX cannot use raises here), then starts
        both threads and makes this the process's `current` monitor."""
        self._beat_once(0)
        for target in (self._beat_loop, self._judge_loop):
            threading.Thread(target=target, name=f"keras-densenet-{target.__name__[1:]}", daemon=True).start()
        _MONITOR[0] = self
        return self

    def finish(self) -> None:
        """This process is done: the others stop watching it, and it stops watching."""
        if self._finished.is_set():
            return
        _bounded(self._set, self._key("done", self.process_id), "1")
        self._finished.set()

    def _beat_once(self, count: int) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._set(self._key("alive", self.process_id), str(count))
        stops = self._entries("stop")
        if self.process_id == 0:
            beats, self._done = self._entries("alive"), set(self._entries("done"))
        now = time.monotonic()
        self._last_answer, self._failing_since = now, None
        if self.process_id == 0:
            for process, value in beats.items():
                if self._beats.get(process) != value:
                    self._beats[process], self._seen[process] = value, now
        for process, value in stops.items():
            if process != self.process_id:
                self._follow(process, value)

    def _beat_loop(self) -> None:
        count = 1
        while not self._finished.wait(BEAT_INTERVAL_S):
            try:
                self._beat_once(count)
            except Exception:  # noqa: BLE001 -- an unreachable store: the judge sees the silence
                pass
            count += 1

    def _judge_loop(self) -> None:
        while not self._finished.wait(BEAT_INTERVAL_S / 2):
            # Time counts only while this process's own calls went out: a
            # beat thread that did not run (a busy machine) blames no one.
            failing_since = self._failing_since
            if self.process_id != 0:
                if failing_since is not None and time.monotonic() - failing_since > self.silence_s:
                    self.stop(0, f"no answer from the coordinator for {self.silence_s:g} s")
                continue
            for process, seen in list(self._seen.items()):
                if process != 0 and process not in self._done and self._last_answer - seen > self.silence_s:
                    self.stop(process, f"no sign of life for {self.silence_s:g} s")

    # --- stopping ----------------------------------------------------------

    def line(self, lost: Optional[int], cause: str) -> str:
        """This process's line for a job that lost `lost` (or never formed)."""
        if not self.formed:
            who = "a process" if lost is None else f"process {lost}"
            return self._not_formed_line(f"lost {who}: {cause}")
        return lost_line(self.num_processes, self.process_id, lost, cause)

    def stop(self, lost: Optional[int], cause: str, line: Optional[str] = None,
             code: Optional[int] = None, kind: str = "lost") -> None:
        """Ends the job: tells the others why, then ends this process.

        Args:
            lost: the lost process, if known.
            cause: what showed it, in a few words.
            line: this process's line (default: `line` of `lost` and `cause`).
            code: exit status (default: `LOST` once formed, else `NOT_FORMED`).
            kind: ``"lost"``, or ``"form"`` for a job that could not form.
        """
        code = code if code is not None else (LOST if self.formed else NOT_FORMED)
        line = line if line is not None else self.line(lost, cause)
        record = json.dumps({"kind": kind, "lost": lost, "cause": cause, "code": code})

        def tell_the_others():
            if lost != 0:  # the store lives in process 0
                _bounded(self._set, self._key("stop", self.process_id), record)
            if self.process_id == 0:
                self._wait_for_the_others(lost)

        exit_once(line, code, self.prefix, self.error_fd, before_exit=tell_the_others, end_line=self.formed)

    def _wait_for_the_others(self, lost: Optional[int]) -> None:
        """Process 0: until every other live process has read the stop."""
        now = time.monotonic()
        waiting = {p for p, seen in self._seen.items()
                   if p not in (0, lost) and p not in self._done and now - seen < self.silence_s}
        if not waiting:
            return
        deadline = now + ACK_WAIT_S
        while waiting and time.monotonic() < deadline:
            waiting -= set(_quietly(self._entries, "ack") or {})
            time.sleep(0.1)
        time.sleep(0.5)  # for their exit, before the store goes away

    def _follow(self, process: int, value: str) -> None:
        """Another process stopped the job: so does this one, with its own line."""
        try:
            record = json.loads(value)
            kind, lost, cause, code = record["kind"], record["lost"], record["cause"], int(record["code"])
        except (ValueError, KeyError, TypeError):
            kind, lost, cause, code = "lost", None, value[:200], LOST
        if kind == "form":
            line = self._not_formed_line(f"process {process}: {cause}")
        elif lost == self.process_id:  # alive after all, but the job is gone
            line = (f"process {process} of the {self.num_processes}-process job lost this one ({cause}): "
                    f"process {self.process_id} stops. {RESUME}")
        else:
            line = lost_line(self.num_processes, self.process_id, lost, f"process {process}: {cause}")
        exit_once(line, code, self.prefix, self.error_fd,
                  before_exit=lambda: _bounded(self._set, self._key("ack", self.process_id), "1"),
                  end_line=self.formed)


def stop_job(line: str, cause: str, code: int, lost: Optional[int] = None, kind: str = "lost",
             prefix: Optional[str] = None) -> None:
    """Ends this process with `line` (and the job, through the monitor if
    one runs: the others stop with their own line)."""
    monitor = current()
    if monitor is None:
        exit_once(line, code, prefix or "keras-densenet", end_line=kind == "lost")
        return
    if prefix is not None:
        monitor.prefix = prefix
    monitor.stop(lost, cause, line=line, code=code, kind=kind)
