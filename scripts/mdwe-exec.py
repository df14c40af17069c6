#!/usr/bin/env python3
"""Runs a command under the seccomp rules of systemd's MemoryDenyWriteExecute=yes.

    scripts/mdwe-exec.py COMMAND [ARG...]

systemd (src/shared/seccomp-util.c) makes these calls fail with EPERM:
mmap with PROT_WRITE and PROT_EXEC, mprotect and pkey_mprotect with
PROT_EXEC, shmat with SHM_EXEC. This script installs the same filter with
libseccomp (a dependency of systemd, so present wherever the unit runs),
checks that it bites, and execs COMMAND, which inherits it. A program that
needs writable+executable memory (a JIT) fails under it as it would in the
unit; tests/systemd.rs runs `anomalyd replay` this way to show that ONNX
Runtime's CPU provider does not.
"""
import ctypes
import ctypes.util
import errno
import mmap
import os
import sys

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EPERM = 0x00050000 | errno.EPERM
SCMP_CMP_MASKED_EQ = 7


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        sys.exit("mdwe-exec: seccomp_init failed")
    for name, arg, mask in (("mmap", 2, PROT_WRITE | PROT_EXEC), ("mprotect", 2, PROT_EXEC),
                            ("pkey_mprotect", 2, PROT_EXEC), ("shmat", 2, SHM_EXEC)):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue  # not on this architecture
        cmp = ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, mask)
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO_EPERM, nr, 1, ctypes.byref(cmp)) < 0:
            sys.exit(f"mdwe-exec: cannot add the {name} rule")
    if lib.seccomp_load(ctx) < 0:
        sys.exit("mdwe-exec: seccomp_load failed")

    # The filter must bite: a writable and executable mapping is refused.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    p = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ | PROT_WRITE | PROT_EXEC,
                  mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if p != ctypes.c_void_p(-1).value or ctypes.get_errno() != errno.EPERM:
        sys.exit("mdwe-exec: the filter is not active (a W+X mapping succeeded)")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
