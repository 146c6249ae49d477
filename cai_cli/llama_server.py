"""llama-cpp-python's OpenAI-compatible server, started so that it runs on every CPU.

`python -m llama_cpp.server` loads its model the default way, and on Intel CPUs with AMX the
first multi-token decode of such a model segfaults (see `cai_cli.hardware`). This launcher starts
the same server app with the model loaded through `model_params_overridden` (weight repacking off
where `--repack auto` turns it off), on the loopback address unless told otherwise, and prints its
API root URL on stdout once the model is loaded and the port listens. The tests and the server
benchmark start it with the embedded model; it serves any GGUF for a quick local server.

It needs the server extras: pip install 'llama-cpp-python[server]' (they come with cai's test
extras). The server answers one request at a time (llama-cpp-python holds one model context);
vLLM, SGLang, TGI and llama.cpp's own llama-server batch concurrent requests.

Examples:

    python -m cai_cli.llama_server                  # the embedded model on a free loopback port
    python -m cai_cli.llama_server -m model.gguf --port 8000 --alias my-model --threads 4
    cai sample --base-url http://127.0.0.1:8000/v1 -m my-model --tokenizer model.gguf < prompts.jsonl
"""

from __future__ import annotations

import argparse
import socket
import sys


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cai_cli.llama_server",
                                     description="Serve a GGUF through llama-cpp-python's OpenAI-compatible server, "
                                                 "loaded so that it runs on every CPU.")
    parser.add_argument("-m", "--model", help="GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--alias", help="the model's name in the API (default: the model path as given)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) takes a free port")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context size in tokens (default 2048)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--repack", default=None, help="auto, on or off (default: CAI_REPACK or auto)")
    parser.add_argument("--api-key", default=None, help="require this bearer token from clients")
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's and the server's logs")
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    """The llama-cpp-python server app with its model loaded (AMX-safe)."""
    import os

    from cai_cli.backends.llama_loading import model_params_overridden
    from cai_cli.backends.native_logs import quiet_native_logs
    from cai_cli.hardware import use_weight_repacking
    from cai_cli.models import resolve_model

    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise SystemExit(f"Error: the server extras are missing ({exc.name}): "
                         "pip install 'llama-cpp-python[server]'") from None
    model = args.model if args.model else str(resolve_model(None))
    threads = args.threads or max(1, os.cpu_count() or 1)
    settings = ModelSettings(model=model, model_alias=args.alias, n_ctx=args.n_ctx, n_threads=threads,
                             n_threads_batch=threads,
                             # Top log-probabilities (compare, eval) need the logits of every position.
                             logits_all=True, verbose=args.verbose)
    with model_params_overridden(use_extra_bufts=use_weight_repacking(args.repack)), quiet_native_logs(args.verbose):
        return create_app(server_settings=ServerSettings(host=args.host, port=args.port, api_key=args.api_key),
                          model_settings=[settings])


class ServerProcess:
    """A launcher started in a child process (for tests and benchmarks): `url` once it listens.

        with ServerProcess(["--alias", "smollm2", "--threads", "1"]) as server:
            run(["cai", "sample", "--base-url", server.url, "-m", "smollm2"])
    """

    def __init__(self, args: list[str] | None = None, env: dict[str, str] | None = None, startup_timeout: float = 120):
        import subprocess
        import tempfile
        import threading

        self.args = list(args or [])
        # stderr goes to a file (read if the start fails) and stdout is drained for good: a full
        # pipe would stop the server.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", "cai_cli.llama_server", *self.args], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True)
        first: list[str] = []
        started = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                if not first:
                    first.append(line)
                    started.set()
            started.set()

        threading.Thread(target=drain, daemon=True).start()
        started.wait(startup_timeout)
        if not first or not first[0].startswith("http"):
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"the server did not start: {self.log.read()[-2000:]}")
        self.url = first[0].strip()
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as a crashed one does."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:  # noqa: BLE001 - it must go, however it refuses
                self.kill()
        self.log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_arguments(argv)
    app = build_app(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # A restarted server takes its old port back at once, whatever connections it left behind.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise SystemExit(f"Error: cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sock.listen(128)
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(f"http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    config = uvicorn.Config(app, log_level="info" if args.verbose else "warning", access_log=args.verbose)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
