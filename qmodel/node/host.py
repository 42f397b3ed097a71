"""The Node process of the lane and the line protocol spoken with it.

One :class:`NodeHost` runs one ``node qmodel/node/host.mjs`` for a whole run (not one per test
case). Python writes a command as one JSON line and reads back one line, the JSON array of
events the command produced, once every JavaScript job is blocked on a platform call. Nothing
runs in Node between two commands, so the order of everything the worker does is decided here.

Commands (``t``), each with ``now``, the virtual clock in ms, and ``drop``, instances to forget:

=============  =================================================================================
``load``       import a fresh instance ``inst`` of the module ``url`` with PRNG ``seed``, bindings
               ``kv`` (names), ``do`` (binding -> class), ``queues`` (producer binding names),
               ``vars``; ``check`` drops it at once
``fetch``      deliver request ``req`` to the worker of ``inst`` as request ``rid``
``dofetch``    deliver ``req`` to the Durable Object ``obj`` (class ``cls``, id ``hex``/``name``)
``doalarm``    run the ``alarm({retryCount, isRetry})`` handler of the Durable Object ``obj``
``queue``      deliver the push batch ``messages`` of queue ``queue`` to ``queue(batch, env, ctx)``
               as request ``rid`` (answered ``resp`` once it settles, ``fail`` if it threw)
``res``        settle call ``cid``: ``ok`` with value ``v``, or the error ``err`` (name, message)
``ping``       answer ``pong`` with Node's version
=============  =================================================================================

Events (``e``): ``call`` (a platform call ``cid`` of request ``rid``, of kind ``k``: ``kv``,
``st`` storage, ``do`` a Durable Object request, ``q`` a queue send, ``timer``), ``cancel`` (a
timer cleared), ``qop`` (a push batch's ``ack``/``retry``/``ackAll``/``retryAll``, in call order),
``resp``/``fail`` (request ``rid`` answered or threw), ``wu`` (``waitUntil`` promises of ``rid``
opened or settled), ``bcw`` (``blockConcurrencyWhile`` entered or left), ``log`` (console output),
``loaded``/``loadfail``, ``pong``, ``hosterror`` (a bug of the host itself).

Every read from Node has a timeout (:data:`TIMEOUT_S`, or ``QMODEL_NODE_TIMEOUT``); a Node that
dies or stops answering is killed, reaped and reported with :class:`NodeLaneAborted`, and the
first such failure stays the reason given for every instance that lived in that process.

The process is confined by the operating system, not only by the host's conventions
(:data:`SANDBOX_FLAGS`): Node's permission model lets it read the host's own files and the
worker's folders (``roots``) only, and write nowhere, start no process, no worker thread and no
native addon; it gets an empty environment; on Linux it runs in a network namespace of its own
(no interface but a loopback that is down) when the kernel allows unprivileged user namespaces
(:attr:`NodeHost.network_isolated` says whether it did); the JavaScript intrinsics are frozen
and code generation from strings (``eval``, ``new Function``) is refused, as on Workers.
"""

from __future__ import annotations

import atexit
import json
import os
import re

try:
    import resource
except ImportError:  # not on Windows: there Node never spins
    pass
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qmodel.errors import InvalidTarget
from qmodel.node.errors import NodeLaneAborted
from qmodel.sim.http import compact_json

__all__ = ["MIN_NODE", "NodeHost", "TIMEOUT_S", "find_node", "host_for"]

_decode = json.JSONDecoder().decode

HOST_SCRIPT = Path(__file__).with_name("host.mjs")
#: Node's flags that confine the host process (see the module's docstring). Node 20's
#: permission model is still flagged experimental; ``--experimental-vm-modules`` lets the host
#: link the worker's modules itself (loader hooks would need a worker thread, which the
#: permission model forbids) and ``--experimental-import-meta-resolve`` lets it resolve a
#: package for a given parent module.
SANDBOX_FLAGS = (
    "--experimental-permission",
    "--frozen-intrinsics",
    "--disallow-code-generation-from-strings",
    "--no-addons",
    "--experimental-vm-modules",
    "--experimental-import-meta-resolve",
)
#: Node processes kept alive at once (one per set of worker folders); the least recently used
#: is stopped when another is needed.
MAX_HOSTS = 4
#: The oldest Node the lane runs on: module.register (the loader hooks) came in 20.6.
MIN_NODE = (20, 6)
#: Seconds to wait for Node to answer one command (``QMODEL_NODE_TIMEOUT`` overrides it).
TIMEOUT_S = 30.0
#: Importing a module instance touches the disk: a longer allowance.
LOAD_TIMEOUT_S = 60.0
#: The process is restarted after loading this many module instances, so a long run's memory
#: stays bounded whatever a worker leaves behind (the restart is invisible to the runs).
RESTART_AFTER = 400
#: Reads of Node's answer tried (yielding the core in between) before sleeping in ``poll``.
SPIN_READS = 2_000
INSTALL_HINT = (
    "install Node.js 20 LTS or newer (https://nodejs.org/en/download, your package manager, or "
    "`nvm install 20`), or set QMODEL_NODE to the path of a node binary"
)


