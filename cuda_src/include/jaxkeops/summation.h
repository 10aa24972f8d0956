// Summation schemes shared by the CPU and CUDA reductions: which scheme a sum-type reduction
// uses, and the compensated (Kahan) steps. Included by cpu_reductions.h and cuda_reductions.h;
// JK_FN (math.h) makes the functions host-inline or device-inline.
#pragma once

#include "jaxkeops/math.h"

namespace jk {

// How sum-type reductions add their terms: a plain running sum (DIRECT_SUM), sums per tile of
// reduced rows added into the row's total (BLOCK_SUM), or compensated summation of every term
// (KAHAN_SUM).
enum SumScheme { DIRECT_SUM = 0, BLOCK_SUM = 1, KAHAN_SUM = 2 };

// Once a sum is inf or NaN its compensation would be (inf - inf) = NaN, turning the result
// (sum - comp) and every later term into NaN where jnp.sum gives inf: the compensation is reset
// there. A finite sum keeps it.
template <class T> JK_FN T finite_compensation(T sum, T comp) {
  return select(sum - sum == cst<T>(0), comp, cst<T>(0));
}

// sum += x, keeping the rounding error in comp (the compensated sum is sum - comp). T is a
// scalar or a SIMD vector.
template <class T> JK_FN void kahan_add(T& sum, T& comp, T x) {
  T y = x - comp;
  T t = sum + y;
  comp = finite_compensation(t, (t - sum) - y);
  sum = t;
}

// (sum, comp) += (other_sum, other_comp), two compensated sums (each worth sum - comp): the
// rounding error of sum + other_sum is captured exactly (Knuth's two-sum), so merging lanes or
// threads loses nothing even when the sums cancel, where a Kahan step on other_sum would.
template <class T> JK_FN void merge_compensated(T& sum, T& comp, T other_sum, T other_comp) {
  T s = sum + other_sum;
  T b = s - sum;
  T err = (sum - (s - b)) + (other_sum - b);
  sum = s;
  comp = finite_compensation(s, (comp + other_comp) - err);
}

}  // namespace jk
