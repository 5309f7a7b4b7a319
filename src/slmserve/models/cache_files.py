"""Files slmserve makes once and keeps under --cache-dir (requantized weights, converted checkpoints and LoRA
adapters, assembled models): how a source file is told apart, and the one way a cache file is written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_key(path: Path) -> str:
    """The file's identity: size, modification time and a hash of its first and last MiB."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, stat.st_size - (1 << 20)))
        digest.update(f.read())
    return digest.hexdigest()[:16]


def cache_prefix(path: Path) -> str:
    """How the names of the cached copies of the file at `path` begin: its stem and where it lives, hashed, so the
    cache tells a changed file (this prefix, another key) from another file."""
    place = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{path.name.removesuffix('.gguf')}-{place}-"


@contextlib.contextmanager
def into_place(out: Path) -> Iterator[Path]:
    """A temporary path beside `out` to write to; renamed onto out (readable by all: a cache is read by whoever
    serves the model) when the block ends, removed if it raises. A crash, or two servers starting at once, never
    leave half a file under the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".gguf")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