def find_node() -> str:
    """The node binary to use (``QMODEL_NODE`` or ``node`` on the PATH), checked to be new
    enough. Raises :class:`InvalidTarget` saying which version is needed and how to get it."""
    wanted = os.environ.get("QMODEL_NODE") or "node"
    path = shutil.which(wanted)
    if path is None:
        where = (
            f"QMODEL_NODE={wanted!r} is not an executable"
            if "QMODEL_NODE" in os.environ
            else ("no `node` was found on the PATH")
        )
        raise InvalidTarget(
            f"JavaScript workers run under Node.js {MIN_NODE[0]}.{MIN_NODE[1]} or newer, and "
            f"{where}; {INSTALL_HINT}",
            target=wanted,
        )
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidTarget(
            f"cannot run {path} --version ({exc}); {INSTALL_HINT}", target=path
        ) from None
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)\S*", out)
    if m is None or (int(m[1]), int(m[2])) < MIN_NODE:
        found = out or "an unknown version"
        raise InvalidTarget(
            f"JavaScript workers run under Node.js {MIN_NODE[0]}.{MIN_NODE[1]} or newer, and "
            f"{path} is {found}; {INSTALL_HINT}",
            target=path,
        )
    return path


def _timeout(default: float) -> float:
    raw = os.environ.get("QMODEL_NODE_TIMEOUT")
    if not raw:
        return default
    try:
        return max(1.0, float(raw))
    except ValueError:
        return default


def _die_with_parent() -> None:
    # Linux: Node is killed if this Python process dies, even when Node is stuck in a loop
    # and would never read the end of its command pipe.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


def _isolate_network() -> None:
    # Linux: a user namespace (mapping this user to itself, so file access is unchanged) and a
    # network namespace of their own: Node's only interface is a loopback that is down, so no
    # socket reaches anything. Where the kernel refuses unprivileged namespaces, nothing
    # changes (NodeHost.network_isolated is then False) and the host's refusals remain.
    try:
        import ctypes

        uid, gid = os.getuid(), os.getgid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            return
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except (OSError, AttributeError):
        pass


def _prepare_child() -> None:
    _die_with_parent()
    _isolate_network()


