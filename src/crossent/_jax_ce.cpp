// Softmax cross-entropy of integer labels for JAX on CPU, as XLA FFI handlers:
// crossent_ce (the loss) and crossent_ce_grad (the loss and its closed-form gradient), the
// formulas of crossent.softmax_cross_entropy without options (see _jax_kernel.py, which
// builds this file and registers the handlers).
//
// Logits (..., R, C) f32/f64 and labels (..., R) s32/s64: each leading index is one call of
// the loss (vmap batches arrive that way), its R rows reduced by `reduction` (0 none, 1 mean,
// 2 sum). Per row, with the definition's edge cases:
//   m = max(z) (0 where not finite), s = sum exp(z - m), lse = log(s) + m,
//   loss = c lse - c z_y,  grad = scale c (exp(z - m) / s - onehot(y)),
// where c is 1 for a label in [0, C), 0 for ignore_index (its row read as zeros) and NaN for
// any other label (under jit a NaN is the only error a traced label can raise), and scale is
// 1 / (the number of counted rows) for "mean" (0 when none counts; NaN when a label is bad)
// and 1 otherwise. The gradient keeps exp(z - m) from the sum, so each logit costs one exp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Eight floats in GCC/Clang vector extensions: AVX2 registers where the build enables it,
// pairs of SSE registers otherwise, with no intrinsics to keep per ISA.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int kW = 8;

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }

// Whether any lane of a comparison's mask is set.
inline bool any_lane(v8i mask) {
#if defined(__AVX__)
  return _mm256_movemask_ps(_mm256_castsi256_ps(__m256i(mask))) != 0;
#else
  bool any = false;
  for (int k = 0; k < kW; ++k) any |= mask[k] != 0;
  return any;
#endif
}

// The first k lanes of p, the others `fill`.
inline v8f load_part(const float* p, int64_t k, float fill) {
  v8f v = splat(fill);
  std::memcpy(&v, p, size_t(k) * sizeof(float));
  return v;
}

// x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 in two parts), exp(r) by the Cephes expf
// polynomial (about 1 ulp), times 2^n: as two normal powers 2^(n/2) 2^(n - n/2) when TWO
// (n down to -150: gradual underflow is rounded once, by the last product), else as one (n
// >= -126).
template <bool TWO>
inline v8f exp_reduced(v8f x) {
  // round to nearest by the 1.5 * 2^23 shifter (|x log2 e| < 2^22 here)
  const v8f shifter = splat(12582912.0f);
  const v8f n = (x * splat(1.44269504088896341f) + shifter) - shifter;
  v8f r = x - n * splat(0.693359375f);
  r = r + n * splat(2.12194440e-4f);
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const v8f y = p * (r * r) + (r + splat(1.0f));
  const v8i ni = __builtin_convertvector(n, v8i);
  const v8i bias = {127, 127, 127, 127, 127, 127, 127, 127};
  if constexpr (TWO) {
    const v8i n1 = ni >> 1;
    const v8i b1 = (n1 + bias) << 23, b2 = ((ni - n1) + bias) << 23;
    v8f s1, s2;
    std::memcpy(&s1, &b1, sizeof s1);
    std::memcpy(&s2, &b2, sizeof s2);
    return (y * s1) * s2;
  } else {
    const v8i b = (ni + bias) << 23;
    v8f s1;
    std::memcpy(&s1, &b, sizeof s1);
    return y * s1;
  }
}

// exp(x), about 1 ulp: x clamped to [-104, 89] (exp(-104) rounds to 0 and exp(89) to inf, as
// they should; NaN passes both clamps), x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 in
// two parts), exp(r) by the Cephes expf polynomial, and 2^n applied as two normal powers
// 2^(n/2) 2^(n - n/2), so gradual underflow is rounded once, by the last product.
inline v8f vexp(v8f x) {
  x = x < splat(-104.0f) ? splat(-104.0f) : x;
  x = x > splat(89.0f) ? splat(89.0f) : x;
  return exp_reduced<true>(x);
}

// exp(x) for lanes in [-87.3, 0] or NaN (a softmax's z - max): 2^n is one normal power there,
// and no clamp is needed. Any lane below (a far or masked logit) takes vexp.
inline v8f vexp_nonpositive(v8f x) {
  return any_lane(x < splat(-87.3f)) ? vexp(x) : exp_reduced<false>(x);
}

inline float hmax(v8f v) {
  float m = v[0];
  for (int k = 1; k < kW; ++k) m = v[k] > m ? v[k] : m;
  return m;
}

