// Vector helpers shared by crossent's CPU kernels (softmax rows, element-wise sigmoid losses, KL and
// multi-margin rows): conversion of half-precision blocks to the accumulation type and
// back, block reductions, and the vectorised exp / tanh. Everything is inline and lives in an
// anonymous namespace, so each kernel file gets its own copy.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

// Inlined into the row loops even where the compiler would call them: the exp and the row's
// exp-sum are the kernels' inner work, and a call spills the polynomial's constants to the
// stack (measured 4-6% of a 256 x 10 and of a 4096 x 1000 call on AVX2).
#if defined(__GNUC__)
#define CROSSENT_HOT __attribute__((always_inline))
#else
#define CROSSENT_HOT
#endif

namespace {

using at::vec::Vectorized;

// Rows handed to one thread at a time: at least ~32k elements of work, so small batches run on the
// calling thread instead of paying the pool's wake-up (tens of microseconds) for microseconds of work.
constexpr int64_t kParallelWork = 32768;

inline int64_t row_grain(int64_t width) {
  return std::max<int64_t>(1, kParallelWork / std::max<int64_t>(width, 1));
}

template <typename T>
constexpr bool is_reduced_v =
    std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

// Convert n values of T into the accumulation type A (float for fp32/fp16/bf16, double).
template <typename T, typename A>
inline void load_acc(const T* src, A* dst, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    std::copy(src, src + n, dst);
  } else {
    static_assert(is_reduced_v<T> && std::is_same_v<A, float>);
    using VT = Vectorized<T>;
    using VF = Vectorized<float>;
    int64_t i = 0;
    for (; i + VT::size() <= n; i += VT::size()) {
      auto [a, b] = at::vec::convert_to_float<T>(VT::loadu(src + i));
      a.store(dst + i);
      b.store(dst + i + VF::size());
    }
    for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }
}

