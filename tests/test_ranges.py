"""Block-sparse reductions (KeOps's `ranges`): every reduction, over i and over j, with batch
dims and with gradients, against a dense numpy reference restricted to the kept pairs.

The kept pairs come from `jaxkeops.cluster`: grid clusters of sorted points and a random
cluster-cluster matrix `keep` (with clusters that keep nothing), so the mask of pairs is
`keep[labels_x][:, labels_y]`. The reference runs each row's reduction over its kept columns
with the table's own dense reference (`REDUCTIONS[name].reference`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from jaxkeops import Genred, Vi, Vj
from jaxkeops.cluster import cluster_ranges, from_matrix, grid_cluster, sort_clusters
from jaxkeops.reductions import INDEX, REDUCTIONS

M, N, D, K = 37, 45, 2, 3


def clustered(seed: int = 0, m: int = M, n: int = N):
    """Sorted points, their labels, the 6-tuple and the (m, n) mask of kept pairs."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(size=(m, D)), rng.uniform(size=(n, D))
    w = rng.normal(size=(n, 2))
    x, lx = sort_clusters(jnp.asarray(x), grid_cluster(jnp.asarray(x), 0.34))
    (y, w), ly = sort_clusters((jnp.asarray(y), jnp.asarray(w)), grid_cluster(jnp.asarray(y),
                                                                                0.34))
    keep = rng.uniform(size=(int(lx.max()) + 1, int(ly.max()) + 1)) < 0.45
    keep[0] = False  # an i-cluster that interacts with nothing
    keep[:, -1] = False  # and a j-cluster
    ranges = from_matrix(cluster_ranges(lx), cluster_ranges(ly), keep)
    mask = keep[np.asarray(lx)][:, np.asarray(ly)]
    return np.asarray(x), np.asarray(y), np.asarray(w), ranges, mask


def genred(name: str, axis: int) -> Genred:
    weighted = REDUCTIONS[name].n_formulas == 2
    return Genred("-SqDist(x, y)", ["x = Vi(2)", "y = Vj(2)", "w = Vj(2)" if axis else
                                    "w = Vi(2)"] if weighted else ["x = Vi(2)", "y = Vj(2)"],
                  reduction_op=name, axis=axis, formula2="w" if weighted else None,
                  opt_arg=K if REDUCTIONS[name].needs_k else None)


def reference(name: str, axis: int, x, y, w, mask):
    """Each output row's reduction over its kept rows of the other axis, in float64."""
    spec = REDUCTIONS[name]
    f = -np.sum((x[:, None] - y[None]) ** 2, -1)[..., None]  # (M, N, 1)
    if axis == 0:
        f, mask = f.transpose(1, 0, 2), mask.T
    rows = []
    for r in range(f.shape[0]):
        kept = np.flatnonzero(mask[r])
        vals = [f[r:r + 1, kept]]
        if spec.n_formulas == 2:
            vals.append(w[None, kept])
        outs = spec.reference(np, vals, -2, K if spec.needs_k else None)
        outs = [np.asarray(o)[0] for o in outs]
        for k, (o, out) in enumerate(zip(outs, spec.outputs((1, 2), K))):
            if out.kind == INDEX:  # positions among the kept rows -> row numbers
                outs[k] = np.where(o >= 0, kept[np.maximum(o, 0)] if kept.size else -1, -1)
        rows.append(outs)
    return [np.stack([row[k] for row in rows]) for k in range(len(rows[0]))]


def compare(got, want, name):
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    for g, w_, out in zip(got, want, REDUCTIONS[name].outputs((1, 2), K)):
        g = np.asarray(g).reshape(w_.shape)
        if out.kind == INDEX:
            np.testing.assert_array_equal(g, w_)
        else:
            assert_close(g, w_, "float64")


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_every_reduction_reduces_over_the_kept_pairs_only(name, axis):
    x, y, w, ranges, mask = clustered()
    weights = w if axis else np.random.default_rng(1).normal(size=(M, 2))
    reduce = genred(name, axis)
    args = (x, y, weights) if REDUCTIONS[name].n_formulas == 2 else (x, y)
    got = reduce(*args, ranges=ranges)
    compare(got, reference(name, axis, x, y, weights, mask), name)


def test_lazytensor_ranges_pass_through_operations_and_transpose():
    x, y, w, ranges, mask = clustered(2)
    d_ij = Vi(x).sqdist(Vj(y))
    d_ij.ranges = ranges
    k_ij = (-d_ij).exp()  # built from d_ij: keeps its ranges
    dense = np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1)) * mask
    assert_close(k_ij @ w, dense @ w, "float64")
    assert_close(k_ij.t() @ jnp.ones((M, 1)), dense.T.sum(1, keepdims=True), "float64")
    assert_close((k_ij * Vi(jnp.ones((M, 1)))).sum(axis=0), dense.sum(0)[:, None], "float64")


