"""jaxkeops.nn attention: `dot_product_attention` and `KernelAttention` against
jax.nn.dot_product_attention (dense) in float64, values and gradients; the nnx transforms
(jit, value_and_grad, vmap over inputs and over an ensemble of layers); an optax training loop;
memory linear in the sequence length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close, assert_tree_close

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

from jaxkeops.nn import KernelAttention, dot_product_attention  # noqa: E402


def dense_attention(q, k, v, key_mask=None, is_causal=False, scale=None):
    """Dense softmax attention in jnp, with jax.nn.dot_product_attention's layout and masking
    (jax.nn itself needs keys and values of the same head_dim and heads, and computes masked
    attention with float32 accuracy in float64)."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) * scale
    keep = jnp.ones(scores.shape[-2:], bool)
    if is_causal:
        keep = jnp.tril(keep)
    if key_mask is not None:
        keep = keep & jnp.asarray(key_mask)[..., None, None, :]
    weights = jax.nn.softmax(jnp.where(keep, scores, jnp.finfo(scores.dtype).min), axis=-1)
    return jnp.einsum("...hqk,...khd->...qhd", weights, v)


def dense_layer(layer: KernelAttention, inputs_q, inputs_kv=None, key_mask=None, causal=None):
    """KernelAttention's definition written with the layer's parameters and dense attention."""
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    causal = layer.causal if causal is None else causal

    def project(linear, x):
        y = x @ linear.kernel[...] + linear.bias[...]
        return y.reshape(*y.shape[:-1], layer.num_heads, layer.head_dim)

    heads = dense_attention(project(layer.query, inputs_q), project(layer.key, inputs_kv),
                            project(layer.value, inputs_kv), key_mask, causal)
    return heads.reshape(*heads.shape[:-2], -1) @ layer.out.kernel[...] + layer.out.bias[...]


def normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape))


CASES = {
    "plain": dict(lq=37, lk=37, heads=3, kv_heads=3, mask=False, causal=False),
    "causal": dict(lq=37, lk=37, heads=3, kv_heads=3, mask=False, causal=True),
    "key_mask": dict(lq=37, lk=37, heads=3, kv_heads=3, mask=True, causal=False),
    "causal_and_mask": dict(lq=37, lk=37, heads=3, kv_heads=3, mask=True, causal=True),
    "cross_longer_keys": dict(lq=20, lk=45, heads=2, kv_heads=2, mask=True, causal=True),
    "multi_query": dict(lq=30, lk=41, heads=4, kv_heads=1, mask=False, causal=False),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_dot_product_attention_matches_dense_with_gradients(rng, case):
    c = CASES[case]
    batch, d, dv = 2, 5, 3
    q = normal(rng, batch, c["lq"], c["heads"], d)
    k = normal(rng, batch, c["lk"], c["kv_heads"], d)
    v = normal(rng, batch, c["lk"], c["kv_heads"], dv)
    key_mask = jnp.asarray(rng.random((batch, c["lk"])) < 0.7) if c["mask"] else None
    if c["mask"]:
        key_mask = key_mask.at[:, 0].set(True)  # every causal row keeps a key
    ours = lambda q, k, v: dot_product_attention(q, k, v, key_mask=key_mask,
                                                 is_causal=c["causal"])
    ref = lambda q, k, v: dense_attention(q, k, v, key_mask, c["causal"])
    out = ours(q, k, v)
    assert out.shape == (batch, c["lq"], c["heads"], dv)
    assert_close(out, ref(q, k, v), "float64")

    cotangent = normal(rng, *out.shape)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)) * cotangent)
    grads = jax.grad(loss(ours), argnums=(0, 1, 2))(q, k, v)
    assert_tree_close(grads, jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v), "float64")


