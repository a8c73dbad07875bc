"""The BLAS's matrix product as a C function that numba kernels call without the GIL.

A chunk of Winograd's work (``conv_winograd.py``) is three steps: the input tiles (a
numba kernel), 36 matrix products (BLAS), the output tiles (numba). Called one by one
from Python, each step's return has to take the GIL again, and on two threads the other
thread often holds it (a W4 training step on two threads made 68 futex waits under
strace, against 2-3 on one thread). With the products called from inside numba, through
the C function ``cblas_sgemm`` (``cblas_dgemm`` for float64) of the very library numpy
uses, a chunk is one call from Python, and the weight gradient's products add into the
thread's sum in place (beta = 1) instead of through a temporary. Measured, training
steps alternated in one process: one thread, W4 1.03x (its conv backward 1.06x), W5
1.01x, W7 1.01-1.02x, W8 1.02x; two threads, W4 1.00x, W5 1.01x, W7 and W8 1.01-1.02x
(the GIL's waits were not what held two threads back).

The library is the one threadpoolctl reports for numpy, and the function is looked up
under the names OpenBLAS and MKL give it (numpy's own wheels: ``scipy_cblas_sgemm64_``).
Its integer arguments are passed as 64-bit integers. That is right for an ILP64 library
(numpy's wheels) and, on x86-64, also for an LP64 one: there every integer argument takes
a full 64-bit register or stack slot, of which an LP64 function reads the low half. So
this is used on x86-64 only, and only after a small product through it has matched
numpy's; elsewhere ``gemm`` gives None and the callers keep ``np.matmul``.

The kernels get the function as its address, a plain integer, and call it through
``product``: handed over as a ctypes object, the function cost numba's dispatcher 2 us
a call to turn back into an address (48 calls in a W4 training step, under the GIL).
"""
from __future__ import annotations

import ctypes
import platform

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enum values
NAMES = {"f": ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm"),
         "d": ("scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm")}
_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
_found: dict = {}


def gemm(dtype):
    """C := alpha A @ B + beta C, row-major, as a ctypes function numba can call:
    ``gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, alpha, a_pointer, lda, b_pointer, ldb,
    beta, c_pointer, ldc)``; for float32 or float64, else (or when not found) None."""
    kind = np.dtype(dtype).char
    if kind not in NAMES:
        return None
    if kind not in _found:
        _found[kind] = _find(kind) if _X86_64 else None
    return _found[kind]


def gemm_address(dtype):
    """``gemm(dtype)``'s address, for ``product``; None where ``gemm`` gives None."""
    function = gemm(dtype)
    return None if function is None else ctypes.cast(function, ctypes.c_void_p).value


def _product_codegen(trans_a, trans_b):
    """The codegen of ``product`` (A and B as they are), ``product_transposed_a`` (A^T) or
    ``product_transposed_b`` (B^T)."""
    def typer(typingctx, address, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        real = alpha
        signature = types.void(address, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context, builder, signature, args):
            def integer(i):
                return context.cast(builder, args[i], signature.args[i], types.int64)

            def number(i):
                return context.cast(builder, args[i], signature.args[i], real)

            i32, i64, value = ir.IntType(32), ir.IntType(64), context.get_value_type(real)
            function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, value, i64, i64,
                                                            i64, i64, value, i64, i64])
            function = builder.inttoptr(integer(0), function_type.as_pointer())
            builder.call(function, [i32(ROW_MAJOR), i32(TRANS if trans_a else NO_TRANS), i32(TRANS if trans_b else NO_TRANS),
                                    integer(1), integer(2), integer(3), number(4), integer(5), integer(6),
                                    integer(7), integer(8), number(9), integer(10), integer(11)])
            return context.get_dummy_value()
        return signature, codegen
    return typer


product = intrinsic(_product_codegen(False, False))
product.__doc__ = """In a numba kernel: C := alpha A @ B + beta C, row-major, by the function at
``address`` (``gemm_address``), with the arguments (address, m, n, k, alpha, a, lda, b,
ldb, beta, c, ldc). a, b, c are the matrices' addresses; alpha's type (float32 or
float64, the matrices' dtype) is the function's real type."""
product_transposed_a = intrinsic(_product_codegen(True, False))
product_transposed_a.__doc__ = """As ``product``, with C := alpha A^T @ B + beta C: a is the
address of a (k, m) matrix, lda its row length."""
product_transposed_b = intrinsic(_product_codegen(False, True))
product_transposed_b.__doc__ = """As ``product``, with C := alpha A @ B^T + beta C: b is the
address of an (n, k) matrix, ldb its row length."""


def _libraries():
    """The BLAS libraries loaded in this process, numpy's own first (torch, when imported,
    brings an MKL of its own: its threads are not the ones set_num_threads arranges)."""
    from threadpoolctl import threadpool_info
    paths = [info["filepath"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return sorted(paths, key=lambda path: "numpy" not in path)


def _find(kind):
    real = ctypes.c_float if kind == "f" else ctypes.c_double
    integer, pointer = ctypes.c_int64, ctypes.c_void_p
    for path in _libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in NAMES[kind]:
            function = getattr(library, name, None)
            if function is None:
                continue
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer,
                                 real, pointer, integer, pointer, integer, real, pointer, integer]
            function.restype = None
            if _checks_out(function, kind):
                return function
    return None


def _checks_out(function, kind) -> bool:
    """C = 2 A @ B + C for a 3 x 5 and a 5 x 4 matrix (lda, ldb, ldc past the widths), as numpy has it."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(shape).astype(kind) for shape in ((3, 7), (5, 6), (3, 9)))
    want = 2 * a[:, :5] @ b[:, :4] + c[:, :4]
    function(ROW_MAJOR, NO_TRANS, NO_TRANS, 3, 4, 5, 2.0, a.ctypes.data, 7, b.ctypes.data, 6,
             1.0, c.ctypes.data, 9)
    return bool(np.allclose(c[:, :4], want, rtol=1e-4, atol=1e-5))
