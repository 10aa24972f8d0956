"""JAX transformations of jaxkeops reductions against the same transformations of plain jnp code:
grad, value_and_grad, jvp, vjp, jacfwd, jacrev, hessian and third order, each eagerly and under
jit; vmap of them, nested vmap, vmap over any argument (parameters included), explicit leading
batch dims, and gradients of arguments broadcast over batch dims. Both reduction axes.

All of it uses one formula, F(x, y, p) = <x_i, y_j> - p |x_i - y_j|^2 reduced as
sum_j exp(F_ij) w_j: the formula of the Sum tests of `test_autodiff.py`, built there with `make`
and here with LazyTensor (same formula, so the same kernels). Batch dims and vmap never create a
new kernel; each derivative order does. Second-order tests differentiate 0.5 |out|^2, whose
cotangent depends on the inputs, as `check_grads` does (more shared kernels).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_tree_close, random_like

from jaxkeops import Pm, Vi, Vj, _lowering
from jaxkeops.runtime import loaded_kernels

M, N, B, C, D, E = 7, 9, 2, 3, 3, 2
DTYPE = "float64"
ALL = (0, 1, 2, 3)


def gauss(x, y, p, w, axis=1):
    """sum_j exp(<x_i, y_j> - p |x_i - y_j|^2) w_j (axis=1), or the same sum over i with w_i
    (axis=0). x: (..., M, D), y: (..., N, D), p: (..., 1), w: (..., N or M, E)."""
    xi, yj = Vi(x), Vj(y)
    f = (xi | yj) - Pm(p) * xi.sqdist(yj)
    weight = Vj(w) if axis == 1 else Vi(w)
    return (f.exp() * weight).sum(axis=-2 if axis == 1 else -3)  # symbolic axes: (..., i, j, d)


def gauss_dense(x, y, p, w, axis=1):
    """The same in plain jnp, through the (..., M, N) matrix."""
    xx, yy = x[..., :, None, :], y[..., None, :, :]
    f = jnp.sum(xx * yy, -1) - p[..., None, :] * jnp.sum((xx - yy) ** 2, -1)
    k = jnp.exp(f)
    if axis == 1:
        return jnp.einsum("...ij,...je->...ie", k, w)
    return jnp.einsum("...ij,...ie->...je", k, w)


def half_sq(fn, axis=1):
    """0.5 |fn(...)|^2, a scalar loss whose cotangent depends on the inputs."""
    return lambda *a: 0.5 * jnp.sum(fn(*a, axis=axis) ** 2)


def data(rng, axis=1, batch=(), y_batch=None, p_batch=None, w_batch=None):
    """x: (*batch, M, D), y: (*y_batch, N, D), p: (*p_batch, 1), w: (*w_batch, rows, E)."""
    y_batch = batch if y_batch is None else y_batch
    p_batch = batch if p_batch is None else p_batch
    w_batch = batch if w_batch is None else w_batch
    x = rng.uniform(-1.0, 1.0, size=batch + (M, D))
    y = rng.uniform(-1.0, 1.0, size=y_batch + (N, D))
    p = rng.uniform(0.5, 1.5, size=p_batch + (1,))
    w = rng.uniform(0.5, 1.5, size=w_batch + ((N if axis == 1 else M), E))
    return tuple(jnp.asarray(a) for a in (x, y, p, w))


def close(actual, expected, **kw):
    assert_tree_close(actual, expected, DTYPE, **kw)


def maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
AXES = pytest.mark.parametrize("axis", [1, 0])


# ---------------------------------------------------------------------------------------------
# First and second order, every input at once.

@JIT
@AXES
def test_value_grad_jvp_vjp(axis, jit, rng):
    """grad and value_and_grad of a scalar loss, jvp and vjp, w.r.t. all four arguments."""
    args = data(rng, axis)
    ours, ref = (lambda *a: gauss(*a, axis=axis)), (lambda *a: gauss_dense(*a, axis=axis))
    close(maybe_jit(ours, jit)(*args), ref(*args))
    for transform in (jax.grad, jax.value_and_grad):
        close(maybe_jit(transform(half_sq(gauss, axis), argnums=ALL), jit)(*args),
              jax.jit(transform(half_sq(gauss_dense, axis), argnums=ALL))(*args))
    tangents = random_like(rng, args)
    close(maybe_jit(lambda *a: jax.jvp(ours, a, tangents), jit)(*args),
          jax.jit(lambda *a: jax.jvp(ref, a, tangents))(*args))
    ct = random_like(rng, ref(*args))
    close(maybe_jit(lambda *a: jax.vjp(ours, *a)[1](ct), jit)(*args),
          jax.jit(lambda *a: jax.vjp(ref, *a)[1](ct))(*args))


@pytest.mark.slow
@JIT
@AXES
def test_jacobians_and_hessian(axis, jit, rng):
    """Full Jacobians in both modes and the Hessian of a scalar loss, w.r.t. all arguments."""
    args = data(rng, axis)
    ours, ref = (lambda *a: gauss(*a, axis=axis)), (lambda *a: gauss_dense(*a, axis=axis))
    for transform in (jax.jacfwd, jax.jacrev):
        close(maybe_jit(transform(ours, argnums=ALL), jit)(*args),
              jax.jit(transform(ref, argnums=ALL))(*args))
    close(maybe_jit(jax.hessian(half_sq(gauss, axis), argnums=ALL), jit)(*args),
          jax.jit(jax.hessian(half_sq(gauss_dense, axis), argnums=ALL))(*args))


@JIT
def test_hessian_vector_products_both_ways(jit, rng):
    """Forward-over-reverse and reverse-over-forward give the same Hessian-vector product."""
    args = data(rng)
    v = random_like(rng, args)
    loss, loss_ref = half_sq(gauss), half_sq(gauss_dense)

    def fwd_over_rev(fn):
        return lambda *a: jax.jvp(jax.grad(fn, argnums=ALL), a, v)[1]

    def rev_over_fwd(fn):
        return lambda *a: jax.grad(lambda *b: jax.jvp(fn, b, v)[1], argnums=ALL)(*a)

    expected = jax.jit(fwd_over_rev(loss_ref))(*args)
    close(maybe_jit(fwd_over_rev(loss), jit)(*args), expected)
    close(maybe_jit(rev_over_fwd(loss), jit)(*args), expected)


@JIT
def test_third_order_grad_of_grad_of_grad(jit, rng):
    """d^3/dp^3 of a scalar function of the parameter, and a third directional derivative in
    x, as grad(grad(grad(.)))."""
    x, y, p, w = data(rng)
    v = jnp.asarray(rng.normal(size=x.shape))

    def of_p(fn):
        return lambda s: jnp.sum(fn(x, y, s.reshape(1), w))

    def along_x(fn):
        return lambda t: jnp.sum(fn(x + t * v, y, p, w))

    for build in (of_p, along_x):
        third = jax.grad(jax.grad(jax.grad(build(gauss))))
        expected = jax.jit(jax.grad(jax.grad(jax.grad(build(gauss_dense)))))(jnp.float64(0.7))
        close(maybe_jit(third, jit)(jnp.float64(0.7)), expected, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# vmap.

@AXES
@pytest.mark.parametrize("mapped", [(0,), (1,), (2,), (3,), (0, 2), ALL],
                         ids=["x", "y", "p", "w", "x-and-p", "all"])
def test_vmap_over_any_argument(mapped, axis, rng):
    """vmap(f), vmap(grad) and vmap(jvp) with in_axes on any subset of the arguments (the
    parameter included), the others unbatched; also under jit."""
    args = list(data(rng, axis))
    batched = data(rng, axis, batch=(B,))
    for i in mapped:
        args[i] = batched[i]
    in_axes = tuple(0 if i in mapped else None for i in ALL)
    ours, ref = (lambda *a: gauss(*a, axis=axis)), (lambda *a: gauss_dense(*a, axis=axis))
    close(jax.vmap(ours, in_axes)(*args), jax.vmap(ref, in_axes)(*args))
    g = jax.vmap(jax.grad(half_sq(gauss, axis), argnums=ALL), in_axes)
    g_ref = jax.jit(jax.vmap(jax.grad(half_sq(gauss_dense, axis), argnums=ALL), in_axes))
    close(g(*args), g_ref(*args))
    close(jax.jit(g)(*args), g_ref(*args))
    tangents = random_like(rng, tuple(args))  # batched like the primals

    def jvp_of(fn):
        return lambda *a: jax.jvp(fn, a[:4], a[4:])[1]

    close(jax.vmap(jvp_of(ours), in_axes * 2)(*args, *tangents),
          jax.jit(jax.vmap(jvp_of(ref), in_axes * 2))(*args, *tangents))


@JIT
def test_vmap_over_a_scalar_parameter(jit, rng):
    """Pm of a 0-d array inside vmap: each example's parameter is a scalar."""
    x, y, _, w = data(rng)
    s = jnp.asarray([0.5, 1.0, 1.3])
    in_axes = (None, None, 0, None)

    def ref(x, y, p, w):
        return gauss_dense(x, y, p.reshape(1), w)

    close(maybe_jit(jax.vmap(gauss, in_axes), jit)(x, y, s, w), jax.vmap(ref, in_axes)(x, y, s, w))
    g = jax.vmap(jax.grad(half_sq(gauss), argnums=ALL), in_axes)
    g_ref = jax.jit(jax.vmap(jax.grad(lambda *a: 0.5 * jnp.sum(ref(*a) ** 2), argnums=ALL),
                             in_axes))
    grads = maybe_jit(g, jit)(x, y, s, w)
    assert grads[2].shape == s.shape
    close(grads, g_ref(x, y, s, w))


