"""jaxkeops.ot against GeomLoss 0.3.1's `tensorized` backend (torch, float64): values,
potentials and gradients with respect to the weights and the positions, for the Sinkhorn
divergence (p=1 and 2, debiased or not, balanced or unbalanced, custom costs, batch dims), the
kernel losses and the Hausdorff divergence. Our "online" backend runs jaxkeops kernels and our
"tensorized" backend dense jnp matrices: both must agree with GeomLoss to float64 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from jaxkeops.ot import SamplesLoss

torch = pytest.importorskip("torch")
geomloss = pytest.importorskip("geomloss")
legacy_divergence = pytest.importorskip("geomloss._legacy.sinkhorn_divergence")
legacy_samples = pytest.importorskip("geomloss._legacy.sinkhorn_samples")

N, M, D = 12, 9, 3
TOL = dict(rtol=1e-10, atol=1e-12)  # float64: observed differences are ~1e-16


def _data(rng, batch=(), unbalanced=False):
    x = rng.uniform(size=batch + (N, D))
    y = rng.uniform(size=batch + (M, D)) + 0.3
    a = rng.uniform(0.5, 1.5, batch + (N,))
    b = rng.uniform(0.5, 1.5, batch + (M,))
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True) / (1.4 if unbalanced else 1.0)
    return a, x, b, y


def _ours(loss, a, x, b, y, **kw):
    """(value, gradients with respect to a, x, b, y) of our SamplesLoss."""
    L = SamplesLoss(loss, **kw)
    values_and_grads = jax.value_and_grad(lambda *args: (L(*args).sum(), L(*args)),
                                          argnums=(0, 1, 2, 3), has_aux=True)
    (_, value), grads = jax.jit(values_and_grads)(*(jnp.asarray(v) for v in (a, x, b, y)))
    return np.asarray(value), [np.asarray(g) for g in grads]


def _geomloss(loss, a, x, b, y, **kw):
    """(value, gradients with respect to a, x, b, y) of GeomLoss's tensorized backend."""
    tensors = [torch.tensor(v, requires_grad=True) for v in (a, x, b, y)]
    out = geomloss.SamplesLoss(loss, backend="tensorized", **kw)(*tensors)
    grads = torch.autograd.grad(out.sum(), tensors)
    return out.detach().numpy(), [g.numpy() for g in grads]


def _compare(ours, reference):
    value, grads = ours
    ref_value, ref_grads = reference
    assert_close(value, ref_value, "float64", **TOL)
    for name, g, r in zip("axby", grads, ref_grads):
        assert np.isfinite(g).all(), f"gradient with respect to {name} is not finite"
        assert_close(g, r, "float64", **TOL)


class _IntendedUnbalancedWeight(torch.autograd.Function):
    """GeomLoss's UnbalancedWeight as its docstring means it: (rho + eps/2) x forward and
    (rho + eps) g backward. GeomLoss 0.3.1 defines it as an nn.Module whose `backward` autograd
    never calls, so its position gradients in unbalanced OT miss that factor."""

    @staticmethod
    def forward(ctx, x, eps, rho):
        ctx.scale = rho + eps
        return (rho + eps / 2) * x

    @staticmethod
    def backward(ctx, g):
        return ctx.scale * g, None, None


@pytest.fixture
def intended_unbalanced_weight(monkeypatch):
    monkeypatch.setattr(legacy_divergence, "UnbalancedWeight",
                        lambda eps, rho: (lambda v: _IntendedUnbalancedWeight.apply(v, eps, rho)))


# ------------------------------------------------------------------------------------------------
# Sinkhorn divergences.
SINKHORN_CASES = {
    "p2": dict(),
    "p1": dict(p=1),
    "raw_ot": dict(debias=False),
    "p1_raw_ot": dict(p=1, debias=False),
}


@pytest.mark.parametrize("case", SINKHORN_CASES)
def test_sinkhorn_matches_geomloss(rng, case):
    a, x, b, y = _data(rng)
    kw = SINKHORN_CASES[case]
    _compare(_ours("sinkhorn", a, x, b, y, **kw), _geomloss("sinkhorn", a, x, b, y, **kw))


