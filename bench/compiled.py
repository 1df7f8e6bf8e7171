"""Builds the benchmarks' small C++ helpers on demand (the xDS driver, the HTTP load generator).

Why on demand: the helpers are sources in the repository, not binaries; a benchmark compiles its helper once with
the machine's g++ and reuses it. The binary lands in a gitignored ``.build/`` beside its source, named by a hash of
the source and the compiler command, so it is rebuilt exactly when either changes; concurrent builds each write
their own temporary file and rename it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path


def build_cached(source: Path, name: str, extra_flags: list[str] | None = None) -> tuple[str | None, str]:
    """(path of the compiled ``source``, "") or (None, why not), with ``g++ -std=c++17 -O2 -pthread``
    (``$CXX`` overrides the compiler) and ``extra_flags`` after the source."""
    if not source.exists():
        return None, f"{source} is missing"
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        return None, f"{cxx} not found (apt-get install g++)"
    cmd = [cxx, "-std=c++17", "-O2", "-pthread", str(source), *(extra_flags or [])]
    digest = hashlib.sha256(source.read_bytes() + "\0".join(cmd).encode()).hexdigest()[:16]
    build = source.parent / ".build"
    binary = build / f"{name}-{digest}"
    if binary.exists():
        return str(binary), ""
    build.mkdir(parents=True, exist_ok=True)
    print(f"compiling {source.name} (once)", file=sys.stderr, flush=True)
    tmp = build / f".{name}-{digest}.{os.getpid()}.tmp"
    done = subprocess.run([*cmd[:5], "-o", str(tmp), *cmd[5:]], capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None, f"compiling {source.name} failed: {done.stderr.strip()[-2000:]}"
    os.replace(tmp, binary)
    for old in build.glob(f"{name}-*"):
        if old != binary:
            old.unlink(missing_ok=True)
    return str(binary), ""
