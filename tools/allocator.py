"""The host allocator setting the command-line tools share (tools/train.py, tools/bench_train.py).

`keep_freed_memory()` changes glibc's malloc for the whole process, so a tool calls it once at start;
the library (tl/) never does. Imports no tl file.
"""
import ctypes
import platform
import sys


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every allocation over 32 MB (a MiniLM attention tensor at batch 128 on RTE is
    100 MB) with a fresh mmap and unmaps it on free, so each training step faults in and zeroes its largest
    buffers anew: 130,000-200,000 page faults and 0.6-0.9 s of system time per MRPC step at batch 128 on 2
    cores. With mmap off and the trim threshold at 2 GB, freed blocks are reused: same-machine A/B, MRPC
    batch 128 2810/3038 -> 2328/2385 ms per step, SST-2 unchanged (556/499 -> 524/513). The process keeps
    its peak memory until exit, as a training run needs it again at the next step anyway. Process-wide, so
    the command-line tools call it, never the library. Returns False (changing nothing) off glibc."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
