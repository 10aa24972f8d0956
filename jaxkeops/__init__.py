"""jaxkeops: KeOps-style symbolic kernel reductions for JAX, without the M x N matrix."""
