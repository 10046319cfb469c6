"""The code-exec harness: the script that runs INSIDE the sandbox (standard library only).

Started as ``python -I -S -B _code_harness.py PAYLOAD_FD REPORT_FD UID GID CPU_S AS_BYTES FSIZE
NOFILE``; never imported by caproute. The main thread, before any candidate code runs:

1. reads the payload (JSON: the per-run nonce, the solution, the tests, the entry point) from
   PAYLOAD_FD and closes it; from then on the nonce lives only in this thread's local variables;
2. drops to UID/GID when they are >= 0 (a root caller: the sandbox starts as root with only
   CAP_SETUID/CAP_SETGID; a throwaway uid makes RLIMIT_NPROC count this run alone) and checks
   that the privileges are gone;
3. sets its rlimits and removes the interpreter hooks that reach another thread's frames or
   rewrite a running frame (``sys._current_frames``, ``sys.settrace``, ``sys.addaudithook``, ...),
   ignores SIGINT (``_thread.interrupt_main``);
4. starts ONE worker thread and waits for it. The worker sets RLIMIT_NPROC to 1 (no process or
   thread can be started after it), runs the solution in a fresh ``__main__`` module, then the
   tests in a namespace of their own (the solution's names minus any that shadow a built-in, and
   a private copy of the built-ins taken before the solution ran), and writes one status byte
   (``P`` only when the tests returned) plus a detail on a pipe.

The main thread then counts a pass only when the worker has ended, no other thread is alive, the
pipe holds exactly ``P`` and its write end is still that pipe; then it appends ``\\n<nonce> passed
<hex>\\n`` to REPORT_FD (a file the parent opened write-only). Every other outcome is written
without being trusted: it can only be a failure. A candidate that exits (``sys.exit``,
``os._exit``, a signal, ``exec``) leaves no record: the parent counts it a failure.
"""

import os
import sys


def _describe(exc) -> str:
    """``Type: args`` of an exception without running its own ``__str__``/``__repr__``."""
    name = type.__dict__["__qualname__"].__get__(type(exc))
    try:
        args = BaseException.__dict__["args"].__get__(exc)
    except Exception:
        args = ()
    shown = []
    for a in args[:3]:
        if type(a) in (str, int, float, bool):
            shown.append(str.__str__(a) if type(a) is str else repr(a))
        else:
            shown.append(f"<{type.__dict__['__qualname__'].__get__(type(a))}>")
    return f"{name}: {', '.join(shown)}" if shown else name


def _worker(solution, tests, keep, clean_builtins, w, done, write, setrlimit, nproc, exec_) -> None:
    """The worker thread: everything the candidate can touch runs here (``exec_`` is the real
    ``exec``, bound before the solution could rebind ``builtins.exec``)."""
    status, detail = b"E", "the harness's worker did not finish"
    try:
        setrlimit(nproc, (1, 1))  # from here no new process or thread, whatever the code tries
        import builtins

        main_mod = type(sys)("__main__")
        main_mod.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main_mod
        sys.argv = ["solution.py"]
        try:
            exec_(solution, main_mod.__dict__)
        except BaseException as e:  # noqa: BLE001 - every way out of the solution is a verdict
            # literal status bytes, never b"P": a rebound issubclass or _describe cannot make a pass
            status = b"X" if issubclass(type(e), SystemExit) else b"M" if issubclass(type(e), MemoryError) else b"E"
            detail = "SystemExit raised before the tests ran" if status == b"X" else _describe(e)
        else:
            # exact str keys only (a str subclass could run code in __hash__); no name shadowing a built-in
            ns = {k: v for k, v in main_mod.__dict__.items() if type(k) is str and (k == keep or k not in clean_builtins)}
            ns["__builtins__"] = dict(clean_builtins)
            ns["__name__"] = "__main__"
            try:
                exec_(tests, ns)
                status, detail = b"P", ""
            except BaseException as e:  # noqa: BLE001
                status = (b"F" if issubclass(type(e), AssertionError) else b"X" if issubclass(type(e), SystemExit)
                          else b"M" if issubclass(type(e), MemoryError) else b"E")
                detail = "SystemExit raised during the tests" if status == b"X" else _describe(e)
    except BaseException:  # noqa: BLE001 - a harness failure is an error verdict
        status = b"E"
    finally:
        try:
            write(w, status if status == b"P" else status + detail[-2000:].encode("utf-8", "backslashreplace"))
        finally:
            try:  # noqa: SIM105 - no contextlib here: its code could have been rebound by the candidate
                done.release()
            except BaseException:  # noqa: BLE001 - released early by the candidate: the main thread sees it
                pass


def _emit(write, exit_, report_fd: int, nonce: bytes, status: str, detail: str = "") -> None:
    """Append the verdict record and end the process (the nonce is an argument, never stored)."""
    write(report_fd, b"\n" + nonce + b" " + status.encode("ascii") + b" " +
          detail[-2000:].encode("utf-8", "backslashreplace").hex().encode("ascii") + b"\n")
    exit_(0)


def _read_payload(fd: int) -> dict:
    import json

    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    return json.loads(b"".join(chunks).decode("utf-8"))


