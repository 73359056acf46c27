"""Keep freed image buffers from staying resident (glibc only; a no-op elsewhere).

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so after the first
full-size buffer, tile-sized and channel-sized buffers come from the heap, where one long-lived allocation
above them keeps every freed byte below resident: on a 4 MP scan the process peaked at 901 MiB instead of 714
(measured stage by stage; README "Memory model"). Fixing the threshold at 1 MiB (`M_MMAP_THRESHOLD`, which
also turns off the dynamic adjustment) gives every buffer of 1 MiB or more its own mapping, returned to the
system when freed. Called once when the stages are imported (CLI, Ray actors, Prefect tasks).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """mallopt(M_MMAP_THRESHOLD, nbytes) on glibc; True when it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
    except (OSError, AttributeError):       # not glibc (musl has no mallopt)
        return False
