"""Run `cai` commands as processes forked from one that has already imported cai and its libraries.

A `cai` subprocess spends about 0.3 s importing before it reads a record, and a training command
about 6 s (torch, transformers, TRL, datasets, peft: a tiny model's train-sft takes 7 s as a fresh
process, 0.7 s forked); the suite runs a few hundred of them. A fork
server pays the imports once per test worker: it is started with the worker's environment,
imports everything, and forks one child per command. The child is a real process, with the
test's pipes as its stdin, stdout and stderr, its own environment and working directory, and an
exit status, so what it prints and how it exits are what `python -m cai_cli` gives: only the
imports are shared. (PyTorch's DataLoader forks worker processes after the same imports.)

Variables read while the libraries are imported (OMP_NUM_THREADS, PYTHONPATH, HF_HUB_OFFLINE,
...) must match the server's; `can_fork` says whether they do, and `run_cai` starts a plain
subprocess where they do not. `forked_cai.py` asks the same server from a shell or a Makefile.

    server = ForkServer(env)
    code, stdout, stderr = server.run(["sample", "prompts.jsonl"], input=b"", env=env, cwd=root)
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

# Variables the libraries read when they are imported (or rich's console when cai's is made):
# a command whose environment differs in one of them runs as a fresh process instead.
IMPORT_TIME = ("PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "HF_", "HUGGINGFACE_",
               "TRANSFORMERS_", "TOKENIZERS_", "TQDM_", "TORCH_", "PYTORCH_", "CUDA_", "ACCELERATE_",
               "DATASETS_", "GGML_", "LLAMA_", "LANG", "LC_", "HOME", "TMPDIR", "XDG_", "COLUMNS",
               "LINES", "TERM", "NO_COLOR", "FORCE_COLOR")
# What `accelerate launch` and torchrun set for the processes they start, under prefixes above:
# read when an Accelerator or a process group is made, never on import, so a launched process
# can be forked too (ACCELERATE_DISABLE_RICH is read by the launcher itself).
SET_BY_LAUNCHERS = ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_DYNAMO_", "ACCELERATE_DISABLE_RICH",
                    "TORCH_NCCL_ASYNC_ERROR_HANDLING")
# What the training commands set before they import the Hugging Face libraries, unless --verbose
# (`training.loading.prepare_libraries`); the server sets them before its imports.
TRAINING_DEFAULTS = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
WARM_IMPORTS = ("cai_cli.cli", "cai_cli.backends.llama_cpp", "cai_cli.backends.llama_batch",
                "cai_cli.backends.transformers", "cai_cli.training.sft", "cai_cli.training.preference",
                "cai_cli.training.rl", "cai_cli.training.dpo", "cai_cli.training.gguf_export",
                "cai_cli.stages.sample", "cai_cli.stages.critique", "cai_cli.stages.revise",
                "cai_cli.stages.compare", "trl", "peft", "accelerate", "datasets")


SERVER_ENV = "env.json"  # beside the socket: the environment the server imported in


def log_command(how: str, seconds: float, args: list[str]) -> None:
    """With CAI_TEST_FORK_LOG=FILE, a line per command: how it ran (forked or fresh), its
    seconds and its arguments, for finding where the suite's time goes."""
    if os.environ.get("CAI_TEST_FORK_LOG"):
        with open(os.environ["CAI_TEST_FORK_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{how}\t{seconds:.1f}\t{' '.join(args)[:200]}\n")


def import_time_part(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in {**TRAINING_DEFAULTS, **env}.items()
            if k.startswith(IMPORT_TIME) and not k.startswith(SET_BY_LAUNCHERS)}


def can_fork(args: list[str], env: dict[str, str], server_env: dict[str, str]) -> bool:
    """Whether `cai ARGS` in `env` would import its libraries as the server did (`--verbose`
    leaves the progress bars of the Hugging Face libraries on, which the server turned off)."""
    return "--verbose" not in args and import_time_part(env) == import_time_part(server_env)


def ask_for_child(connection: socket.socket, address: str, args: list[str], env: dict[str, str], cwd: str | Path,
                  fds: list[int]):
    """Ask the server at `address` for a child running `cai ARGS` on `fds` (its stdin, stdout,
    stderr); the reply stream, which gives its exit status next, and its pid."""
    connection.connect(address)
    socket.send_fds(connection, [json.dumps({"args": args, "env": env, "cwd": str(cwd)}).encode()], fds)
    reply = connection.makefile("rb")
    return reply, int(reply.readline())


class ForkServer:
    """The client side: starts the server process and asks it for one child per command."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self.folder = tempfile.mkdtemp(prefix="cai-fork-")
        self.address = os.path.join(self.folder, "socket")
        with open(os.path.join(self.folder, SERVER_ENV), "w", encoding="utf-8") as file:
            json.dump(self.env, file)  # for `forked_cai.py`, which compares its own environment with it
        self.process = subprocess.Popen([sys.executable, __file__, self.address], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = self.process.stderr.readline()
        if ready.strip() != b"ready":
            raise RuntimeError(f"the cai fork server did not start: {ready + self.process.stderr.read()!r}")

    def can_run(self, args: list[str], env: dict[str, str]) -> bool:
        return self.process.poll() is None and can_fork(args, env, self.env)

    def start(self, args: list[str], input: bytes | None, env: dict[str, str], cwd: Path) -> ForkedProcess:
        """Start `cai ARGS` in a forked child with `input` on its stdin, as `subprocess.Popen` would."""
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        reply, pid = ask_for_child(connection, self.address, args, env, cwd, [stdin_read, stdout_write, stderr_write])
        for fd in (stdin_read, stdout_write, stderr_write):
            os.close(fd)
        return ForkedProcess(["cai", *args], pid, connection, reply, stdin_write, input or b"", stdout_read, stderr_read)

    def run(self, args: list[str], input: bytes | None, env: dict[str, str], cwd: Path,
            timeout: float) -> tuple[int, bytes, bytes]:
        """Run `cai ARGS` in a forked child; its exit status (negative: killed by that signal),
        stdout and stderr."""
        child = self.start(args, input, env, cwd)
        out, err = child.communicate(timeout)
        return child.returncode, out, err

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class ForkedProcess:
    """A forked child as a test holds a `subprocess.Popen`: `pid`, `poll`, `send_signal`,
    `communicate` (stdout and stderr as bytes) and `returncode`. Threads feed its stdin, drain
    its pipes and wait for the exit status the server sends."""

    def __init__(self, args: list[str], pid: int, connection: socket.socket, reply, stdin: int, input: bytes,
                 stdout: int, stderr: int):
        self.args, self.pid, self.returncode = args, pid, None
        self._connection, self._reply, self._out, self._err = connection, reply, [], []
        self._pumps = [threading.Thread(target=feed, args=(stdin, input), daemon=True),
                       threading.Thread(target=drain, args=(stdout, self._out), daemon=True),
                       threading.Thread(target=drain, args=(stderr, self._err), daemon=True)]
        self._status = threading.Thread(target=self._wait_for_status, daemon=True)
        for thread in (*self._pumps, self._status):
            thread.start()

    def _wait_for_status(self) -> None:
        line = self._reply.readline()
        self.returncode = int(line) if line.strip() else -9  # the server is gone: so is the child
        self._connection.close()

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signal_number: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal_number)
            except ProcessLookupError:
                pass  # it has just exited

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        self._status.join(timeout)
        if self._status.is_alive():
            self.kill()
            raise subprocess.TimeoutExpired(self.args, timeout)
        for pump in self._pumps:
            pump.join()
        return b"".join(self._out), b"".join(self._err)


def feed(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb") as stream:
            stream.write(data)
    except BrokenPipeError:
        pass  # the command did not read all of its input


def drain(fd: int, into: list[bytes]) -> None:
    with open(fd, "rb") as stream:
        into.append(stream.read())


def serve(address: str) -> None:
    """The server side: import, then fork a child per request and report its exit status.

    Children run side by side: the commands of a pipeline (`cai sample | cai show`) ask at the
    same moment, in either order, and each needs the other running to finish."""
    import importlib

    for name, value in TRAINING_DEFAULTS.items():
        os.environ.setdefault(name, value)
    for module in WARM_IMPORTS:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen()
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd: the child's pid, its client's connection
    worker = os.getppid()
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    while os.getppid() == worker:  # else the test worker is gone (killed, say): so is its server
        for key, _ in events.select(timeout=5):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                connection.setblocking(True)
                message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
                pid = os.fork()
                if pid == 0:
                    for pidfd, (_, other) in running.items():
                        os.close(pidfd)
                        other.close()
                    events.close()
                    listener.close()
                    connection.close()
                    try:
                        run_child(json.loads(message), fds)
                    finally:  # it failed before it became the command (a missing working directory, say)
                        traceback.print_exc()
                        os._exit(1)
                for fd in fds:
                    os.close(fd)
                tell(connection, pid)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, connection)
                events.register(pidfd, selectors.EVENT_READ)
            else:  # a child has exited
                events.unregister(key.fd)
                pid, connection = running.pop(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                tell(connection, os.waitstatus_to_exitcode(status))
                connection.close()


def tell(connection: socket.socket, number: int) -> None:
    try:
        connection.sendall(f"{number}\n".encode())
    except OSError:
        pass  # the client has gone (it timed out and killed its child): nobody to tell


def run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python -m cai_cli ARGS` on the given pipes; never returns."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # What click names the program after in usage lines: "python -m cai_cli", as for a user.
    sys.argv = [str(Path(sys.modules["cai_cli"].__file__).with_name("__main__.py")), *request["args"]]
    sys.modules["__main__"].__package__ = "cai_cli"
    from cai_cli.cli import main

    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()  # what the interpreter prints for an uncaught exception
        code = 1
    # An exit as the interpreter's, less tearing down the libraries' modules, which the server
    # imported and a `cai sample` never does (1.4 s per command): exit handlers, then flushed
    # streams. A file left open is not flushed here, where a real exit would have done it.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
