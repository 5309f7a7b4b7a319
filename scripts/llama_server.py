"""The benchmark's peer: llama.cpp's own C++ llama-server, built once from the llama.cpp that llama-cpp-python vendors.

The sdist of the installed llama-cpp-python version holds all of llama.cpp (tools/server included), so the peer
runs the very kernels slmserve's engine calls. Built with cmake (`--target llama-server`, no curl, no OpenSSL,
static), ~5 minutes on 2 cores, into `<cache>/llama-server/<version>/llama-server`; later calls return that path.

    python scripts/llama_server.py [--cache-dir ~/.cache/slmserve]     # build if missing, print the path
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def llama_server(cache_dir: Path) -> Path:
    """The llama-server binary for the installed llama-cpp-python version, built on first use."""
    pinned = version("llama-cpp-python")
    binary = cache_dir.expanduser() / "llama-server" / pinned / "llama-server"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={pinned}", "-d", str(work)],
            check=True,
        )  # fmt: skip
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
        partial = binary.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", partial)
        os.replace(partial, binary)  # a build cut short never leaves a binary that looks finished
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/slmserve"))
    print(llama_server(parser.parse_args().cache_dir))


if __name__ == "__main__":
    main()
