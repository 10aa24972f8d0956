"""SPMD partitioning of a reduction: the pairs (i, j) cut into blocks that XLA can spread.

Under `jax.jit` with several devices, a reduction is lowered as one kernel call over a grid of
S_i x S_j blocks: the output rows (i) cut into S_i chunks and the reduced rows (j) into S_j
chunks, both exposed to XLA as two more leading batch dims of the kernel. The call is
registered as batch partitionable (with a Shardy sharding rule whose batch factors pass
through), so XLA's SPMD partitioner gives each device the blocks of its shards of the data:

- x sharded over its rows (i): each device computes its rows against all of y; no
  communication;
- y sharded over its rows (j): each device reduces its own columns; the S_j partial results
  are then merged by ordinary jnp reductions over the block axis, which XLA turns into
  all-reduces: a sum for Sum; a max-shifted signed log-sum-exp for LogSumExp(Signed) and
  SumSoftMaxWeight; a (value, global index) minimum for Min, ArgMin, Max, ArgMax and their
  pairs; the K best of the S_j x K candidates for KMin and ArgKMin;
- batch dims sharded: local; i and j on different mesh axes at once: 2-D blocks.

S_i and S_j are the largest divisors of the device count that divide M and N (a K-reduction
also keeps K reduced rows per block). On one device nothing of this happens. The merges keep
the reductions' inf/NaN semantics (those of jax.numpy, see reductions/table.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from .codegen.spec import ROLE_INNER, ROLE_OUTER, KernelSpec
from .formulas import CAT_P, Var, variables
from .reductions import INDEX, reduction

# bind_blocks(spec, operands, n_out, n_red, n_batch) -> outputs: one kernel call whose
# operands and outputs all have the same n_batch leading batch dims.
BindBlocks = Callable[[KernelSpec, Sequence[jax.Array], int, int], list]



def block_counts(spec: KernelSpec, n_out: int, n_red: int, n_devices: int) -> tuple[int, int]:
    """(S_i, S_j): how many chunks the output rows and the reduced rows are cut into."""
    s_i = math.gcd(n_out, n_devices) if n_out else 1
    s_j = math.gcd(n_red, n_devices) if n_red else 1
    if reduction(spec.reduction).needs_k:
        while s_j > 1 and n_red // s_j < spec.k:
            s_j = max(d for d in range(1, s_j) if s_j % d == 0)
    return s_i, s_j


# ----------------------------------------------------------------------------------------------
# Operands and outputs in blocks.
def _to_blocks(a: jax.Array, role: int, batch: tuple[int, ...], s_i: int, s_j: int):
    """(*b, rows, d) -> (*batch, S_i, S_j, rows / chunks, d), broadcast: the batch
    partitioner wants every operand with the full batch shape."""
    *b, rows, d = a.shape
    if role == ROLE_OUTER:
        a = a.reshape(*b, s_i, 1, rows // s_i, d)
    elif role == ROLE_INNER:
        a = a.reshape(*b, 1, s_j, rows // s_j, d)
    else:
        a = a.reshape(*b, 1, 1, rows, d)
    return jnp.broadcast_to(a, (*batch, s_i, s_j, *a.shape[-2:]))


def _from_blocks(out: jax.Array) -> jax.Array:
    """(*batch, S_i, chunk, w) -> (*batch, S_i * chunk, w)."""
    *batch, s_i, chunk, w = out.shape
    return out.reshape(*batch, s_i * chunk, w)


def _explicit_mesh(arrays):
    """The mesh of arrays whose types carry their sharding (explicit axes), else None."""
    for a in arrays:
        mesh = jax.typeof(a).sharding.mesh
        if not mesh.empty and AxisType.Explicit in tuple(mesh.axis_types):
            return mesh
    return None


def _common_explicit_split(blocks: list) -> list:
    """With explicit sharding, array types carry their splits, and an operation may not mix
    arrays split over the same mesh axis on different dims (x over i and y over j on one
    axis). Every block operand is resharded to one common split of the batch and block dims:
    each dim takes the axes of the first operand that splits it, each mesh axis once (i before
    j: an axis that splits both gathers the reduced operands over it, as it must)."""
    mesh = _explicit_mesh(blocks)
    if mesh is None:
        return blocks
    n_dims = blocks[0].ndim - 2
    used: set[str] = set()
    target: list = []
    for d in range(n_dims):
        axes: tuple[str, ...] = ()
        for b in blocks:
            entry = jax.typeof(b).sharding.spec[d] if d < len(jax.typeof(b).sharding.spec) else None
            found = () if entry is None else (entry if isinstance(entry, tuple) else (entry,))
            found = tuple(a for a in found if a not in used)
            if found and b.shape[d] % math.prod(mesh.shape[a] for a in found) == 0:
                axes = found
                break
        used.update(axes)
        target.append(axes or None)
    with jax.sharding.use_abstract_mesh(mesh):
        return [jax.sharding.reshard(b, P(*target, None, None)) for b in blocks]


# One device's CPU kernel spreads its output rows (batch included) over the pool's threads,
# each packing the reduced rows it sweeps. With fewer rows than this per thread, the reduced axis
# is cut into chunks too, so that every thread packs and sweeps only its share of it.
ROWS_PER_THREAD = 16
# Below this many pairs, one thread is as fast (see cuda_src/jaxkeops_ext.cc: kInlineWork).
MIN_SPLIT_PAIRS = 1 << 20


def thread_split(spec: KernelSpec, rows: int, n_red: int, threads: int) -> int:
    """How many chunks of the reduced axis a one-device CPU call is cut into (1: none), for
    `rows` output rows in all (batch included) and a pool of `threads` threads, when the rows
    alone cannot keep the threads busy: the largest count from 4 x threads down to threads that
    divides n_red (e.g. 8 for 10 rows and n_red = 1e7 on 2 threads; 1 for 10,000 rows). The
    pool deals the chunks out one by one, so a thread slowed down by other work on its core
    takes fewer of them (two chunks on 2 cores made every call wait for the slower half)."""
    if threads < 2 or rows >= ROWS_PER_THREAD * threads or rows * n_red < MIN_SPLIT_PAIRS:
        return 1
    smallest = spec.k if reduction(spec.reduction).needs_k else 1
    for count in range(4 * threads, threads - 1, -1):
        if n_red % count == 0 and n_red // count >= max(smallest, 1024):
            return count
    return 1


def blocked_reduction(spec: KernelSpec, operands: Sequence[jax.Array], n_out: int, n_red: int,
                      counts: tuple[int, int], bind_blocks: BindBlocks) -> list:
    """The reduction as one call over S_i x S_j blocks (counts = (S_i, S_j), see
    `block_counts` and `thread_split`), and the merge of its S_j partials."""
    shapes = [tuple(a.shape[:-2]) for a in operands]
    batch = tuple(np.broadcast_shapes(*shapes)) if shapes else ()
    s_i, s_j = counts
    blocks = [_to_blocks(a, role, batch, s_i, s_j) for a, role in zip(operands, spec.roles)]
    blocks = _common_explicit_split(blocks)
    by_var = dict(zip(spec.args, blocks))
    n_local = n_red // s_j
    # XLA's batch partitioner splits the call the way its first operand is split, unless every
    # other operand's split is either equal or adds a new split (hlo_sharding_util::
    # FindCommonSharding). With x split over i on one mesh axis and y over j on another, the
    # operands' splits are (i, -) and (-, j); a first operand computed from all of them is
    # split (i, j), so the call is. The kernel never reads it (a parameter of no formula).
    anchor = sum((b[..., :1, :1] * 0 for b in blocks), jnp.zeros((), spec.value_dtype))
    anchor = jnp.broadcast_to(anchor, (*batch, s_i, s_j, 1, 1))
    anchor_var = Var(1 + max((v.index for v in spec.args), default=-1), 1, CAT_P)

    def partial(s: KernelSpec) -> list:
        """One call over the blocks: outputs (*batch, S_i, S_j, n_out / S_i, w)."""
        anchored = dataclasses.replace(s, args=(anchor_var, *s.args))
        return bind_blocks(anchored, [anchor, *(by_var[v] for v in s.args)], n_out // s_i,
                           n_local)

    axis = len(batch) + 1  # the S_j axis
    if s_j == 1:
        outs = [o.squeeze(axis) for o in partial(spec)]
    else:
        outs = merge_blocks(spec, partial, axis, n_local)
    return [_from_blocks(o) for o in outs]


# ----------------------------------------------------------------------------------------------
# Merging partial results over the axis of the reduced-row chunks.
def _int_type(dtype) -> np.dtype:
    return {2: np.dtype(np.int16), 4: np.dtype(np.int32)}.get(np.dtype(dtype).itemsize,
                                                              np.dtype(np.int64))


def _total_order_key(v: jax.Array) -> jax.Array:
    """Integers ordered as v's IEEE total order (-NaN < -inf < ... < +inf < +NaN)."""
    bits = jax.lax.bitcast_convert_type(v, _int_type(v.dtype))
    return jnp.where(bits < 0, bits ^ jnp.iinfo(bits.dtype).max, bits)