def _network_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class Pacer:
    """Chooses whether Node spins or sleeps while it waits for this process's next command.
    The choice changes only the speed of a run, never what runs.

    Every command is a round trip, and a process that sleeps until the other answers pays the
    kernel's wake-up latency. On the 2-core machine this was built on, a bare round trip took
    60 µs with both sides sleeping and 10 µs with both spinning; ``bench/bench_node.py`` ran
    about 1.7 times as fast with both spinning as with only this process spinning.

    This process always spins a little before it sleeps in ``poll``, and gives its core away
    at every try (``sched_yield``), which costs a busy machine little: with one or two other
    busy processes beside the benchmark, it ran faster that way than sleeping at once. Node
    cannot yield its core while it spins, and there a spinner takes the core the other process
    needs: the same benchmark ran five to six times slower with Node spinning.

    So Node spins only while this process finds the machine quiet: over :data:`EPOCH`
    commands, it was switched off its core against its will (its involuntary context switches,
    which include a yield that let another process run) at most :data:`BUSY` times. Quiet, that
    count was 0 to 5 per epoch; with one busy process beside the two, about 150. When Node's
    spinning meets a busy machine, it stops for a number of epochs that doubles each time
    (up to :data:`MAX_GAP`), and halves again while spinning goes well.
    """

    #: Commands per measurement.
    EPOCH = 128
    #: Involuntary context switches per epoch above which the machine is busy.
    BUSY = 16
    #: The most epochs Node waits before it tries spinning again.
    MAX_GAP = 256

    def __init__(self) -> None:
        #: Whether Node spins while it waits.
        self.node_spins = False
        self._left = self.EPOCH
        self._switches = _involuntary_switches()
        self._gap = 1
        self._wait = 1

    def answered(self) -> bool | None:
        """Note a command answered. Returns whether Node should spin from now on, when that
        changes."""
        self._left -= 1
        if self._left:
            return None
        self._left = self.EPOCH
        switches = _involuntary_switches()
        if switches < 0:
            return None  # not measurable here: Node never spins
        busy = switches - self._switches > self.BUSY
        self._switches = switches
        if self.node_spins:
            if not busy:
                self._gap = max(1, self._gap // 2)
                return None
            self._wait = self._gap
            self._gap = min(self._gap * 2, self.MAX_GAP)
            self.node_spins = False
            return False
        if busy:
            return None
        self._wait -= 1
        if self._wait > 0:
            return None
        self.node_spins = True
        return True


def _involuntary_switches() -> int:
    """How often this process was switched off its core against its will; -1 if unknown."""
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    except (NameError, OSError):
        return -1


class NodeHost:
    """One Node process running ``host.mjs``; :meth:`command` sends a command and returns the
    events it produced.

    The process is started on first use and after a failure; :attr:`generation` counts the
    processes started, so a module instance knows whether the process it lives in is still the
    current one.
    """

    def __init__(self, node: str, roots: tuple[str, ...] = ()) -> None:
        self.node = node
        #: The folders the worker's modules may be read from (besides the host's own files).
        self.roots = roots
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        #: Why each process that failed stopped (generation -> message): an instance that
        #: lived in it reports this first cause, not merely that its process is gone.
        self.failures: dict[int, str] = {}
        #: Whether the current process runs in a network namespace of its own.
        self.network_isolated = False
        #: Module instances loaded by the current process.
        self.loaded = 0
        self._next_instance = 0
        self._out = -1
        self._in = -1
        self._node_end = -1
        #: Whether Node spins or sleeps while it waits for a command.
        self.pacer = Pacer()
        self._buf = bytearray()
        self._poll: select.poll | None = None
        self._stderr: Any = None
        #: Instances whose worker is gone, forgotten with the next command.
        self.drops: list[int] = []
        #: Seconds to wait for one answer.
        self.timeout = _timeout(TIMEOUT_S)
        atexit.register(self.close)

    # -- the process ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start a fresh Node process (stopping the current one, if any)."""
        self.close()
        to_node_r, to_node_w = os.pipe()
        from_node_r, from_node_w = os.pipe()
        # A second descriptor for Node's end of the command pipe: the blocking flag belongs to
        # the pipe end both processes share, so through it this process switches Node between
        # blocking reads and spinning (see Pacer).
        self._node_end = os.dup(to_node_r)
        # An empty environment: the worker learns nothing of this machine from Node's.
        env = {
            "QMODEL_NODE_IN": str(to_node_r),
            "QMODEL_NODE_OUT": str(from_node_w),
            "QMODEL_NODE_ROOTS": json.dumps(list(self.roots)),
        }
        readable = [str(HOST_SCRIPT.parent), *self.roots]
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [
                    self.node,
                    "--no-warnings",
                    "--stack-trace-limit=20",
                    *SANDBOX_FLAGS,
                    *(f"--allow-fs-read={p}" for p in readable),
                    *shlex.split(os.environ.get("QMODEL_NODE_ARGS", "")),
                    str(HOST_SCRIPT),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=self._stderr,
                pass_fds=(to_node_r, from_node_w),
                env=env,
                cwd=str(HOST_SCRIPT.parent),
                preexec_fn=_prepare_child if sys.platform.startswith("linux") else None,
            )
        finally:
            os.close(to_node_r)
            os.close(from_node_w)
        mine = _network_namespace("self")
        theirs = _network_namespace(self.proc.pid)
        self.network_isolated = mine is not None and theirs is not None and mine != theirs
        self._out, self._in = to_node_w, from_node_r
        os.set_blocking(self._in, False)
        self._buf = bytearray()
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.generation += 1
        self.loaded = 0
        self.drops = []
        self.pacer = Pacer()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the process: close its command pipe (it exits), kill it if it does not, reap
        it. Safe to call twice."""
        proc, self.proc = self.proc, None
        for fd in (self._out, self._in, self._node_end):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._out = self._in = self._node_end = -1
        if proc is not None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stderr_tail(self, limit: int = 2_000) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text[-limit:]

    def _abort(self, what: str) -> NodeLaneAborted:
        """Kill and reap the process; the error describing why."""
        proc = self.proc
        status = ""
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            status = f" (killed by signal {-code})" if code < 0 else f" (exit status {code})"
        tail = self._stderr_tail()
        self.close()
        message = f"the Node process of the JavaScript lane {what}{status}"
        fatal = next((line for line in tail.splitlines() if "FATAL ERROR:" in line), None)
        if fatal is not None:
            # V8's own verdict (the heap blew up), ahead of the native stack that follows it.
            message += f": {fatal.strip()}"
        if tail:
            message += f"; its last output:\n{tail}"
        message += (
            "\nThis stops the run. If the worker loops without awaiting, blocks (Atomics.wait) "
            "or runs out of memory, fix that; otherwise run again."
        )
        self.failures.setdefault(self.generation, message)
        return NodeLaneAborted(message)

    # -- the protocol --------------------------------------------------------------------------

    def command(self, cmd: dict[str, Any], *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send ``cmd``; return the events Node produced until it was idle again."""
        if self.proc is None:
            raise NodeLaneAborted(
                "the Node process of the JavaScript lane is not running (it failed earlier in "
                "this run); run again"
            )
        if self.drops:
            cmd["drop"], self.drops = self.drops, []
        data = compact_json(cmd).encode("ascii") + b"\n"
        try:
            self._write(data)
            line = self._read_line(self.timeout if timeout is None else timeout)
            spin = self.pacer.answered()
            if spin is not None:
                self._set_spinning(spin)
        except NodeLaneAborted:
            raise
        except Exception as exc:
            raise self._abort(f"failed to exchange a command ({exc})") from None
        except BaseException:
            # An interrupt mid-command (Ctrl-C, the CLI's watchdog) leaves the protocol out of
            # step and Node possibly stuck in the worker's code: stop it, then let it propagate.
            if self.proc is not None:
                self._abort("was interrupted")
            raise
        events = _decode(line.decode("utf-8"))
        if b'"hosterror"' not in line:
            return events
        for ev in events:
            if ev.get("e") == "hosterror":
                detail = f"{ev.get('error')}\n{ev.get('stack', '')}"
                raise self._abort(f"hit an internal error: {detail}")
        return events

    def _set_spinning(self, spin: bool) -> None:
        """Make Node's reads non-blocking (it spins, see host.mjs's readLine) or blocking."""
        if self._node_end < 0:
            return
        try:
            os.set_blocking(self._node_end, not spin)
        except OSError:
            self.pacer.node_spins = False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._out, view)
            except BrokenPipeError:
                raise self._abort("exited") from None
            view = view[n:]

    def _read_line(self, timeout: float) -> bytes:
        buf = self._buf
        i = buf.find(b"\n")
        if i >= 0:
            line = bytes(buf[:i])
            del buf[: i + 1]
            return line
        assert self._poll is not None
        deadline = -1.0
        spins = SPIN_READS
        while True:
            try:
                # The fd is non-blocking: Node usually answers within a few hundred
                # microseconds, and trying again (giving the core away in between) is cheaper
                # than sleeping in poll and being woken by the kernel.
                chunk = os.read(self._in, 1 << 20)
            except BlockingIOError:
                if spins:
                    spins -= 1
                    os.sched_yield()
                    continue
                now = time.monotonic()  # wall-clock-ok: a timeout on a child process
                if deadline < 0:
                    deadline = now + timeout
                elif now >= deadline:
                    raise self._abort(
                        f"did not answer within {timeout:.0f} s (the worker may be stuck in a "
                        "loop that never awaits; QMODEL_NODE_TIMEOUT sets the allowance)"
                    ) from None
                # Short slices, so an interrupt (Ctrl-C, the CLI's watchdog) is handled soon.
                self._poll.poll(min(deadline - now, 0.25) * 1000)
                continue
            if not chunk:
                raise self._abort("exited")
            start = len(buf)
            buf += chunk
            i = buf.find(b"\n", start)
            if i >= 0:
                line = bytes(buf[:i])
                del buf[: i + 1]
                return line

    # -- instances -----------------------------------------------------------------------------

    def new_instance(self) -> int:
        """A fresh instance number (the process is restarted first if it has loaded many)."""
        if self.proc is None or not self.alive or self.loaded >= RESTART_AFTER:
            self.start()
        self.loaded += 1
        self._next_instance += 1
        return self._next_instance

    def forget(self, instance: int, generation: int) -> None:
        """Drop ``instance`` with the next command (called when its worker is collected)."""
        if generation == self.generation:
            self.drops.append(instance)


_HOSTS: dict[tuple[str, tuple[str, ...]], NodeHost] = {}


def host_for(node: str, roots: tuple[str, ...] = ()) -> NodeHost:
    """The process-wide host for the node binary ``node`` whose worker modules live in the
    folders ``roots`` (started on first command). The permission model is fixed when Node
    starts, so each set of folders has its own process; at most :data:`MAX_HOSTS` run at once,
    and the one used least recently is stopped to make room."""
    key = (node, tuple(roots))
    host = _HOSTS.pop(key, None)
    if host is None:
        while len(_HOSTS) >= MAX_HOSTS:
            _HOSTS.pop(next(iter(_HOSTS))).close()
        host = NodeHost(node, key[1])
    _HOSTS[key] = host  # most recently used last
    return host
