"""Softmax attention through a jaxkeops SumSoftMaxWeight reduction: memory linear in the
sequence length, because the (Lq, Lk) matrix of scores is never stored.

`dot_product_attention` is the function, with `jax.nn.dot_product_attention`'s layout
(*batch, L, heads, head_dim); `KernelAttention` is the Flax nnx layer (projections, heads,
output projection) built on it. Heads and batch dims become batch dims of the LazyTensors,
so one kernel call serves every (batch, head) pair.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxkeops import LazyTensor, Vi, Vj

# The score given to masked (query, key) pairs. Finite, as in jax.nn.dot_product_attention:
# a row whose keys are all masked averages the values instead of returning NaN, and no
# inf - inf appears in the derivatives. exp(MASKED_SCORE - max) underflows to exactly 0 in
# float32 and float64 whenever one key of the row is kept.
MASKED_SCORE = -1e30


def _check_attention_shapes(query: jax.Array, key: jax.Array, value: jax.Array,
                            key_mask: jax.Array | None) -> None:
    for name, a in (("query", query), ("key", key), ("value", value)):
        if a.ndim < 3:
            raise ValueError(f"{name} must have shape (*batch, length, heads, head_dim), got "
                             f"{name}.shape={a.shape}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key need the same head_dim (last axis): query.shape="
                         f"{query.shape}, key.shape={key.shape}")
    if key.shape[-3] != value.shape[-3]:
        raise ValueError(f"key and value need the same length (axis -3): key.shape={key.shape}, "
                         f"value.shape={value.shape}")
    heads = {query.shape[-2], key.shape[-2], value.shape[-2]} - {1}
    if len(heads) > 1:
        raise ValueError(f"query, key and value need the same number of heads (axis -2, or 1 to "
                         f"share a head): query.shape={query.shape}, key.shape={key.shape}, "
                         f"value.shape={value.shape}")
    if key_mask is not None and (key_mask.ndim < 1 or key_mask.shape[-1] != key.shape[-3]):
        raise ValueError(f"key_mask must have shape (*batch, key_length) with key_length = "
                         f"{key.shape[-3]}: key_mask.shape={key_mask.shape}, key.shape="
                         f"{key.shape}")
    for name, a in (("query", query), ("key", key), ("value", value)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")


def attention_scores(query: jax.Array, key: jax.Array, *, key_mask: jax.Array | None = None,
                     is_causal: bool = False, scale: float | None = None) -> LazyTensor:
    """The symbolic scores <q_i, k_j> * scale of shape (*batch, heads, Lq, Lk), with masked
    pairs set to `MASKED_SCORE`; nothing is computed. Arrays as in `dot_product_attention`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxkeops.nn import attention_scores
        >>> q, k = jnp.ones((2, 100, 4, 8)), jnp.ones((2, 300, 4, 8))
        >>> attention_scores(q, k, is_causal=True).shape   # symbolic: nothing is stored
        (2, 4, 100, 300)
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    # Heads become a batch dim of the LazyTensors: (*batch, L, H, D) -> (*batch, H, L, D).
    q_i = Vi(jnp.swapaxes(query * jnp.asarray(scale, query.dtype), -2, -3))
    k_j = Vj(jnp.swapaxes(key, -2, -3))
    scores = q_i | k_j
    if is_causal:
        # Query i sees key j when i >= j: the positions are an i- and a j-variable, and
        # IfElse(i - j, score, MASKED_SCORE) keeps the score where i - j >= 0.
        pos_q = jnp.arange(query.shape[-3], dtype=query.dtype)[:, None]
        pos_k = jnp.arange(key.shape[-3], dtype=query.dtype)[:, None]
        scores = (Vi(pos_q) - Vj(pos_k)).ifelse(scores, MASKED_SCORE)
    if key_mask is not None:
        # (*batch, Lk) -> (*batch, 1, Lk, 1): a j-variable shared by the heads.
        keep = jnp.asarray(key_mask).astype(query.dtype)[..., None, :, None]
        scores = (Vj(keep) - 0.5).ifelse(scores, MASKED_SCORE)
    return scores


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          key_mask: jax.Array | None = None, is_causal: bool = False,
                          scale: float | None = None) -> jax.Array:
    """softmax(q k^T * scale) v for every head, without the (Lq, Lk) score matrix.

    The layout is `jax.nn.dot_product_attention`'s: query (*batch, Lq, H, D), key
    (*batch, Lk, H, D), value (*batch, Lk, H, Dv) -> (*batch, Lq, H, Dv); a head axis of
    size 1 in key and value is shared by every query head (multi-query attention). `scale`
    defaults to 1 / sqrt(D). `key_mask` (*batch, Lk), True where a key may be attended to,
    broadcasts over the heads; `is_causal` lets query i see the keys j <= i. Masked pairs get
    the score `MASKED_SCORE`, so a query whose keys are all masked averages every value, as
    jax.nn.dot_product_attention does. Memory and the reduction's work are O(Lq + Lk) and
    O(Lq * Lk); it works under jit, grad (all of q, k, v) and vmap.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.nn import dot_product_attention
        >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 50, 4, 8))
        >>> out = dot_product_attention(q, k, v, is_causal=True)
        >>> ref = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        >>> out.shape, bool(jnp.allclose(out, ref, atol=1e-5))
        ((2, 50, 4, 8), True)
    """
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    key_mask = None if key_mask is None else jnp.asarray(key_mask)
    _check_attention_shapes(query, key, value, key_mask)
    scores = attention_scores(query, key, key_mask=key_mask, is_causal=is_causal, scale=scale)
    out = scores.sumsoftmaxweight(Vj(jnp.swapaxes(value, -2, -3)), axis=-2)
    return jnp.swapaxes(out, -2, -3)