def _extremum_key(v: jax.Array, is_max: bool) -> jax.Array:
    """jnp.argmin's order (jnp.argmax's for is_max): any NaN first, -0 ties +0."""
    w = -v if is_max else v
    key = _total_order_key(jnp.where(w == 0, jnp.zeros_like(w), w))
    return jnp.where(jnp.isnan(v), jnp.iinfo(key.dtype).min, key)


def _global_index(index: jax.Array, axis: int, n_local: int) -> jax.Array:
    """Block-local indices of reduced rows -> indices into all N rows (-1 stays -1)."""
    shape = [1] * index.ndim
    shape[axis] = index.shape[axis]
    shift = (jnp.arange(index.shape[axis], dtype=index.dtype) * n_local).reshape(shape)
    return jnp.where(index >= 0, index + shift, index)


def _pick(key, index, value, axis):
    """The (key, index)-smallest candidate along `axis`: its index, its value (bit for bit),
    and where it won. Only reductions along the axis, which XLA turns into all-reduces when
    the axis is split over devices."""
    best_key = jnp.min(key, axis=axis, keepdims=True)
    sentinel = jnp.iinfo(index.dtype).max
    best_index = jnp.min(jnp.where(key == best_key, index, sentinel), axis=axis, keepdims=True)
    won = (key == best_key) & (index == best_index)
    bits = jax.lax.bitcast_convert_type(value, _int_type(value.dtype))
    # Global indices are distinct: exactly one candidate contributes its bits.
    bits = jnp.sum(jnp.where(won, bits, jnp.zeros_like(bits)), axis=axis, dtype=bits.dtype)
    return best_index.squeeze(axis), jax.lax.bitcast_convert_type(bits, value.dtype), won