def test_scale_and_fully_masked_rows_follow_jax(rng):
    q, k, v = normal(rng, 1, 9, 2, 4), normal(rng, 1, 11, 2, 4), normal(rng, 1, 11, 2, 4)
    key_mask = jnp.zeros((1, 11), bool).at[0, 5:].set(True)
    # Causal rows 0-4 see only masked keys: they average every value, as in jax.nn.
    out = dot_product_attention(q, k, v, key_mask=key_mask, is_causal=True, scale=0.3)
    assert_close(out, dense_attention(q, k, v, key_mask, True, scale=0.3), "float64")
    assert_close(out[0, :5], jnp.broadcast_to(v[0].mean(axis=0), (5, 2, 4)), "float64")
    ref = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :],
                                       is_causal=True, scale=0.3)
    assert_close(out, ref, "float32")


def test_bad_shapes_name_the_arguments():
    q, k, v = jnp.ones((2, 10, 3, 4)), jnp.ones((2, 12, 3, 4)), jnp.ones((2, 12, 3, 2))
    with pytest.raises(ValueError, match=r"query and key need the same head_dim.*\(2, 12, 3, 5\)"):
        dot_product_attention(q, jnp.ones((2, 12, 3, 5)), v)
    with pytest.raises(ValueError, match="key and value need the same length"):
        dot_product_attention(q, k, jnp.ones((2, 11, 3, 2)))
    with pytest.raises(ValueError, match="same number of heads"):
        dot_product_attention(q, jnp.ones((2, 12, 2, 4)), jnp.ones((2, 12, 2, 2)))
    with pytest.raises(ValueError, match=r"key_mask must have shape.*key_length = 12"):
        dot_product_attention(q, k, v, key_mask=jnp.ones((2, 10), bool))
    with pytest.raises(ValueError, match=r"query must have shape \(\*batch, length, heads"):
        dot_product_attention(jnp.ones((10, 4)), k, v)
    with pytest.raises(TypeError, match="query must be a floating-point array"):
        dot_product_attention(jnp.ones((2, 10, 3, 4), jnp.int32), k, v)
    layer = KernelAttention(2, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"inputs_q must have 8 features.*\(4, 7\)"):
        layer(jnp.ones((4, 7)))
    with pytest.raises(ValueError, match="num_heads=3 must be >= 1 and divide qkv_features=8"):
        KernelAttention(3, 8, rngs=nnx.Rngs(0))


def make_layer(causal=False, **kw) -> KernelAttention:
    return KernelAttention(num_heads=2, in_features=6, qkv_features=8, out_features=5,
                           causal=causal, param_dtype=jnp.float64, rngs=nnx.Rngs(3), **kw)


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_layer_matches_dense_definition_with_parameter_gradients(rng, causal):
    layer = make_layer(causal)
    x = normal(rng, 3, 25, 6)
    key_mask = jnp.asarray(rng.random((3, 25)) < 0.8).at[:, 0].set(True)
    assert_close(layer(x, key_mask=key_mask), dense_layer(layer, x, key_mask=key_mask),
                 "float64")

    target = normal(rng, 3, 25, 5)
    loss = lambda f: lambda m, x: jnp.mean((f(m, x) - target) ** 2)
    ours = lambda m, x: m(x, key_mask=key_mask)
    ref = lambda m, x: dense_layer(m, x, key_mask=key_mask)
    value, grads = nnx.value_and_grad(loss(ours))(layer, x)
    ref_value, ref_grads = nnx.value_and_grad(loss(ref))(layer, x)
    assert_close(value, ref_value, "float64")
    assert_tree_close(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads), "float64")
    # ... and with respect to the inputs.
    assert_close(jax.grad(lambda x: loss(ours)(layer, x))(x),
                 jax.grad(lambda x: loss(ref)(layer, x))(x), "float64")