def _heads(x: jax.Array, num_heads: int) -> jax.Array:
    """(..., L, H * D) -> (..., L, H, D)."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


class KernelAttention(nnx.Module):
    """Multi-head softmax attention whose memory is linear in the sequence length.

    out = W_o concat_h softmax(Q_h K_h^T / sqrt(d)) V_h, with Q = W_q x_q, K = W_k x_kv,
    V = W_v x_kv (nnx.Linear projections to `qkv_features = num_heads * d`), computed by
    `dot_product_attention`: one jaxkeops SumSoftMaxWeight reduction for every batch and head.
    Inputs are (*batch, L, features); `inputs_kv` defaults to `inputs_q` (self-attention).

    Args:
        num_heads: number of heads; must divide `qkv_features`.
        in_features: features of `inputs_q`.
        qkv_features: width of the query, key and value projections (default in_features).
        out_features: features of the output (default in_features).
        in_kv_features: features of `inputs_kv` (default in_features).
        causal: mask the keys after each query (query i sees keys j <= i) by default.
        use_bias: biases in the four projections.
        dtype: the computation dtype of the projections (None: from the inputs and
            parameters, as nnx.Linear).
        param_dtype: the dtype of the projections' parameters.
        rngs: the nnx.Rngs that initialise the projections.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxkeops.nn import KernelAttention
        >>> layer = KernelAttention(num_heads=2, in_features=16, causal=True, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((4, 100, 16))                # (batch, length, features)
        >>> layer(x, key_mask=jnp.arange(100) < 90).shape
        (4, 100, 16)
    """

    def __init__(self, num_heads: int, in_features: int, qkv_features: int | None = None,
                 out_features: int | None = None, *, in_kv_features: int | None = None,
                 causal: bool = False, use_bias: bool = True, dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        qkv_features = in_features if qkv_features is None else qkv_features
        out_features = in_features if out_features is None else out_features
        in_kv_features = in_features if in_kv_features is None else in_kv_features
        if num_heads < 1 or qkv_features % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide qkv_features="
                             f"{qkv_features}")
        self.num_heads = num_heads
        self.head_dim = qkv_features // num_heads
        self.causal = causal

        def linear(fan_in: int, fan_out: int) -> nnx.Linear:
            return nnx.Linear(fan_in, fan_out, use_bias=use_bias, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)

        self.query = linear(in_features, qkv_features)
        self.key = linear(in_kv_features, qkv_features)
        self.value = linear(in_kv_features, qkv_features)
        self.out = linear(qkv_features, out_features)

    def _projections(self, inputs_q: jax.Array, inputs_kv: jax.Array | None):
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        if inputs_q.shape[-1] != self.query.in_features:
            raise ValueError(f"inputs_q must have {self.query.in_features} features (last "
                             f"axis), got inputs_q.shape={inputs_q.shape}")
        if inputs_kv.shape[-1] != self.key.in_features:
            raise ValueError(f"inputs_kv must have {self.key.in_features} features (last "
                             f"axis), got inputs_kv.shape={inputs_kv.shape}")
        if inputs_q.ndim < 2 or inputs_kv.ndim < 2:
            raise ValueError(f"inputs need shape (*batch, length, features): inputs_q.shape="
                             f"{inputs_q.shape}, inputs_kv.shape={inputs_kv.shape}")
        return (_heads(self.query(inputs_q), self.num_heads),
                _heads(self.key(inputs_kv), self.num_heads),
                _heads(self.value(inputs_kv), self.num_heads))

    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array | None = None, *,
                 key_mask: jax.Array | None = None, causal: bool | None = None) -> jax.Array:
        """Attend from `inputs_q` (*batch, Lq, in_features) to `inputs_kv`
        (*batch, Lk, in_kv_features), default `inputs_q`; `key_mask` (*batch, Lk) is True
        where a key may be attended to; `causal` overrides the layer's default.
        Returns (*batch, Lq, out_features).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxkeops.nn import KernelAttention
            >>> cross = KernelAttention(num_heads=4, in_features=8, out_features=2,
            ...                         in_kv_features=3, rngs=nnx.Rngs(0))
            >>> queries, memory = jnp.ones((10, 8)), jnp.ones((25, 3))
            >>> cross(queries, memory).shape              # 10 queries attend to 25 keys
            (10, 2)
        """
        q, k, v = self._projections(inputs_q, inputs_kv)
        causal = self.causal if causal is None else causal
        heads = dot_product_attention(q, k, v, key_mask=key_mask, is_causal=causal)
        return self.out(heads.reshape(*heads.shape[:-2], -1))

    def attention_weights(self, inputs_q: jax.Array, inputs_kv: jax.Array | None = None, *,
                          key_mask: jax.Array | None = None,
                          causal: bool | None = None) -> jax.Array:
        """The dense softmax weights (*batch, heads, Lq, Lk), for inspection and plots: this
        one stores the whole matrix, so keep Lq * Lk small.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxkeops.nn import KernelAttention
            >>> layer = KernelAttention(num_heads=2, in_features=4, causal=True,
            ...                         rngs=nnx.Rngs(0))
            >>> weights = layer.attention_weights(jax.random.normal(jax.random.key(0), (5, 4)))
            >>> weights.shape, bool(jnp.allclose(weights.sum(-1), 1.0))   # rows sum to 1
            ((2, 5, 5), True)
            >>> float(weights[0, 0, 1])                   # causal: query 0 sees key 0 only
            0.0
        """
        q, k, _ = self._projections(inputs_q, inputs_kv)
        causal = self.causal if causal is None else causal
        scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(self.head_dim)
        if causal:
            scores = jnp.where(jnp.tril(jnp.ones(scores.shape[-2:], bool)), scores,
                               MASKED_SCORE)
        if key_mask is not None:
            keep = jnp.asarray(key_mask)[..., None, None, :]
            scores = jnp.where(keep, scores, MASKED_SCORE)
        return jax.nn.softmax(scores, axis=-1)
