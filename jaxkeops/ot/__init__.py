"""Optimal transport on jaxkeops: GeomLoss's SamplesLoss, Sinkhorn potentials and lazy plans.

A top floor built only on jaxkeops's public API (LazyTensor, Vi, Vj, Pm, Genred) and JAX.

Example:
    >>> import jax
    >>> from jaxkeops.ot import SamplesLoss
    >>> x = jax.random.normal(jax.random.key(0), (200, 3))
    >>> y = jax.random.normal(jax.random.key(1), (300, 3))
    >>> loss = SamplesLoss("sinkhorn", p=2, blur=0.05)
    >>> jax.grad(loss)(x, y).shape
    (200, 3)

Modules: `samples_loss` (SamplesLoss), `functional` (sinkhorn_divergence, sinkhorn_potentials,
sinkhorn_plan), `plan` (TransportPlan), `kernel_losses` (energy / gaussian / laplacian MMDs),
`sinkhorn` (divergences from potentials), `solver` (the Sinkhorn loop and its envelope-theorem
step), `schedule` (epsilon-scaling), `costs` (ground costs and their reductions), `inputs`.
See docs/ot.md.
"""

from .costs import (
    CostMatrix,
    DenseCostMatrix,
    FormulaCostMatrix,
    LazyCostMatrix,
    cost_matrix,
    lazy_distance,
    lazy_half_squared_distance,
)
from .functional import sinkhorn_divergence, sinkhorn_plan, sinkhorn_potentials
from .inputs import Measures, measures, uniform_weights
from .kernel_losses import double_grad, kernel_loss
from .plan import TransportPlan
from .samples_loss import SamplesLoss
from .schedule import Schedule, dampening, epsilon_schedule, max_diameter
from .sinkhorn import (
    SinkhornParams,
    hausdorff_loss,
    sinkhorn_cost,
    sinkhorn_loss,
    unbalanced_weight,
)
from .solver import (
    CostMatrices,
    DualPotentials,
    SinkhornInfo,
    extrapolate,
    log_weights,
    sinkhorn_loop,
)

__all__ = [
    "CostMatrices", "CostMatrix", "DenseCostMatrix", "DualPotentials", "FormulaCostMatrix",
    "LazyCostMatrix", "Measures", "SamplesLoss", "Schedule", "SinkhornInfo", "SinkhornParams",
    "TransportPlan", "cost_matrix", "dampening", "double_grad", "epsilon_schedule", "extrapolate",
    "hausdorff_loss", "kernel_loss", "lazy_distance", "lazy_half_squared_distance",
    "log_weights", "max_diameter", "measures", "sinkhorn_cost", "sinkhorn_divergence",
    "sinkhorn_loop", "sinkhorn_loss", "sinkhorn_plan", "sinkhorn_potentials",
    "unbalanced_weight", "uniform_weights",
]