inline float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// One row of float logits: returns lse and sets *sum = sum exp(z - m); with e != nullptr
// stores exp(z - m) there.
float row_lse(const float* z, int64_t C, float* e, float* sum) {
  v8f vm = splat(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + kW <= C; j += kW) {
    const v8f v = load8(z + j);
    vm = v > vm ? v : vm;  // a NaN makes the sum NaN below, as the definition's max does
  }
  float m = hmax(vm);
  if (j < C) {
    const v8f v = load_part(z + j, C - j, -std::numeric_limits<float>::infinity());
    m = std::max(m, hmax(v));
  }
  // an all -inf row (or one with +inf): shift by 0, as the definition does; z - m may then be
  // positive, which only the clamped exp takes
  const bool finite = std::isfinite(m);
  if (!finite) m = 0.0f;
  const v8f shift = splat(m);
  const auto ex = [finite](v8f x) { return finite ? vexp_nonpositive(x) : vexp(x); };
  v8f acc0 = splat(0.0f), acc1 = splat(0.0f);
  j = 0;
  for (; j + 2 * kW <= C; j += 2 * kW) {
    const v8f e0 = ex(load8(z + j) - shift), e1 = ex(load8(z + j + kW) - shift);
    if (e) {
      store8(e + j, e0);
      store8(e + j + kW, e1);
    }
    acc0 += e0;
    acc1 += e1;
  }
  for (; j + kW <= C; j += kW) {
    const v8f e0 = ex(load8(z + j) - shift);
    if (e) store8(e + j, e0);
    acc0 += e0;
  }
  if (j < C) {
    // padded with -inf, whose exp is the exact 0
    const v8f e0 = vexp(load_part(z + j, C - j, -std::numeric_limits<float>::infinity()) - shift);
    if (e) std::memcpy(e + j, &e0, size_t(C - j) * sizeof(float));
    acc1 += e0;
  }
  *sum = hsum(acc0 + acc1);
  return std::log(*sum) + m;
}

// The same for double logits (scalar: float64 is the accuracy path, not the fast one).
double row_lse(const double* z, int64_t C, double* e, double* sum) {
  double m = -std::numeric_limits<double>::infinity();
  bool nan = false;
  for (int64_t j = 0; j < C; ++j) {
    nan |= std::isnan(z[j]);
    m = z[j] > m ? z[j] : m;
  }
  if (nan || !std::isfinite(m)) m = 0.0;
  double s = 0.0;
  for (int64_t j = 0; j < C; ++j) {
    const double v = std::exp(z[j] - m);
    if (e) e[j] = v;
    s += v;
  }
  *sum = s;
  return std::log(s) + m;
}

// e[j] * a for j in [0, C), in place.
void scale_row(float* e, int64_t C, float a) {
  const v8f va = splat(a);
  int64_t j = 0;
  for (; j + kW <= C; j += kW) store8(e + j, load8(e + j) * va);
  for (; j < C; ++j) e[j] *= a;
}

void scale_row(double* e, int64_t C, double a) {
  for (int64_t j = 0; j < C; ++j) e[j] *= a;
}

struct Shape {
  int64_t groups, R, C;
};

// Rows [r0, r1) of the flattened (groups * R) rows: per-row losses into `rows` (double) and,
// with G, the gradient rows.
template <typename T, typename L>
void rows_impl(const T* Z, const L* Y, const Shape& s, int64_t ignore_index, const double* scale,
               const double* cvals, T* G, double* rows, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* z = Z + r * s.C;
    T* g = G ? G + r * s.C : nullptr;
    const int64_t y = int64_t(Y[r]);
    const double c = cvals[r];
    if (y == ignore_index) {
      // a zero row: lse = log C, loss 0; gradient c scale (1/C - onehot(0)), 0 unless NaN
      rows[r] = 0.0;
      if (g) {
        const T coef = T(c * scale[r / s.R]);
        std::fill(g, g + s.C, coef / T(s.C));
        g[0] = coef / T(s.C) - coef;
      }
      continue;
    }
    const bool bad = y < 0 || y >= s.C;
    T sum;
    const T lse = row_lse(z, s.C, g, &sum);
    const T zy = bad ? z[0] : z[y];
    const T ct = T(c);
    rows[r] = double(ct * lse - ct * zy);
    if (g) {
      const T coef = T(c * scale[r / s.R]);
      scale_row(g, s.C, coef / sum);  // softmax = e / sum, times the row's factor
      g[bad ? 0 : y] -= coef;
    }
  }
}

// Run f(r0, r1) over [0, n) rows on XLA's intra-op pool when the work is large enough to
// repay a task (about 20 us of exp); else on the calling thread.
template <typename F>
void parallel_rows(ffi::ThreadPool* pool, int64_t n, int64_t C, F f) {
  const int64_t work = n * C;
  int64_t tasks = pool ? std::min<int64_t>(std::max<int64_t>(pool->num_threads(), 1), n) : 1;
  tasks = std::min<int64_t>(tasks, std::max<int64_t>(1, work / (1 << 16)));
  if (tasks <= 1) {
    f(0, n);
    return;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int64_t> left{tasks - 1};
  const int64_t per = (n + tasks - 1) / tasks;
  for (int64_t t = 1; t < tasks; ++t) {
    const int64_t a = t * per, b = std::min(n, a + per);
    pool->Schedule([&, a, b] {
      if (a < b) f(a, b);
      if (left.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_one();
      }
    });
  }
  f(0, std::min(n, per));
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return left.load() == 0; });
}

