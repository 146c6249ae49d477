"""`python tests/forked_cai.py ARGS` is `cai ARGS` forked from the test worker's fork server
(`forkserver.py`, named by CAI_TEST_FORK_SERVER), on this process's own stdin, stdout and
stderr, exiting with the command's status: what the recipe tests give make as CAI, so that the
recipe's commands skip the imports as `run_cai`'s do. Without a server, or where the server
cannot take the command (`forkserver.can_fork`), it becomes `python -m cai_cli ARGS` with this
checkout first on the path."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from forkserver import SERVER_ENV, ask_for_child, can_fork, log_command  # noqa: E402


def main(args: list[str]) -> None:
    address = os.environ.get("CAI_TEST_FORK_SERVER")
    if address and os.path.exists(address):
        server_env = json.loads((Path(address).parent / SERVER_ENV).read_text(encoding="utf-8"))
        if can_fork(args, dict(os.environ), server_env):
            started = time.monotonic()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                reply, _ = ask_for_child(connection, address, args, dict(os.environ), os.getcwd(), [0, 1, 2])
                status = int(reply.readline())
            log_command("forked", time.monotonic() - started, args)
            if status < 0:  # killed by a signal: end the same way, as the shell reports it
                signal.signal(-status, signal.SIG_DFL)
                os.kill(os.getpid(), -status)
            sys.exit(status)
    path = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "cai_cli", *args], {**os.environ, "PYTHONPATH": path})


if __name__ == "__main__":
    main(sys.argv[1:])
