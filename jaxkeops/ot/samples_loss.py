"""SamplesLoss: GeomLoss's loss between sampled measures, with its signature and semantics."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .costs import Cost
from .inputs import check_positive, measures, split_args
from .kernel_losses import KERNEL_LOSSES, KernelFunction, jitted_kernel_loss
from .sinkhorn import BACKENDS, SinkhornParams, run

Array = jax.Array
LOSSES = ("sinkhorn", "hausdorff", *KERNEL_LOSSES)


class SamplesLoss:
    """A loss between sampled measures, as GeomLoss's `SamplesLoss`: `L(x, y)` (uniform
    weights) or `L(a, x, b, y)`, with points (N, D) or (*batch, N, D) and weights (N,),
    (N, 1), (*batch, N) or (*batch, N, 1). Returns a scalar, or a (*batch,) array; with
    `potentials=True`, the dual vectors (F on x, G on y), shaped as the weights as given
    ((*batch, N) and (*batch, M) for L(x, y)). GeomLoss 0.3.1 documents the same but returns
    (1, N) for unbatched inputs.

    Arguments (GeomLoss's names and defaults):
        loss: "sinkhorn" (debiased Sinkhorn divergence, or entropic OT with debias=False),
            "hausdorff", "energy", "gaussian" or "laplacian" (kernel MMDs).
        p: 1 or 2, the cost |x - y| or |x - y|^2 / 2 of "sinkhorn" and "hausdorff".
        blur: eps = blur**p for "sinkhorn"/"hausdorff"; the kernel's scale for "gaussian"
            and "laplacian"; unused by "energy".
        reach: None (balanced OT), or the scale of unbalanced OT: rho = reach**p, KL penalties
            of the marginals ("sinkhorn" only).
        diameter: the first blur of the epsilon-scaling descent (None: the diagonal of the
            bounding box of both clouds, over all batch dims, as GeomLoss).
        scaling: ratio of successive blurs in the descent, in (0, 1).
        cost: None, a KeOps formula string in X and Y, or a function of LazyTensors
            (x_i, y_j) -> scalar LazyTensor.
        kernel: for the kernel losses, a function of LazyTensors (x_i, y_j) that replaces
            the named kernel (GeomLoss passes dense tensors instead).
        debias, potentials: as in GeomLoss.
        backend: "auto" and "online" run jaxkeops kernels; "tensorized" builds dense
            (*batch, N, M) matrices for the default costs and the named kernels (custom ones
            run kernels); "multiscale" is GeomLoss's coarse-to-fine solver with kernel
            truncation on block-sparse kernels (loss="sinkhorn", default costs; with batch
            dims; see `jaxkeops.ot.multiscale`).
        truncate, cluster_scale: multiscale settings, as in GeomLoss (cluster_scale needs
            diameter= too: the grid has a static number of cells). verbose: accepted, unused.
        tol, max_extra_iter (keyword-only, jaxkeops's): after the epsilon-scaling descent,
            keep iterating at eps = blur**p until no potential changes by more than `tol`
            (in units of the cost), for at most `max_extra_iter` extra iterations. None (the
            default) runs GeomLoss's schedule only.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxkeops.ot import SamplesLoss
        >>> x = jax.random.normal(jax.random.key(0), (100, 3))
        >>> y = jax.random.normal(jax.random.key(1), (80, 3)) + 1.0
        >>> L = SamplesLoss("sinkhorn", p=2, blur=0.05)
        >>> value, grad_x = jax.value_and_grad(L)(x, y)
        >>> value.shape, grad_x.shape
        ((), (100, 3))
        >>> bool(value > 1.0)
        True
    """

    def __init__(self, loss: str = "sinkhorn", p: int = 2, blur: float = 0.05,
                 reach: float | None = None, diameter: float | None = None,
                 scaling: float = 0.5, truncate: float | None = 5, cost: Cost = None,
                 kernel: KernelFunction | None = None, cluster_scale: float | None = None,
                 debias: bool = True, potentials: bool = False, verbose: bool = False,
                 backend: str = "auto", *, tol: float | None = None,
                 max_extra_iter: int = 1000):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.loss, self.p, self.blur, self.reach = loss, p, blur, reach
        self.diameter, self.scaling, self.truncate = diameter, scaling, truncate
        self.cost, self.kernel, self.cluster_scale = cost, kernel, cluster_scale
        self.debias, self.potentials, self.verbose = debias, potentials, verbose
        self.backend, self.tol, self.max_extra_iter = backend, tol, max_extra_iter
        if loss in KERNEL_LOSSES:
            if cost is not None:
                raise ValueError(f"cost= applies to 'sinkhorn' and 'hausdorff', not to "
                                 f"loss={loss!r}; pass kernel= to change its kernel")
            if reach is not None:
                raise ValueError(f"reach= applies to 'sinkhorn' only, not to loss={loss!r}")
            if kernel is not None and not callable(kernel):
                raise TypeError(f"kernel must be a function of LazyTensors, got {kernel!r}")
            if loss != "energy":
                check_positive("blur", blur)
            self._params = None
        else:
            if kernel is not None:
                raise ValueError(f"kernel= applies to the kernel losses {KERNEL_LOSSES}, not "
                                 f"to loss={loss!r}; pass cost= to change its ground cost")
            if loss == "hausdorff" and reach is not None:
                raise NotImplementedError("loss='hausdorff' is implemented for balanced OT "
                                          "only (reach=None)")
            self._params = SinkhornParams(p, blur, reach, diameter, scaling, cost, debias,
                                          backend, tol, max_extra_iter, cluster_scale,
                                          truncate)

    def __call__(self, *args: Any) -> Array | tuple[Array, Array]:
        """L(x, y) or L(a, x, b, y): the loss, or (F, G) with potentials=True."""
        a, x, b, y = split_args(args)
        m = measures(a, x, b, y)
        if self.loss in KERNEL_LOSSES:
            out = jitted_kernel_loss(*m, blur=self.blur, name=self.loss, kernel=self.kernel,
                                     potentials=self.potentials,
                                     dense=self.backend == "tensorized")
        else:
            out, _ = run(self.loss, m, self._params, self.potentials)
        if self.potentials:
            # GeomLoss's documented contract: potentials shaped as the weights as given.
            F, G = out
            return (F if a is None else F.reshape(np.shape(a)),
                    G if b is None else G.reshape(np.shape(b)))
        return out

    def __repr__(self) -> str:
        return (f"SamplesLoss(loss={self.loss!r}, p={self.p}, blur={self.blur}, "
                f"reach={self.reach}, scaling={self.scaling}, debias={self.debias}, "
                f"backend={self.backend!r})")
