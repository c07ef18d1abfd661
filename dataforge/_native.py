"""Machine-word operations for the numba kernels, as LLVM intrinsics.

numba compiles ``b[i] | b[i+1] << 8 | ...`` to one byte load per byte (each index checked for
wrap-around, which keeps LLVM from merging them), and a 64 x 64 -> 128-bit product to four 32-bit
ones. These emit one unaligned load or store and one widening multiply instead. Loads and stores
are in the machine's byte order; they type only for contiguous uint8 arrays (a strided view fails
to compile instead of reading the wrong bytes) and, like numba's indexing, do no bounds check.
Used by ``dataforge.dedup._kernels`` (XXH3) and ``dataforge.io._jsonl`` (eight bytes at a time).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def _byte_buffer(arr: types.Type) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.ndim == 1 and arr.layout == "C"


@intrinsic
def load_word(typingctx, arr, idx, width):
    """``width`` (a literal 4 or 8) bytes of ``arr`` at ``idx`` as a uint64, in machine order."""
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (4, 8):
        return None
    if not _byte_buffer(arr):
        return None
    bits = 8 * width.literal_value

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        word = builder.load(builder.bitcast(ptr, ir.IntType(bits).as_pointer()), align=1)
        return builder.zext(word, ir.IntType(64)) if bits < 64 else word

    return types.uint64(arr, idx, width), codegen


@intrinsic
def store_word64(typingctx, arr, idx, val):
    """Write the uint64 ``val`` to ``arr[idx:idx+8]``, in machine order."""
    if not _byte_buffer(arr):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        builder.store(args[2], builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, types.uint64), codegen


@intrinsic
def mul128_fold64(typingctx, a, b):
    """Low 64 bits XOR high 64 bits of the 128-bit product ``a * b`` (uint64)."""

    def codegen(context, builder, sig, args):
        wide = ir.IntType(128)
        prod = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        lo = builder.trunc(prod, ir.IntType(64))
        hi = builder.trunc(builder.lshr(prod, ir.Constant(wide, 64)), ir.IntType(64))
        return builder.xor(lo, hi)

    return types.uint64(types.uint64, types.uint64), codegen


@intrinsic
def bswap64(typingctx, x):
    """Byte-swapped uint64 (``llvm.bswap.i64``)."""

    def codegen(context, builder, sig, args):
        return builder.bswap(args[0])

    return types.uint64(types.uint64), codegen