@pytest.mark.parametrize("p", [1, 2])
def test_tensorized_backend_matches_geomloss(rng, p):
    """Our dense jnp implementation (backend="tensorized", default costs)."""
    a, x, b, y = _data(rng)
    _compare(_ours("sinkhorn", a, x, b, y, p=p, backend="tensorized"),
             _geomloss("sinkhorn", a, x, b, y, p=p))


def test_sinkhorn_schedule_settings_match_geomloss(rng):
    """A large blur, a slow descent and a given diameter."""
    a, x, b, y = _data(rng)
    for kw in (dict(blur=0.5), dict(scaling=0.8, diameter=3.0), dict(blur=0.1, scaling=0.3)):
        _compare(_ours("sinkhorn", a, x, b, y, **kw), _geomloss("sinkhorn", a, x, b, y, **kw))


@pytest.mark.parametrize("debias, backend", [(True, "online"), (False, "online"),
                                            (True, "tensorized")])
def test_unbalanced_sinkhorn_matches_geomloss(rng, intended_unbalanced_weight, debias,
                                              backend):
    a, x, b, y = _data(rng, unbalanced=True)
    kw = dict(reach=0.5, debias=debias)
    _compare(_ours("sinkhorn", a, x, b, y, backend=backend, **kw),
             _geomloss("sinkhorn", a, x, b, y, **kw))


def test_unbalanced_values_and_weight_gradients_match_unpatched_geomloss(rng):
    """Without the fix above, GeomLoss still gives the same values and weight gradients (the
    weights see the forward factor); its position gradients are the ones that differ."""
    a, x, b, y = _data(rng, unbalanced=True)
    (value, grads), (ref_value, ref_grads) = (
        _ours("sinkhorn", a, x, b, y, reach=0.5), _geomloss("sinkhorn", a, x, b, y, reach=0.5))
    assert_close(value, ref_value, "float64", **TOL)
    assert_close(grads[0], ref_grads[0], "float64", **TOL)
    assert_close(grads[2], ref_grads[2], "float64", **TOL)
    assert np.abs(grads[1] - ref_grads[1]).max() > 1e-6


def test_unbalanced_position_gradient_is_the_derivative_of_the_value(rng):
    """Central finite differences of a well-converged unbalanced divergence."""
    a, x, b, y = (jnp.asarray(v) for v in _data(rng, unbalanced=True))
    L = jax.jit(SamplesLoss("sinkhorn", reach=0.5, blur=0.3, tol=1e-14, max_extra_iter=3000))
    grad = jax.jit(jax.grad(L, argnums=1))(a, x, b, y)
    h = 1e-6
    for i, k in [(0, 0), (3, 1), (7, 2)]:
        step = jnp.zeros_like(x).at[i, k].set(h)
        finite_difference = (L(a, x + step, b, y) - L(a, x - step, b, y)) / (2 * h)
        np.testing.assert_allclose(grad[i, k], finite_difference, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("case", ["debiased", "raw_ot", "unbalanced"])
def test_potentials_match_geomloss(rng, case):
    kw = {"debiased": dict(), "raw_ot": dict(debias=False), "unbalanced": dict(reach=0.5)}[case]
    a, x, b, y = _data(rng, unbalanced=case == "unbalanced")
    ours = SamplesLoss("sinkhorn", potentials=True, **kw)(*(jnp.asarray(v) for v in (a, x, b, y)))
    tensors = [torch.tensor(v) for v in (a, x, b, y)]
    ref = geomloss.SamplesLoss("sinkhorn", potentials=True, backend="tensorized", **kw)(*tensors)
    assert ours[0].shape == (N,) and ours[1].shape == (M,)
    for o, r in zip(ours, ref):  # GeomLoss 0.3.1 returns (1, N) for (N,) weights
        assert_close(o, r.numpy().reshape(o.shape), "float64", **TOL)


def test_uniform_weights_and_column_weights(rng):
    """L(x, y) uses weights 1/N; (N, 1) weights mean (N,); potentials have the weights'
    shapes."""
    a, x, b, y = _data(rng)
    ours = SamplesLoss("sinkhorn")(jnp.asarray(x), jnp.asarray(y))
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized")(torch.tensor(x),
                                                                  torch.tensor(y))
    assert_close(ours, ref.numpy(), "float64", **TOL)
    L = SamplesLoss("sinkhorn", potentials=True)
    F, G = L(jnp.asarray(a[:, None]), jnp.asarray(x), jnp.asarray(b[:, None]), jnp.asarray(y))
    F1, G1 = L(jnp.asarray(a), jnp.asarray(x), jnp.asarray(b), jnp.asarray(y))
    assert F.shape == (N, 1) and G.shape == (M, 1)
    assert F1.shape == (N,) and G1.shape == (M,)
    np.testing.assert_array_equal(F[:, 0], F1)
    np.testing.assert_array_equal(G[:, 0], G1)