// Store n accumulation-type values as T (round to nearest even, like Tensor.to()).
template <typename T, typename A>
inline void store_acc(const A* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    std::copy(src, src + n, dst);
  } else {
    using VT = Vectorized<T>;
    using VF = Vectorized<float>;
    int64_t i = 0;
    for (; i + VT::size() <= n; i += VT::size()) {
      at::vec::convert_from_float<T>(VF::loadu(src + i), VF::loadu(src + i + VF::size()))
          .store(dst + i);
    }
    for (; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// Block maximum. NaN need not propagate here: a NaN logit makes its exp, hence the row's sum,
// lse, loss and gradient NaN anyway (as in PyTorch), so the plain max instruction will do.
template <typename A>
inline Vectorized<A> vmax(const Vectorized<A>& a, const Vectorized<A>& b) {
  return at::vec::maximum(a, b);
}

#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> vmax<float>(const Vectorized<float>& a, const Vectorized<float>& b) {
  return Vectorized<float>(_mm512_max_ps(__m512(a), __m512(b)));
}
#endif

template <typename A>
inline A block_max(const A* z, int64_t n) {
  using V = Vectorized<A>;
  const A ninf = -std::numeric_limits<A>::infinity();
  V a0(ninf), a1(ninf), a2(ninf), a3(ninf);
  int64_t i = 0;
  for (; i + 4 * V::size() <= n; i += 4 * V::size()) {
    a0 = vmax<A>(a0, V::loadu(z + i));
    a1 = vmax<A>(a1, V::loadu(z + i + V::size()));
    a2 = vmax<A>(a2, V::loadu(z + i + 2 * V::size()));
    a3 = vmax<A>(a3, V::loadu(z + i + 3 * V::size()));
  }
  for (; i + V::size() <= n; i += V::size()) a0 = vmax<A>(a0, V::loadu(z + i));
  A r = at::vec::vec_reduce_all<A>([](V& x, V& y) { return vmax<A>(x, y); },
                                   vmax<A>(vmax<A>(a0, a1), vmax<A>(a2, a3)));
  for (; i < n; ++i) r = std::max(r, z[i]);
  return r;
}

// Vectorised exp and tanh (the softcap's): Sleef's in general (exp within 1 ulp); float lanes
// on AVX-512 (exp, tanh) and AVX2 (exp) have the inline versions below, which avoid a library
// call per vector: at 256 x 10 the call was a third of the kernel's time on AVX2.
template <typename A>
inline Vectorized<A> vexp(const Vectorized<A>& x) {
  return x.exp();
}
template <typename A>
inline Vectorized<A> vtanh(const Vectorized<A>& x) {
  return x.tanh();
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// The inline exps' shared core, on x already clamped: x = n ln2 + r with |r| <= ln2/2
// (Cody-Waite, ln2 in two parts), exp(r) by the Cephes expf polynomial (about 1 ulp); returns
// exp(r) and sets n, which each ISA applies as 2^n its own way.
CROSSENT_HOT inline Vectorized<float> expf_reduced(const Vectorized<float>& x,
                                                Vectorized<float>& n) {
  using V = Vectorized<float>;
  n = (x * V(1.44269504088896341f)).round();
  V r = at::vec::fmadd(n, V(-0.693359375f), x);
  r = at::vec::fmadd(n, V(2.12194440e-4f), r);
  V p(1.9875691500e-4f);
  p = at::vec::fmadd(p, r, V(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, V(8.3334519073e-3f));
  p = at::vec::fmadd(p, r, V(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, V(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, V(5.0000001201e-1f));
  return at::vec::fmadd(p, r * r, r + V(1.0f));
}
#endif

#if defined(CPU_CAPABILITY_AVX512)
// exp: expf_reduced, then vscalefps for 2^n, which rounds gradual underflow correctly. Inputs
// are clamped at -104 (exp < 2^-150 rounds to 0); NaN passes through (vmaxps returns its
// second operand when either is NaN).
template <>
CROSSENT_HOT inline Vectorized<float> vexp<float>(const Vectorized<float>& xv) {
  Vectorized<float> n;
  const Vectorized<float> y =
      expf_reduced(Vectorized<float>(_mm512_max_ps(_mm512_set1_ps(-104.0f), __m512(xv))), n);
  return Vectorized<float>(_mm512_scalef_ps(__m512(y), __m512(n)));
}

// tanh, built on vexp: for |u| < 0.625 the odd polynomial u + u^3 Q(u^2) (Q a least-squares
// fit on Chebyshev nodes, < 1 ulp there), above it 1 - 2 / (exp(2|u|) + 1) (no cancellation
// once tanh > 0.55; ~2 ulp); |u| is clamped at 9 where tanh rounds to 1. About 5x faster than
// Sleef.
template <>
inline Vectorized<float> vtanh<float>(const Vectorized<float>& xv) {
  const __m512 x = __m512(xv);
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u));
  const __m512 ax0 = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
  const __m512 ax = _mm512_min_ps(_mm512_set1_ps(9.0f), ax0);  // NaN stays NaN
  const __m512 s = _mm512_mul_ps(ax, ax);
  __m512 q = _mm512_set1_ps(-0.0057189627550542355f);
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(0.020653124898672104f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-0.05374465882778168f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(0.13331513106822968f));
  q = _mm512_fmadd_ps(q, s, _mm512_set1_ps(-0.3333328664302826f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(ax, s), q, ax);
  const __m512 e = __m512(vexp<float>(Vectorized<float>(_mm512_add_ps(ax, ax))));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 large =
      _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
  const __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  const __m512 r = _mm512_mask_blend_ps(is_small, large, small);
  const __m512i xs = _mm512_and_si512(_mm512_castps_si512(x), sign);
  return Vectorized<float>(_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), xs)));
}
#endif

#if defined(CPU_CAPABILITY_AVX2) && !defined(CPU_CAPABILITY_AVX512)
// exp on AVX2: expf_reduced, then (without vscalefps) 2^n as two normal powers
// 2^(n/2) 2^(n - n/2) (n in [-150, 129]), so that gradual underflow is rounded once, by the
// last product. Inputs are clamped to [-104, 89] (exp(89) overflows to inf, as it
// should); NaN passes through both clamps (vmaxps / vminps return their second operand).
template <>
CROSSENT_HOT inline Vectorized<float> vexp<float>(const Vectorized<float>& xv) {
  Vectorized<float> n;
  const Vectorized<float> y = expf_reduced(
      Vectorized<float>(_mm256_min_ps(_mm256_set1_ps(89.0f),
                                      _mm256_max_ps(_mm256_set1_ps(-104.0f), __m256(xv)))),
      n);
  const __m256i ni = _mm256_cvtps_epi32(__m256(n));
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, n1), bias), 23));
  return Vectorized<float>(_mm256_mul_ps(_mm256_mul_ps(__m256(y), s1), s2));
}
#endif