def test_vmap_in_axes_not_leading(rng):
    """Mapped axes in the middle or at the end of an argument are moved, not misread."""
    x, y, p, w = data(rng, batch=(B,))
    args = (jnp.moveaxis(x, 0, 1), jnp.moveaxis(y, 0, 2), p.T, w)
    in_axes = (1, 2, 1, 0)
    close(jax.vmap(gauss, in_axes)(*args), jax.vmap(gauss_dense, in_axes)(*args))
    g = jax.vmap(jax.grad(half_sq(gauss), argnums=ALL), in_axes)
    g_ref = jax.jit(jax.vmap(jax.grad(half_sq(gauss_dense), argnums=ALL), in_axes))
    close(g(*args), g_ref(*args))


@AXES
def test_nested_vmap(axis, rng):
    """Two levels of vmap: x mapped by the outer one, y and p by the inner one."""
    x, _, _, w = data(rng, axis, batch=(C,))
    _, y, p, _ = data(rng, axis, batch=(B,))
    args = (x, y, p, w[0])

    def nest(fn):
        inner = jax.vmap(fn, in_axes=(None, 0, 0, None))
        return jax.vmap(inner, in_axes=(0, None, None, None))

    ours = lambda *a: gauss(*a, axis=axis)  # noqa: E731
    ref = lambda *a: gauss_dense(*a, axis=axis)  # noqa: E731
    out = nest(ours)(*args)
    assert out.shape == (C, B, M if axis == 1 else N, E)
    close(out, nest(ref)(*args))
    grad, grad_ref = (jax.grad(half_sq(fn, axis), argnums=ALL) for fn in (gauss, gauss_dense))
    expected = jax.jit(nest(grad_ref))(*args)
    close(jax.jit(nest(grad))(*args), expected)
    close(nest(grad)(*args), expected)


