"""Waiting for a flag in memory without the GIL: how the engine's threads wait for work.

A thread that sleeps on a lock or a condition (as ``concurrent.futures`` does) takes
25-180 us to wake up on this 2-core virtual machine; a training step of the detector
(W7) hands work to its threads about 50 times. A thread that keeps reading a flag in
memory sees it change within a microsecond. So the engine's threads *spin* for a while
(about 1 ms here, SPIN_ROUNDS) after their last piece of work, and only then sleep,
as OpenMP's threads do. The spinning runs in a numba function without the GIL, so the
thread that hands out the work runs on meanwhile.

The flags are int64 entries of a numpy array. A plain read in a loop may be hoisted
out of it by the compiler, so ``_load_acquire`` reads with an atomic load, and
``_pause`` tells the core that this is a spin loop (x86's ``pause``; nothing elsewhere).
"""
from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# One round is a load and a pause: 26 ns on an AMD EPYC, so about 1 ms (13-16 ns on an
# Intel Xeon: about half a millisecond).
# TINYGRAD_UU_SPIN=0 turns spinning off (the threads sleep at once), for a machine shared
# with other busy jobs, where a spinning thread takes a core someone else needs.
SPIN_ROUNDS = 40_000 if os.environ.get("TINYGRAD_UU_SPIN", "1").strip() != "0" else 0
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _load_acquire(typingctx, array, index):
    """array[index] read with an atomic load (acquire ordering)."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]])
        return builder.load_atomic(pointer, "acquire", align=array_type.dtype.bitwidth // 8)
    return array.dtype(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """array[index] = value with an atomic store (release ordering): every write made
    before it is seen by a thread that reads the new value with _load_acquire."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]])
        value = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        builder.store_atomic(value, pointer, "release", align=array_type.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.void(array, index, value), codegen


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """array[index] += value as one atomic step (acquire and release ordering); returns the
    value before: each thread that adds 1 gets a number of its own."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        data = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]])
        value = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        return builder.atomic_rmw("add", pointer, value, "acq_rel")
    return array.dtype(array, index, value), codegen


@intrinsic
def _pause(typingctx):
    """x86's ``pause`` instruction (a hint that this is a spin loop); nothing elsewhere."""
    def codegen(context, builder, signature, args):
        if _X86:
            pause = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                   "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(nogil=True, cache=True)
def publish(flags, index, value):
    """flags[index] = value, after every write this thread made (a kernel's output) is
    visible to the thread that sees the new value (x86 keeps stores in order anyway;
    ARM does not)."""
    _store_release(flags, index, value)


@njit(nogil=True, cache=True)
def wait_while_equal(flags, index, value, rounds):
    """Spin until flags[index] != value, or for ``rounds`` rounds; return flags[index]."""
    for _ in range(rounds):
        now = _load_acquire(flags, index)
        if now != value:
            return now
        _pause()
    return _load_acquire(flags, index)


@njit(nogil=True, cache=True)
def publish_then_wait(counts, index, count, flags, wait_index, value, rounds, entry_index, entry_rounds, then_rounds):
    """publish(counts, index, count), then wait_while_equal(flags, wait_index, value,
    rounds), in one call: the thread does not take the GIL in between, so the thread that
    waits for the published count gets the GIL at once (a thread that finds it taken
    sleeps, and waking it takes microseconds). When a new value comes, spin on until
    flags[entry_index] holds it too, or a later one (at most ``entry_rounds`` rounds), then
    ``then_rounds`` rounds of ``pause`` more, before returning (see parallel.HANDOFF_ROUNDS)."""
    publish(counts, index, count)
    now = wait_while_equal(flags, wait_index, value, rounds)
    if now != value:
        for _ in range(entry_rounds):
            if _load_acquire(flags, entry_index) >= now:  # job numbers only grow
                break
            _pause()
        for _ in range(then_rounds):
            _pause()
    return now


@njit(nogil=True, cache=True)
def wait_until_total(flags, indices, total, rounds):
    """Spin until the flags[i] for i in ``indices`` add up to ``total``, or for ``rounds``
    rounds; return whether they do."""
    for round_ in range(rounds + 1):
        now = 0
        for i in indices:
            now += _load_acquire(flags, i)
        if now == total or round_ == rounds:
            return now == total
        _pause()
    return False  # not reached: the last round returns; numba wants a return here


@njit(nogil=True, cache=True)
def publish_then_wait_total(flags, index, value, indices, total, rounds):
    """publish(flags, index, value), then wait_until_total(flags, indices, total, rounds),
    in one call (see publish_then_wait)."""
    publish(flags, index, value)
    return wait_until_total(flags, indices, total, rounds)

