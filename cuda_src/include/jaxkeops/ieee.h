// IEEE 754 helpers shared by the CPU and CUDA reductions (cpu_reductions.h, cuda_reductions.h):
// the total order KMin ranks values in, and Kahan compensation kept sane past an inf or NaN.
// JK_FN (math.h) makes the functions host-inline or device-inline.
#pragma once

#include "jaxkeops/math.h"

namespace jk {

// A signed integer whose order is the IEEE 754 totalOrder of x:
//   -NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN
// (NaNs further ordered by payload). lax.top_k compares in this order, so the K smallest of v
// ranked by it are lax.top_k(-v, K): -inf first, then finite values, +inf, and a NaN last
// (first when its sign bit is set, as the NaN of inf - inf is on x86).
JK_FN int32_t total_order_key(float x) {
#if JK_DEVICE
  const int32_t bits = __float_as_int(x);
#else
  int32_t bits;
  memcpy(&bits, &x, sizeof(bits));
#endif
  return bits < 0 ? bits ^ (int32_t)0x7fffffff : bits;
}
JK_FN int64_t total_order_key(double x) {
#if JK_DEVICE
  const int64_t bits = __double_as_longlong(x);
#else
  int64_t bits;
  memcpy(&bits, &x, sizeof(bits));
#endif
  return bits < 0 ? bits ^ (int64_t)0x7fffffffffffffffLL : bits;
}

}  // namespace jk