@AXES
def test_vmap_over_explicit_batch_dims(axis, rng):
    """Vi of shape (B, M, D) against Vj of shape (N, D), and vmap on top of that batch."""
    x, _, p, _ = data(rng, axis, batch=(B,))
    _, y, _, w = data(rng, axis)
    out = gauss(x, y, p, w, axis=axis)
    assert out.shape == (B, M if axis == 1 else N, E)
    close(out, gauss_dense(x, y, p, w, axis=axis))
    xs = jnp.stack([x, 2.0 * x, -x])  # (C, B, M, D)
    ys = jnp.stack([y, -y, 0.5 * y])  # (C, N, D)
    for in_axes, args in [((0, None, None, None), (xs, y, p, w)),
                          ((None, 0, None, None), (x, ys, p, w)),
                          ((0, 0, None, None), (xs, ys, p, w))]:
        grad = jax.vmap(jax.grad(half_sq(gauss, axis), argnums=ALL), in_axes)
        grad_ref = jax.jit(jax.vmap(jax.grad(half_sq(gauss_dense, axis), argnums=ALL), in_axes))
        close(jax.vmap(lambda *a: gauss(*a, axis=axis), in_axes)(*args),
              jax.vmap(lambda *a: gauss_dense(*a, axis=axis), in_axes)(*args))
        close(grad(*args), grad_ref(*args))