@pytest.mark.parametrize("loss", ["sinkhorn", "gaussian"])
def test_batch_dims_match_geomloss(rng, loss):
    """(B, N, D) points and (B, N) weights: (B,) values, (B, N) potentials; the diameter is
    estimated over the whole batch, as GeomLoss does."""
    a, x, b, y = _data(rng, batch=(3,))
    value, grads = _ours(loss, a, x, b, y)
    assert value.shape == (3,)
    _compare((value, grads), _geomloss(loss, a, x, b, y))
    ours = SamplesLoss(loss, potentials=True)(*(jnp.asarray(v) for v in (a, x, b, y)))
    tensors = [torch.tensor(v) for v in (a, x, b, y)]
    ref = geomloss.SamplesLoss(loss, potentials=True, backend="tensorized")(*tensors)
    assert ours[0].shape == (3, N) and ours[1].shape == (3, M)
    for o, r in zip(ours, ref):
        assert_close(o, r.numpy(), "float64", **TOL)


def test_two_batch_dims_are_independent_problems_with_a_shared_diameter(rng):
    a, x, b, y = _data(rng, batch=(2, 2))
    L = SamplesLoss("sinkhorn", diameter=2.0)
    values = L(*(jnp.asarray(v) for v in (a, x, b, y)))
    assert values.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            one = L(*(jnp.asarray(v[i, j]) for v in (a, x, b, y)))
            assert_close(values[i, j], one, "float64", **TOL)