def _setup(uid: int, gid: int, limits: tuple) -> str | None:
    """Drop privileges and set the rlimits; the problem, or None. Its own frame: an exception
    raised here never makes the main thread's frame (which holds the nonce) an object."""
    import resource
    import signal

    if uid >= 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as e:
            return f"cannot drop privileges: {e}"
        try:
            os.setuid(0)  # must fail: no capability may survive the drop
            return "privileges not dropped"
        except PermissionError:
            pass
    cpu_s, as_bytes, fsize, nofile = limits
    try:
        for which, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, as_bytes),
                             (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
    except (OSError, ValueError) as e:
        return f"cannot set limits: {e}"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the size limit: an OSError, not a kill
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # _thread.interrupt_main does nothing then
    # hooks that reach another thread's frames (the main thread holds the nonce), rewrite a running
    # frame (a trace function can jump over an assert) or run code in the main thread (audit hooks)
    for name in ("_current_frames", "_current_exceptions", "settrace", "setprofile", "addaudithook", "monitoring",
                 "_settraceallthreads", "_setprofileallthreads", "remote_exec", "call_tracing"):
        if hasattr(sys, name):
            delattr(sys, name)
    return None


def _compile(payload: dict):
    """(solution, tests) code objects, or (status, detail) of a program that does not compile."""
    try:
        solution = compile(payload["solution"], "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        return "syntax_error", f"{type(e).__name__}: {getattr(e, 'msg', e)} (line {getattr(e, 'lineno', '?')})"
    try:
        tests = compile(payload["tests"], "tests.py", "exec")
    except (SyntaxError, ValueError) as e:
        return "error", f"the tests do not compile: {getattr(e, 'msg', e)} (line {getattr(e, 'lineno', '?')})"
    return solution, tests


def main(argv) -> None:
    """The main thread. It raises nothing itself and holds the nonce only in a local variable;
    after the worker started it calls only functions bound before (no candidate code can run here)."""
    import _thread
    import builtins
    import fcntl
    import gc
    import resource
    import time

    write, exit_, read, fstat, getfl, count, sleep, no_gc = (os.write, os._exit, os.read, os.fstat, fcntl.fcntl,
                                                              _thread._count, time.sleep, gc.disable)
    f_getfl, accmode, wronly, os_error, emit = fcntl.F_GETFL, os.O_ACCMODE, os.O_WRONLY, OSError, _emit
    payload_fd, report_fd, uid, gid, cpu_s, as_bytes, fsize, nofile = (int(a) for a in argv)
    payload = _read_payload(payload_fd)
    nonce = payload.pop("nonce").encode("ascii")
    problem = _setup(uid, gid, (cpu_s, as_bytes, fsize, nofile))
    if problem is not None:
        emit(write, exit_, report_fd, nonce, "sandbox_error", problem)
    compiled = _compile(payload)
    if type(compiled[0]) is str:
        emit(write, exit_, report_fd, nonce, compiled[0], compiled[1])
    keep = payload.get("entry_point")
    del payload
    clean_builtins = dict(builtins.__dict__)  # before any candidate code: the tests' own copy
    r, w = os.pipe()
    os.set_blocking(w, False)
    os.set_blocking(r, False)
    w_ino = fstat(w).st_ino
    done = _thread.allocate_lock()
    done.acquire()
    _thread.stack_size(max(1 << 20, min(64 << 20, as_bytes // 8 if as_bytes > 0 else 64 << 20)) & ~0xFFFF)
    _thread.start_new_thread(_worker, (compiled[0], compiled[1], keep, clean_builtins, w, done, write,
                                       resource.setrlimit, resource.RLIMIT_NPROC, exec))
    del compiled, clean_builtins
    done.acquire()
    no_gc()  # no cyclic collection (a candidate's finaliser) can run in this thread any more
    waited = 0
    while count() != 0:  # the worker ends a moment after releasing the lock
        if waited == 2000:
            emit(write, exit_, report_fd, nonce, "error", "threads still running after the tests")
        sleep(0.001)
        waited += 1
    data = b""
    try:  # noqa: SIM105 - only functions bound before the worker started run in this thread
        data = read(r, 1 << 16)
    except os_error:
        pass
    intact = False
    try:  # noqa: SIM105
        intact = fstat(w).st_ino == w_ino and getfl(w, f_getfl) & accmode == wronly
    except os_error:
        pass
    if data == b"P" and intact:
        emit(write, exit_, report_fd, nonce, "passed")
    # literal comparisons only: any object the worker could reach may have been replaced
    code, status = data[:1], "error"
    if code == b"F":
        status = "failed"
    elif code == b"X":
        status = "early_exit"
    elif code == b"M":
        status = "memory"
    elif code != b"E":
        emit(write, exit_, report_fd, nonce, "error", "the harness's status channel was tampered with")
    emit(write, exit_, report_fd, nonce, status, data[1:].decode("utf-8", "replace"))


_EXIT = os._exit  # bound at start: the candidate may rebind os._exit

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    finally:
        _EXIT(3)  # never reach interpreter shutdown (a candidate's atexit or finaliser hooks)