@AXES
@JIT
def test_grads_sum_over_broadcast_batch_dims(jit, axis, rng):
    """x: (B, M, D) against y: (1, N, D), p: (1,), w: (N, E): the gradients of y, p and w sum
    over the batch dim they were broadcast along, and keep their own shapes."""
    x, y, p, w = data(rng, axis, batch=(B,), y_batch=(1,), p_batch=(), w_batch=())
    assert y.shape == (1, N, D) and p.shape == (1,) and w.ndim == 2
    close(gauss(x, y, p, w, axis=axis), gauss_dense(x, y, p, w, axis=axis))
    grads = maybe_jit(jax.grad(half_sq(gauss, axis), argnums=ALL), jit)(x, y, p, w)
    for g, a in zip(grads, (x, y, p, w)):
        assert g.shape == a.shape
    expected = jax.jit(jax.grad(half_sq(gauss_dense, axis), argnums=ALL))(x, y, p, w)
    close(grads, expected)
    # The same gradients as the sum over the batch of the per-element gradients.
    per_element = jax.vmap(jax.grad(half_sq(gauss, axis), argnums=ALL),
                           in_axes=(0, None, None, None))(x, y[0], p, w)
    close(grads[1][0], per_element[1].sum(0))
    close(grads[2], per_element[2].sum(0))
    close(grads[3], per_element[3].sum(0))
    # Forward mode with broadcast tangents.
    tangents = random_like(rng, (x, y, p, w))
    close(jax.jvp(lambda *a: gauss(*a, axis=axis), (x, y, p, w), tangents),
          jax.jvp(lambda *a: gauss_dense(*a, axis=axis), (x, y, p, w), tangents))


BROADCAST_LAYOUTS = {
    # name: batch shapes of (x, y, p, w)
    "x-unbatched": ((), (B,), (B,), (B,)),
    "x-size-1": ((1,), (B,), (B,), ()),
    "pykeops-style": ((B, 1), (1, C), (), (1, 1)),
    "p-only": ((), (), (C, B), ()),
}


@pytest.mark.parametrize("layout", sorted(BROADCAST_LAYOUTS))
def test_grads_of_any_broadcast_layout(layout, rng):
    """Every argument, i- and parameter-variables included, may be the broadcast one: each
    gradient has its argument's shape and sums over the batch dims it was broadcast along."""
    bx, by, bp, bw = BROADCAST_LAYOUTS[layout]
    args = (data(rng, batch=bx)[0], data(rng, batch=by)[1], data(rng, batch=bp)[2],
            data(rng, batch=bw)[3])
    close(gauss(*args), gauss_dense(*args))
    grads = jax.jit(jax.grad(half_sq(gauss), argnums=ALL))(*args)
    assert [g.shape for g in grads] == [a.shape for a in args]
    close(grads, jax.jit(jax.grad(half_sq(gauss_dense), argnums=ALL))(*args))