# ------------------------------------------------------------------------------------------------
# Custom costs.
def _smooth_torch_cost(x, y):
    return (((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1) + 0.01).sqrt() - 0.1


CUSTOM_COSTS = {
    "formula": "Sqrt(SqDist(X,Y) + IntInv(100)) - IntInv(10)",
    "lazytensor": lambda x_i, y_j: (((x_i - y_j) ** 2).sum(-1) + 0.01).sqrt() - 0.1,
}


@pytest.mark.parametrize("kind", CUSTOM_COSTS)
def test_custom_costs_match_geomloss(rng, kind):
    """A formula string (run through Genred) or a function of LazyTensors; GeomLoss's
    tensorized backend takes the same cost as a function of dense tensors. p sets eps.
    backend="tensorized" runs kernels for custom costs."""
    a, x, b, y = _data(rng, batch=(2,))
    _compare(_ours("sinkhorn", a, x, b, y, p=1, cost=CUSTOM_COSTS[kind], backend="tensorized"),
             _geomloss("sinkhorn", a, x, b, y, p=1, cost=_smooth_torch_cost))


# ------------------------------------------------------------------------------------------------
# Kernel losses.
@pytest.mark.parametrize("backend", ["online", "tensorized"])
@pytest.mark.parametrize("loss", ["energy", "gaussian", "laplacian"])
def test_kernel_losses_match_geomloss(rng, loss, backend):
    a, x, b, y = _data(rng)
    _compare(_ours(loss, a, x, b, y, blur=0.3, backend=backend),
             _geomloss(loss, a, x, b, y, blur=0.3))


@pytest.mark.parametrize("loss", ["energy", "gaussian", "laplacian"])
def test_kernel_potentials_match_geomloss(rng, loss):
    a, x, b, y = _data(rng)
    ours = SamplesLoss(loss, blur=0.3, potentials=True)(*(jnp.asarray(v) for v in (a, x, b, y)))
    tensors = [torch.tensor(v) for v in (a, x, b, y)]
    ref = geomloss.SamplesLoss(loss, blur=0.3, potentials=True, backend="tensorized")(*tensors)
    for o, r in zip(ours, ref):
        assert_close(o, r.numpy().reshape(o.shape), "float64", **TOL)


def test_custom_kernel_is_a_function_of_lazytensors(rng):
    """kernel= replaces the gaussian kernel; here by the same kernel written by hand."""
    a, x, b, y = _data(rng)
    kernel = lambda x_i, y_j: (-((x_i - y_j) ** 2).sum(-1) / (2 * 0.3**2)).exp()
    value, grads = _ours("gaussian", a, x, b, y, kernel=kernel)
    _compare((value, grads), _geomloss("gaussian", a, x, b, y, blur=0.3))


# ------------------------------------------------------------------------------------------------
# Hausdorff divergence. GeomLoss 0.3.1's SamplesLoss("hausdorff") raises KeyError (it routes to
# its kernel losses without a kernel), so the reference is built from its own Sinkhorn loop and
# soft-min: the symmetric potentials p_a, p_b of OT(a, a), OT(b, b), extrapolated to both clouds,
# H = 1/2 <a, p_b - p_a> + 1/2 <b, p_a - p_b> (Feydy et al. 2019).
def _geomloss_hausdorff(a, x, b, y, p=2, blur=0.05, scaling=0.5):
    ta, tx, tb, ty = (torch.tensor(v[None], requires_grad=True) for v in (a, x, b, y))
    cost = legacy_samples.cost_routines[p]
    C_xx, C_yy = cost(tx, tx.detach()), cost(ty, ty.detach())
    C_xy, C_yx = cost(tx, ty.detach()), cost(ty, tx.detach())
    _, eps, eps_list, _ = legacy_divergence.scaling_parameters(tx, ty, p, blur, None, None,
                                                                scaling)
    softmin = legacy_samples.softmin_tensorized
    a_log, b_log = legacy_divergence.log_weights(ta), legacy_divergence.log_weights(tb)
    f_aa, g_bb, _, _ = legacy_divergence.sinkhorn_loop(
        softmin, a_log, b_log, C_xx, C_yy, C_xy, C_yx, eps_list, None, debias=True,
        last_extrapolation=False)
    h_a, h_b = (a_log + f_aa / eps).detach(), (b_log + g_bb / eps).detach()
    pa_x, pa_y = softmin(eps, C_xx, h_a), softmin(eps, C_yx, h_a)
    pb_y, pb_x = softmin(eps, C_yy, h_b), softmin(eps, C_xy, h_b)
    value = 0.5 * ((ta * (pb_x - pa_x)).sum() + (tb * (pa_y - pb_y)).sum())
    grads = torch.autograd.grad(value, [ta, tx, tb, ty])
    return value.detach().numpy(), [g[0].numpy() for g in grads]


@pytest.mark.parametrize("p, backend", [(1, "online"), (2, "online"), (2, "tensorized")])
def test_hausdorff_matches_geomloss_loop(rng, p, backend):
    a, x, b, y = _data(rng)
    value, grads = _ours("hausdorff", a, x, b, y, p=p, blur=0.1, backend=backend)
    _compare((value, grads), _geomloss_hausdorff(a, x, b, y, p=p, blur=0.1))
    assert value > 0


def test_hausdorff_potentials_are_its_weight_gradients(rng):
    a, x, b, y = (jnp.asarray(v) for v in _data(rng))
    F, G = SamplesLoss("hausdorff", potentials=True)(a, x, b, y)
    grad_a, grad_b = jax.jit(jax.grad(SamplesLoss("hausdorff"), argnums=(0, 2)))(a, x, b, y)
    assert_close(F, grad_a, "float64", **TOL)
    assert_close(G, grad_b, "float64", **TOL)