def test_batch_dims_share_one_ranges_tuple():
    x, y, w, ranges, mask = clustered(3)
    xb = np.stack([x, x + 0.05, x - 0.02])
    k = (-Vi(xb).sqdist(Vj(y))).exp()
    k.ranges = ranges
    got = k @ w[None]  # (1, N, 2): broadcast over the batch
    for b in range(3):
        dense = np.exp(-np.sum((xb[b][:, None] - y[None]) ** 2, -1)) * mask
        assert_close(got[b], dense @ w, "float64")
    vmapped = jax.vmap(lambda x: genred("LogSumExp", 1)(x, y, w, ranges=ranges))(xb)
    for b in range(3):
        compare(vmapped[b], reference("LogSumExp", 1, xb[b], y, w, mask), "LogSumExp")


@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "Min"])
def test_gradients_use_the_ranges_and_their_transpose(name):
    """d/dx and d/dy: the cotangent for y is a reduction over i, which reads the second half of
    the 6-tuple."""
    x, y, w, ranges, mask = clustered(4)

    def loss(x, y):
        k = -Vi(x).sqdist(Vj(y))
        k.ranges = ranges
        if name == "Sum":
            out = k.exp() @ w
        elif name == "LogSumExp":
            out = k.logsumexp(axis=1)
        else:
            out = k.min(axis=1)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) ** 2)

    def dense_loss(x, y):
        f = -jnp.sum((x[:, None] - y[None]) ** 2, -1)
        if name == "Sum":
            out = (jnp.exp(f) * mask) @ w
        elif name == "LogSumExp":
            out = jax.nn.logsumexp(jnp.where(mask, f, -jnp.inf), axis=1, keepdims=True)
        else:
            out = jnp.min(jnp.where(mask, f, jnp.inf), axis=1, keepdims=True)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) ** 2)

    got = jax.grad(loss, argnums=(0, 1))(x, y)
    want = jax.grad(dense_loss, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(y))
    for g, w_ in zip(got, want):
        assert_close(g, w_, "float64")


def test_ranges_under_jit_are_traced_arrays():
    x, y, w, ranges, mask = clustered(5)
    gauss = genred("Sum", 1)
    f = jax.jit(lambda x, y, r: Genred("Exp(-SqDist(x, y)) * w",
                                       ["x = Vi(2)", "y = Vj(2)", "w = Vj(2)"], axis=1)(
        x, y, w, ranges=r))
    dense = np.exp(-np.sum((x[:, None] - y[None]) ** 2, -1)) * mask
    assert_close(f(x, y, ranges), dense @ w, "float64")
    del gauss


@pytest.mark.parametrize("corrupt, message", [
    (lambda r: (r[0][::-1], *r[1:]), r"ranges row \d+ is .* sorted"),  # unsorted row ranges
    (lambda r: (*r[:2], r[2].at[0, 1].set(10_000), *r[3:]), "redranges row 0 is"),
    (lambda r: (r[0], r[1].at[0].set(10_000), *r[2:]), "slices"),
])
def test_bad_range_values_are_reported_by_the_kernel_call(corrupt, message):
    x, y, w, ranges, _ = clustered(6)
    with pytest.raises(Exception, match=message):
        np.asarray(genred("Sum", 1)(x, y, ranges=corrupt(tuple(jnp.asarray(r) for r in ranges))))


@pytest.mark.parametrize("bad, error, message", [
    (lambda r: r[:5], ValueError, "6-tuple"),
    (lambda r: (r[0][:, :1], *r[1:]), ValueError, "ranges_i must have shape"),
    (lambda r: (r[0], r[1][:-1], *r[2:]), ValueError, "slices_i must have shape"),
    (lambda r: (*r[:5], np.asarray(r[5], np.float32)), TypeError, "redranges_i must hold"),
])
def test_bad_range_shapes_name_the_array(bad, error, message):
    x, y, w, ranges, _ = clustered(7)
    with pytest.raises(error, match=message):
        genred("Sum", 1)(x, y, ranges=bad(ranges))


def test_vmap_over_ranges_is_refused_with_a_reason():
    x, y, w, ranges, _ = clustered(8)
    stacked = tuple(jnp.stack([r, r]) for r in ranges)
    with pytest.raises(NotImplementedError, match="shares one ranges tuple"):
        jax.vmap(lambda r: genred("Sum", 1)(x, y, ranges=r))(stacked)