// sum_j exp(z_j - m), optionally storing the exponentials.
template <typename A, bool STORE>
CROSSENT_HOT inline A exp_sum(const A* z, A m, A* out, int64_t n) {
  using V = Vectorized<A>;
  const V vm(m);
  V acc0(A(0)), acc1(A(0));
  int64_t i = 0;
  for (; i + 2 * V::size() <= n; i += 2 * V::size()) {
    V e0 = vexp<A>(V::loadu(z + i) - vm);
    V e1 = vexp<A>(V::loadu(z + i + V::size()) - vm);
    if constexpr (STORE) {
      e0.store(out + i);
      e1.store(out + i + V::size());
    }
    acc0 = acc0 + e0;
    acc1 = acc1 + e1;
  }
  for (; i + V::size() <= n; i += V::size()) {
    V e = vexp<A>(V::loadu(z + i) - vm);
    if constexpr (STORE) e.store(out + i);
    acc0 = acc0 + e;
  }
  if (i < n && n >= V::size()) {
    // The tail as the block's last full vector, which overlaps what the loops summed (10
    // classes on AVX2: lanes 2..7 again, then 8 and 9): the overlapped lanes are zeroed by a
    // blend and keep the exponentials already stored. No stack copy: that was a fifth of a
    // 256 x 10 call.
    const int64_t k = n - i, o = n - V::size();
    const V keep = V::arange(A(0), A(1)) >= V(A(V::size() - k));
    const V e = V::blendv(V(A(0)), vexp<A>(V::loadu(z + o) - vm), keep);
    if constexpr (STORE) V::blendv(V::loadu(out + o), e, keep).store(out + o);
    acc1 = acc1 + e;
  } else if (i < n) {
    // A block narrower than a vector, as one vector through a stack copy: 10 scalar exps
    // cost more than the rest of its row. The unused lanes hold m (exp(0) = 1) and are zeroed
    // by a blend: exp(-inf) would go through the denormal range, which costs a microcode
    // assist per lane.
    const int64_t k = n - i;
    alignas(64) A tmp[V::size()];
    for (int64_t j = 0; j < V::size(); ++j) tmp[j] = j < k ? z[i + j] : m;
    V e = V::set(V(A(0)), vexp<A>(V::loadu(tmp) - vm), k);
    if constexpr (STORE) {
      e.store(tmp);
      std::copy(tmp, tmp + k, out + i);
    }
    acc1 = acc1 + e;
  }
  return at::vec::vec_reduce_all<A>([](V& x, V& y) { return x + y; }, acc0 + acc1);
}

template <typename A>
inline A block_sum(const A* z, int64_t n) {
  using V = Vectorized<A>;
  V acc(A(0));
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) acc = acc + V::loadu(z + i);
  A r = at::vec::vec_reduce_all<A>([](V& x, V& y) { return x + y; }, acc);
  for (; i < n; ++i) r += z[i];
  return r;
}

// sum_j s * z_j: scaled before summing, so logits near the float limit do not overflow a
// sum whose scaled value is representable (the smoothing term needs eps / V * sum z).
template <typename A>
inline A block_scaled_sum(const A* z, A s, int64_t n) {
  using V = Vectorized<A>;
  const V vs(s);
  V acc(A(0));
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) acc = at::vec::fmadd(V::loadu(z + i), vs, acc);
  A r = at::vec::vec_reduce_all<A>([](V& x, V& y) { return x + y; }, acc);
  for (; i < n; ++i) r += z[i] * s;
  return r;
}

template <typename A>
inline A block_dot(const A* a, const A* b, int64_t n) {
  using V = Vectorized<A>;
  V acc(A(0));
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) {
    acc = at::vec::fmadd(V::loadu(a + i), V::loadu(b + i), acc);
  }
  A r = at::vec::vec_reduce_all<A>([](V& x, V& y) { return x + y; }, acc);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

}  // namespace
