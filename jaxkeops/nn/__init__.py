"""Flax nnx layers on jaxkeops reductions (the optional extra `flax`).

- `KernelAttention`: multi-head softmax attention with memory linear in the sequence length
  (`dot_product_attention` is the function underneath, `attention_scores` its symbolic scores).
- `PointConv`: a convolution over the K nearest neighbours of each point of a cloud
  (`knn_indices` and `gather_neighbours` are its two steps).
- `SinkhornLoss`: the debiased Sinkhorn divergence of `jaxkeops.ot` between point clouds, as
  a module.

Every layer works under nnx.jit, nnx.grad / nnx.value_and_grad and nnx.vmap. See docs/flax.md.
"""

try:
    from flax import nnx  # noqa: F401
except ImportError as error:
    raise ImportError(
        'jaxkeops.nn needs Flax, which is an optional dependency: pip install "jaxkeops[flax]"'
    ) from error

from .attention import MASKED_SCORE, KernelAttention, attention_scores, dot_product_attention
from .pointconv import PointConv, gather_neighbours, knn_indices
from .sinkhorn import SinkhornLoss

__all__ = [
    "MASKED_SCORE", "KernelAttention", "PointConv", "SinkhornLoss", "attention_scores",
    "dot_product_attention", "gather_neighbours", "knn_indices",
]