def test_cross_attention_layer_matches_dense(rng):
    layer = make_layer(in_kv_features=3)
    xq, xkv = normal(rng, 2, 10, 6), normal(rng, 2, 31, 3)
    out = layer(xq, xkv)
    assert out.shape == (2, 10, 5)
    assert_close(out, dense_layer(layer, xq, xkv), "float64")
    weights = layer.attention_weights(xq, xkv)
    assert weights.shape == (2, 2, 10, 31)
    assert_close(weights.sum(-1), np.ones((2, 2, 10)), "float64")


def test_nnx_jit_and_vmap_over_inputs(rng):
    layer = make_layer(causal=True)
    x = normal(rng, 4, 19, 6)
    eager = layer(x)
    jitted = nnx.jit(lambda m, x: m(x))(layer, x)
    assert_close(jitted, eager, "float64")
    # vmap over the batch with the layer broadcast: each example alone, unbatched inputs.
    mapped = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(layer, x)
    assert_close(mapped, dense_layer(layer, x), "float64")
    grads = nnx.grad(lambda m: jnp.sum(nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(m, x)
                                       ** 2))(layer)
    ref_grads = nnx.grad(lambda m: jnp.sum(dense_layer(m, x) ** 2))(layer)
    assert_tree_close(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads), "float64")


def test_nnx_vmap_over_an_ensemble_of_layers(rng):
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return KernelAttention(2, 6, 8, 5, param_dtype=jnp.float64, rngs=rngs)

    ensemble = create(nnx.Rngs(7))
    x = normal(rng, 2, 15, 6)
    outs = nnx.jit(nnx.vmap(lambda m, x: m(x), in_axes=(0, None)))(ensemble, x)
    assert outs.shape == (3, 2, 15, 5)
    graphdef, state = nnx.split(ensemble)
    for member in range(3):
        layer = nnx.merge(graphdef, jax.tree.map(lambda a, m=member: a[m], state))
        assert_close(outs[member], dense_layer(layer, x), "float64")
    assert not np.allclose(outs[0], outs[1])  # the members differ


def test_optax_training_decreases_the_loss(rng):
    """A student layer learns to imitate a teacher layer's causal attention."""
    teacher = KernelAttention(2, 4, 8, 3, causal=True, rngs=nnx.Rngs(1))
    student = KernelAttention(2, 4, 8, 3, causal=True, rngs=nnx.Rngs(2))
    x = jnp.asarray(rng.normal(size=(16, 24, 4)), jnp.float32)
    y = teacher(x)
    optimizer = nnx.Optimizer(student, optax.adam(2e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(student, optimizer, x, y)) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_memory_is_linear_in_the_sequence_length(rng):
    """At L = 20,000 the (L, L) float32 score matrix is 1.6 GB: the forward and backward pass
    allocate about 1 MB here, where dense attention's compiled program needs gigabytes."""
    length, d = 20_000, 4
    spec = jax.ShapeDtypeStruct((1, length, 1, d), jnp.float32)

    def memory(attention):
        loss = lambda q, k, v: jnp.sum(attention(q, k, v, is_causal=True) ** 2)
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        return grad.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    ours, dense = memory(dot_product_attention), memory(jax.nn.dot_product_attention)
    assert dense > length * length * 4  # the check can fail: dense stores the matrix
    assert ours < 100 * length * d * 4, (ours, dense)

    # It runs at that length, and its rows are right: check a few against dense rows.
    q, k, v = (jnp.asarray(rng.normal(size=(1, length, 1, d)), jnp.float32) for _ in range(3))
    out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True))(q, k, v)
    rows = np.array([0, 1, 777, 12_345, length - 1])
    scores = np.einsum("rd,jd->rj", np.float64(q[0, rows, 0]), np.float64(k[0, :, 0]))
    scores = np.where(np.arange(length)[None] <= rows[:, None], scores / np.sqrt(d), -np.inf)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected = (weights / weights.sum(1, keepdims=True)) @ np.float64(v[0, :, 0])
    assert_close(out[0, rows, 0], expected, "float32", rtol=1e-4, atol=1e-5)
