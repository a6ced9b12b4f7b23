"""The CPU assignment solver: emd_auction.c, compiled with the system C compiler on first use.

The shared library is cached under ``$XDG_CACHE_HOME/crossmodal`` (default ``~/.cache``),
named by a hash of the source and flags, and written atomically, so concurrent first uses
and interrupted builds never leave a broken library behind. Without a working compiler,
``load()`` returns None and the caller falls back to the torch auction.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import torch
from torch import Tensor

from crossmodal.io import atomic_path

SOURCE = Path(__file__).with_name("emd_auction.c")
_FLAG_SETS = (["-O3", "-fno-math-errno", "-fopenmp"], ["-O3", "-fno-math-errno"])


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "crossmodal"


def _compile(compiler: str, flags: list[str]) -> Path | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    library = _cache_dir() / f"emd_auction-{key}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(library, suffix=".so") as tmp:
        result = subprocess.run(
            [compiler, *flags, "-shared", "-fPIC", str(SOURCE), "-o", str(tmp), "-lm"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise OSError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "compiler failed")
    return library


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled solver, or None (with one warning) when no C compiler can build it."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    errors = []
    if compiler is not None and SOURCE.exists():
        for flags in _FLAG_SETS:
            try:
                library = ctypes.CDLL(str(_compile(compiler, flags)))
            except OSError as exc:
                errors.append(str(exc))
                continue
            fn = library.emd_auction_batch
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_double, ctypes.c_int64, ctypes.c_void_p]
            return library
    warnings.warn(
        "crossmodal.ops.emd: could not build the C auction solver "
        f"({'; '.join(errors) or 'no C compiler found'}); using the slower torch auction"
    )
    return None


def solve(x: Tensor, y: Tensor, tol: float) -> Tensor:
    """Assignment (B, N) int64 for fp32 CPU clouds x, y (B, N, 3); raises OSError if the library is missing."""
    library = load()
    if library is None:
        raise OSError("the C auction solver is not available")
    x = x.detach().to(torch.float32).contiguous()
    y = y.detach().to(torch.float32).contiguous()
    batch, n, _ = x.shape
    match = torch.empty(batch, n, dtype=torch.int64)
    failures = library.emd_auction_batch(
        x.data_ptr(), y.data_ptr(), batch, n, float(tol), torch.get_num_threads(), match.data_ptr()
    )
    if failures:
        raise MemoryError(f"emd: the auction solver could not allocate its {n}x{n} cost matrix")
    return match