def test_linearize_and_checkpoint(rng):
    """jax.linearize (forward mode, evaluated later) and jax.checkpoint (rematerialised in
    the backward pass) go through the same rules."""
    args = data(rng)
    tangents = random_like(rng, args)
    out, f_lin = jax.linearize(gauss, *args)
    expected = jax.jit(lambda *a: jax.jvp(gauss_dense, a, tangents))(*args)
    close((out, f_lin(*tangents)), expected)

    def remat_gauss(*a, axis=1):
        return jax.checkpoint(lambda *b: gauss(*b, axis=axis))(*a)

    remat = jax.jit(jax.grad(half_sq(remat_gauss), argnums=ALL))
    close(remat(*args), jax.jit(jax.grad(half_sq(gauss_dense), argnums=ALL))(*args))


def test_batched_hessian_under_vmap_and_jit(rng):
    """vmap(hessian) over x, with two explicit batch dims on the other inputs' side."""
    x, _, _, _ = data(rng, batch=(B,))
    _, y, p, w = data(rng, batch=(C, 1))  # broadcast against x's batch inside each call
    in_axes = (0, None, None, None)
    h = jax.jit(jax.vmap(jax.hessian(half_sq(gauss), argnums=0), in_axes))
    h_ref = jax.jit(jax.vmap(jax.hessian(half_sq(gauss_dense), argnums=0), in_axes))
    close(h(x, y, p, w), h_ref(x, y, p, w))


# ---------------------------------------------------------------------------------------------
# Higher order stays symbolic: only kernel calls, never an M x N array.

def _tensor_sizes(text: str) -> list[int]:
    sizes = []
    for shape in re.findall(r"tensor<([0-9x]*)[a-z]", text):
        dims = [int(d) for d in shape.split("x") if d]
        sizes.append(int(np.prod(dims)) if dims else 1)
    return sizes


def test_hessian_vector_product_lowers_to_kernel_calls_only(rng):
    m, n = 101, 103  # distinct primes: no other product of the shapes around equals m * n

    def loss(x, y, b):  # a Gaussian-sum loss used by no other test: its kernels are new here
        return jnp.sum(((-Vi(x).sqdist(Vj(y))).exp() * Vj(b)).sum(axis=1))

    def hvp(primals, tangents):
        return jax.jvp(jax.grad(loss, argnums=(0, 1, 2)), primals, tangents)[1]

    x, y, b = rng.normal(size=(m, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    primals = (x, y, b)
    tangents = tuple(rng.normal(size=a.shape) for a in primals)
    ids_before = {kid for kid, _ in _lowering._kernels.values()}
    loaded_before = set(loaded_kernels())
    text = jax.jit(hvp).lower(primals, tangents).as_text()
    new_ids = {kid for kid, _ in _lowering._kernels.values()} - ids_before

    assert set(re.findall(r"custom_call @(\w+)", text)) == {"jaxkeops_cpu"}
    sizes = _tensor_sizes(text)
    assert sizes and max(sizes) < m * n, f"an array of {max(sizes)} elements (M * N = {m * n})"
    assert m * n not in sizes
    calls = re.findall(r"custom_call @jaxkeops_cpu", text)
    kernels = {int(k) for k in re.findall(r"kernel_id = (-?\d+)", text)}
    # Measured: 2 kernels, one call each (x's cotangent, and (y, b)'s in one concatenated
    # reduction over i); the primal and the plain JVP are never needed.
    assert 1 <= len(kernels) <= len(calls) <= 4
    assert kernels <= {kid for kid, _ in _lowering._kernels.values()}
    assert kernels <= set(loaded_kernels())
    assert new_ids == kernels - ids_before
    assert len(set(loaded_kernels()) - loaded_before) <= len(kernels)

    def loss_ref(x, y, b):
        k = jnp.exp(-jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1))
        return jnp.sum(k @ b)

    def hvp_ref(primals, tangents):
        return jax.jvp(jax.grad(loss_ref, argnums=(0, 1, 2)), primals, tangents)[1]

    close(jax.jit(hvp)(primals, tangents), jax.jit(hvp_ref)(primals, tangents))
    # The check above would see the dense version's M x N arrays.
    assert m * n in _tensor_sizes(jax.jit(hvp_ref).lower(primals, tangents).as_text())