template <typename T, typename L>
ffi::Error run(ffi::ThreadPool* pool, const T* Z, const L* Y, const Shape& s, int64_t reduction,
               int64_t ignore_index, T* out, T* G) {
  const int64_t n = s.groups * s.R;
  // per row: c (1 counted, 0 ignored, NaN bad); per group: the rows counted (NaN when a
  // label is bad) and the gradient's scale
  std::unique_ptr<double[]> cvals(new double[size_t(n)]), rows(new double[size_t(n)]);
  std::unique_ptr<double[]> counted(new double[size_t(s.groups)]);
  std::unique_ptr<double[]> scale(new double[size_t(s.groups)]);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t gi = 0; gi < s.groups; ++gi) {
    double k = 0.0;
    for (int64_t r = gi * s.R; r < (gi + 1) * s.R; ++r) {
      const int64_t y = int64_t(Y[r]);
      cvals[r] = y == ignore_index ? 0.0 : (y >= 0 && y < s.C ? 1.0 : nan);
      k += cvals[r];
    }
    counted[gi] = k;
    // "mean" divides by the counted rows: 0 when none counts (NaN stays NaN)
    scale[gi] = reduction != 1 ? 1.0 : (k == 0.0 ? 0.0 : 1.0 / k);
  }
  parallel_rows(pool, n, s.C, [&](int64_t r0, int64_t r1) {
    rows_impl<T, L>(Z, Y, s, ignore_index, scale.get(), cvals.get(), G, rows.get(), r0, r1);
  });
  if (reduction == 0) {
    for (int64_t r = 0; r < n; ++r) out[r] = T(rows[r]);
    return ffi::Error::Success();
  }
  for (int64_t gi = 0; gi < s.groups; ++gi) {
    double total = 0.0;
    for (int64_t r = gi * s.R; r < (gi + 1) * s.R; ++r) total += rows[r];
    // the definition's safe division: a zero denominator gives 0
    const double k = counted[gi];
    out[gi] = T(reduction == 2 ? total : (k == 0.0 ? 0.0 : total / k));
  }
  return ffi::Error::Success();
}

ffi::Error dispatch(ffi::ThreadPool* pool, ffi::AnyBuffer logits, ffi::AnyBuffer labels,
                    int64_t reduction, int64_t ignore_index, ffi::AnyBuffer* out,
                    ffi::AnyBuffer* grad) {
  const auto dims = logits.dimensions();
  if (dims.size() < 2 || labels.dimensions().size() != dims.size() - 1)
    return ffi::Error::InvalidArgument("crossent_ce: logits (..., R, C), labels (..., R)");
  Shape s{1, dims[dims.size() - 2], dims[dims.size() - 1]};
  for (size_t k = 0; k + 2 < dims.size(); ++k) s.groups *= dims[k];
  if (reduction < 0 || reduction > 2)
    return ffi::Error::InvalidArgument("crossent_ce: reduction must be 0, 1 or 2");
  const auto lt = labels.element_type();
  const auto ft = logits.element_type();
  if (lt != ffi::DataType::S32 && lt != ffi::DataType::S64)
    return ffi::Error::InvalidArgument("crossent_ce: labels must be s32 or s64");
  auto go = [&](auto t, auto l) {
    using T = decltype(t);
    using L = decltype(l);
    return run<T, L>(pool, static_cast<const T*>(logits.untyped_data()),
                     static_cast<const L*>(labels.untyped_data()), s, reduction, ignore_index,
                     static_cast<T*>(out->untyped_data()),
                     grad ? static_cast<T*>(grad->untyped_data()) : nullptr);
  };
  const bool l64 = lt == ffi::DataType::S64;
  if (ft == ffi::DataType::F32) return l64 ? go(float(), int64_t()) : go(float(), int32_t());
  if (ft == ffi::DataType::F64) return l64 ? go(double(), int64_t()) : go(double(), int32_t());
  return ffi::Error::InvalidArgument("crossent_ce: logits must be f32 or f64");
}

ffi::Error ce(ffi::ThreadPool pool, ffi::AnyBuffer logits, ffi::AnyBuffer labels,
              int64_t reduction, int64_t ignore_index, ffi::Result<ffi::AnyBuffer> out) {
  return dispatch(&pool, logits, labels, reduction, ignore_index, &*out, nullptr);
}

ffi::Error ce_grad(ffi::ThreadPool pool, ffi::AnyBuffer logits, ffi::AnyBuffer labels,
                   int64_t reduction, int64_t ignore_index, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Result<ffi::AnyBuffer> grad) {
  return dispatch(&pool, logits, labels, reduction, ignore_index, &*out, &*grad);
}

// The handlers' arguments, attributes and the loss result; crossent_ce_grad adds the gradient.
auto ce_binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Attr<int64_t>("reduction")
      .Attr<int64_t>("ignore_index")
      .Ret<ffi::AnyBuffer>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CrossentCe, ce, ce_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CrossentCeGrad, ce_grad, ce_binding().Ret<ffi::AnyBuffer>());