def _merge_extremum(spec, partial, axis, n_local, is_max: bool):
    pair = "Max_ArgMax" if is_max else "Min_ArgMin"
    value, index = partial(dataclasses.replace(spec, reduction=pair))
    index = _global_index(index, axis, n_local)
    index, value, _ = _pick(_extremum_key(value, is_max), index, value, axis)
    return [index if o.kind == INDEX else value for o in spec.outputs]


def _merge_kmin(spec, partial, axis, n_local, largest: bool = False):
    """K rounds: each takes the best head of the blocks' sorted candidate lists and advances
    the list it came from (the K largest with `largest`: the reversed order)."""
    k = spec.k
    pair = "KMax_ArgKMax" if largest else "KMin_ArgKMin"
    value, index = partial(dataclasses.replace(spec, reduction=pair))
    index = _global_index(index, axis, n_local)
    *lead, rows, width = value.shape
    value = value.reshape(*lead, rows, k, width // k)
    index = index.reshape(*lead, rows, k, width // k)
    key = _total_order_key(value)
    key = ~key if largest else key
    head = jnp.zeros((*lead, rows, 1, width // k), jnp.int32)
    values, indices = [], []
    for _ in range(k):  # a block wins at most k - 1 rounds before the last: head < k

        def take(a, head=head):
            return jnp.take_along_axis(a, head, axis=-2)[..., 0, :]

        best_index, best_value, won = _pick(take(key), take(index), take(value), axis)
        values.append(best_value)
        indices.append(best_index)
        head = head + won[..., None, :].astype(head.dtype)
    value = jnp.stack(values, -2).reshape(*values[0].shape[:-1], width)
    index = jnp.stack(indices, -2).reshape(*indices[0].shape[:-1], width)
    return [index if o.kind == INDEX else value for o in spec.outputs]


def _merge_signed_lse(lse, sign, axis):
    """log |sum_s sign_s exp(lse_s)| and its sign, with jax.nn.logsumexp's inf/NaN rules."""
    inf = jnp.asarray(jnp.inf, lse.dtype)
    has_nan = jnp.any(jnp.isnan(lse) | jnp.isnan(sign), axis=axis)
    pos_inf = jnp.any((lse == inf) & (sign > 0), axis=axis)
    neg_inf = jnp.any((lse == inf) & (sign < 0), axis=axis)
    finite = jnp.isfinite(lse)
    shift = jnp.max(jnp.where(finite, lse, -inf), axis=axis, keepdims=True)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    total = jnp.sum(jnp.where(finite, sign * jnp.exp(lse - shift), 0), axis=axis)
    out = jnp.log(jnp.abs(total)) + shift.squeeze(axis)
    out_sign = jnp.sign(total)
    out = jnp.where(pos_inf | neg_inf, inf, out)
    out_sign = jnp.where(pos_inf, 1, jnp.where(neg_inf, -1, out_sign)).astype(sign.dtype)
    nan = has_nan | (pos_inf & neg_inf)
    return jnp.where(nan, jnp.nan, out), jnp.where(nan, jnp.nan, out_sign)


def _merge_lse(spec, partial, axis, n_local):
    # Partial sums of a weighted log-sum-exp may be negative where the total is not: merge
    # signed partials even when the result is unsigned.
    lse, sign = partial(dataclasses.replace(spec, reduction="LogSumExpSigned"))
    lse, sign = _merge_signed_lse(lse, sign, axis)
    if spec.reduction == "LogSumExpSigned":
        return [lse, sign]
    return [jnp.where(sign < 0, jnp.nan, lse)]


def _merge_softmax(spec, partial, axis, n_local):
    (average,) = partial(spec)
    formula = spec.formulas[0]
    (lse,) = partial(dataclasses.replace(spec, formulas=(formula,), reduction="LogSumExp",
                                         args=tuple(variables(formula))))
    shift = jnp.max(lse, axis=axis, keepdims=True)
    weight = jnp.exp(lse - shift)  # NaN where every partial is -inf or one is +inf: as jnp
    part = jnp.where(weight == 0, 0, weight * average)
    return [jnp.sum(part, axis=axis) / jnp.sum(weight, axis=axis)]


def merge_blocks(spec: KernelSpec, partial: Callable[[KernelSpec], list], axis: int,
                 n_local: int) -> list:
    """The full reduction from partial ones along `axis` (blocks of n_local reduced rows).
    `partial(spec')` runs a reduction on the blocks (spec' reads a subset of the operands)."""
    merge = reduction(spec.reduction).merge
    if merge == "sum":
        return [jnp.sum(o, axis=axis) for o in partial(spec)]
    return _MERGES[merge](spec, partial, axis, n_local)


# Each merge kind of the reduction table (ReductionSpec.merge) but "sum".
_MERGES = {
    "min": functools.partial(_merge_extremum, is_max=False),
    "max": functools.partial(_merge_extremum, is_max=True),
    "kmin": _merge_kmin,
    "kmax": functools.partial(_merge_kmin, largest=True),
    "lse": _merge_lse,
    "softmax": _merge_softmax,
}


# ----------------------------------------------------------------------------------------------
# The Shardy rule of the blocked call: every batch dim is a factor that passes through; rows
# and feature dims must not be split (each gets its own factor, replicated).
@dataclasses.dataclass(frozen=True)
class ShardingFactors:
    sizes: tuple[int, ...]
    operands: tuple[tuple[int, ...], ...]  # factor index per dim
    results: tuple[tuple[int, ...], ...]
    replicated: tuple[int, ...]  # sorted


def sharding_factors(roles: Sequence[int], operand_shapes: Sequence[tuple[int, ...]],
                     result_shapes: Sequence[tuple[int, ...]]) -> ShardingFactors:
    nb = len(result_shapes[0]) - 2
    sizes = list(result_shapes[0][:nb]) + [result_shapes[0][-2]]
    rows_i = nb
    replicated = [rows_i]

    def new(size: int) -> int:
        sizes.append(size)
        replicated.append(len(sizes) - 1)
        return len(sizes) - 1

    operands = []
    for role, shape in zip(roles, operand_shapes):
        if role == ROLE_OUTER:
            rows = rows_i
        else:
            rows = new(shape[-2])
        operands.append((*range(nb), rows, new(shape[-1])))
    results = tuple((*range(nb), rows_i, new(shape[-1])) for shape in result_shapes)
    return ShardingFactors(tuple(int(s) for s in sizes), tuple(operands), results,
                           tuple(sorted(replicated)))
