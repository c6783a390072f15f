// crossent row kernel: fused softmax cross-entropy over the rows of a (R, V) logits matrix.
//
// Built at first use by crossent/torch/_ext.py (plain g++, no ninja, no pybind) and registered
// as the torch ops crossent_ext::rows (the per-row contract of _rows.py), crossent_ext::fused
// (label check + mean denominators + rows + reduction in one call, for cross_entropy) and
// crossent_ext::advise_hugepage.
//
// Per row, with z = softcap * tanh(x / softcap) (or z = x), the kernel makes ONE exp per logit:
//   pass A, block by block (kBlock values, L1-resident): block max, running max m with the
//     running sum rescaled by one scalar exp when m grows, e_j = exp(z_j - m_block) stored in
//     a per-thread fp32 (fp64 for double) scratch row, plus the per-row scalar accumulators
//     (z_y, sum_c w_c z_c for label smoothing, sum_c w_c t_c and sum_c w_c t_c z_c for
//     probability targets);
//   lse = m + log(sum);
//   pass B (only when a gradient buffer is given): g_j = f_block * e_j - c * w_j [- q_j]
//     [- b at the target], times the softcap chain rule (1 - tanh^2), converted to the output
//     dtype and stored. f_block = a * exp(m_block - m) / sum is one scalar exp per block.
// The scratch row is V values per thread: it stays in L2 for the vocabularies we care about,
// so DRAM sees one read of the logits and one write of the gradient. On AVX-512 the exp and
// the tanh are inline polynomial versions (about 1-2 ulp), elsewhere ATen's Sleef ones.
// Rows are split across threads with at::parallel_for (torch's OpenMP pool).

#include "_closed_form_node.h"
#include "_vec.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace {

using at::vec::Vectorized;

// 2048 floats = 8 KiB: a block is read from DRAM once (max) and again from L1 (exp).
constexpr int64_t kBlock = 2048;

// z <- cap * tanh(z / cap), keeping tanh in t (when t is not null) for the chain rule.
template <typename A>
inline void apply_softcap(A* z, A* t, A cap, int64_t n) {
  using V = Vectorized<A>;
  const V vc(cap), vic(A(1) / cap);
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) {
    V th = vtanh<A>(V::loadu(z + i) * vic);
    if (t) th.store(t + i);
    (th * vc).store(z + i);
  }
  for (; i < n; ++i) {
    A th = std::tanh(z[i] / cap);
    if (t) t[i] = th;
    z[i] = th * cap;
  }
}

template <typename A>
struct Opts {
  int64_t V;
  A one_m_eps;  // 1 - label_smoothing
  A eps_c;      // label_smoothing / V
  bool has_eps;
  A zc;         // z-loss coefficient
  A cap;        // softcap (used when CAP)
  const A* w;   // class weights or nullptr
  const A* ew;  // eps / V * w_c (with weights and label smoothing) or nullptr
  A wsum;       // sum_c w_c (V without weights)
  int64_t ignore_index;
};

// q_j = w_j * ((1 - eps) * t_j + eps / V): the effective target mass of a probability target.
template <typename T, typename A>
inline void prob_block(const T* p, A* q, const Opts<A>& o, int64_t j0, int64_t n) {
  load_acc<T, A>(p, q, n);
  using V = Vectorized<A>;
  const V a(o.one_m_eps), b(o.eps_c);
  int64_t i = 0;
  if (o.w) {
    for (; i + V::size() <= n; i += V::size())
      (at::vec::fmadd(V::loadu(q + i), a, b) * V::loadu(o.w + j0 + i)).store(q + i);
    for (; i < n; ++i) q[i] = (q[i] * o.one_m_eps + o.eps_c) * o.w[j0 + i];
  } else {
    for (; i + V::size() <= n; i += V::size())
      at::vec::fmadd(V::loadu(q + i), a, b).store(q + i);
    for (; i < n; ++i) q[i] = q[i] * o.one_m_eps + o.eps_c;
  }
}

template <typename T, typename A, bool GRAD, bool CAP, bool PROB>
void run_rows(const at::Tensor& logits, const at::Tensor& target, T* G, int64_t gstride,
              const A* gs, int64_t gs_step, const A* zs, int64_t zs_step, const Opts<A>& o,
              A* loss, A* zl, A* lse_out) {
  using V = Vectorized<A>;
  const int64_t R = logits.size(0);
  const int64_t Vn = o.V;
  const T* X = logits.const_data_ptr<T>();
  const int64_t xs = logits.stride(0);
  const int64_t* Y = PROB ? nullptr : target.const_data_ptr<int64_t>();
  const T* P = PROB ? target.const_data_ptr<T>() : nullptr;
  const int64_t ps = PROB ? target.stride(0) : 0;
  const int64_t nb = (Vn + kBlock - 1) / kBlock;
  const A ninf = -std::numeric_limits<A>::infinity();
  constexpr bool kDirect = std::is_same_v<T, A> && !CAP;  // read logits in place

  at::parallel_for(0, R, row_grain(Vn), [&](int64_t r0, int64_t r1) {
    std::vector<A> buf(kDirect ? 0 : kBlock);
    std::vector<A> e(GRAD ? Vn : 0);
    std::vector<A> t(GRAD && CAP ? Vn : 0);
    std::vector<A> q(PROB ? kBlock : 0);
    std::vector<A> mb(nb);
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = X + r * xs;
      int64_t y = 0;
      if constexpr (!PROB) {
        y = Y[r];
        if (y == o.ignore_index) {
          loss[r] = A(0);
          zl[r] = A(0);
          lse_out[r] = A(0);
          if constexpr (GRAD) std::fill(G + r * gstride, G + r * gstride + Vn, T(0));
          continue;
        }
        TORCH_CHECK(y >= 0 && y < Vn, "crossent: target ", y, " is out of range [0, ", Vn,
                    ") and is not ignore_index=", o.ignore_index);
      }
      A m = ninf, s = A(0), zy = A(0), sz = A(0), tw = A(0), twz = A(0);
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t j0 = b * kBlock;
        const int64_t n = std::min(kBlock, Vn - j0);
        const A* z;
        if constexpr (kDirect) {
          z = reinterpret_cast<const A*>(x + j0);
        } else {
          load_acc<T, A>(x + j0, buf.data(), n);
          if constexpr (CAP) apply_softcap<A>(buf.data(), GRAD ? t.data() + j0 : nullptr, o.cap, n);
          z = buf.data();
        }
        const A bm = block_max<A>(z, n);
        if (bm > m) {
          // rescale the mass so far (none before the first block: a row of one block, the
          // small-C case, makes no scalar exp)
          if (b > 0) s *= std::exp(m - bm);
          m = bm;
        }
        mb[b] = m;
        if (m == ninf) {  // every value so far is -inf: exp would give NaN, the mass is 0
          if constexpr (GRAD) std::fill(e.data() + j0, e.data() + j0 + n, A(0));
        } else {
          s += exp_sum<A, GRAD>(z, m, GRAD ? e.data() + j0 : nullptr, n);
        }
        if constexpr (!PROB) {
          if (y >= j0 && y < j0 + n) zy = z[y - j0];
          // sz = eps / V * sum_c w_c z_c, each term scaled first (see block_scaled_sum)
          if (o.has_eps) {
            sz += o.ew ? block_dot<A>(o.ew + j0, z, n) : block_scaled_sum<A>(z, o.eps_c, n);
          }
        } else {
          prob_block<T, A>(P + r * ps + j0, q.data(), o, j0, n);
          tw += block_sum<A>(q.data(), n);
          twz += block_dot<A>(q.data(), z, n);
        }
      }
      const A L = m + std::log(s);
      A main;
      A coef_p, coef_w = A(0), coef_y = A(0);
      const A g_s = GRAD ? gs[r * gs_step] : A(0);
      if constexpr (!PROB) {
        const A wy = o.w ? o.w[y] : A(1);
        // Each product before the difference: logits near the float limit make lse - z_y or
        // wsum * lse overflow where the loss itself is representable.
        const A a = o.one_m_eps * wy;
        main = a * L - a * zy;
        if (o.has_eps) main += (o.eps_c * o.wsum) * L - sz;
        coef_p = g_s * (o.one_m_eps * wy + o.eps_c * o.wsum);
        coef_w = g_s * o.eps_c;
        coef_y = g_s * o.one_m_eps * wy;
      } else {
        main = tw * L - twz;
        coef_p = g_s * tw;
      }
      loss[r] = main;
      zl[r] = o.zc * L * L;
      lse_out[r] = L;
      if constexpr (GRAD) {
        coef_p += zs[r * zs_step] * A(2) * o.zc * L;
        const A inv = coef_p / s;
        T* g = G + r * gstride;
        const V vcw(coef_w), vone(A(1)), vgs(g_s);
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t j0 = b * kBlock;
          const int64_t n = std::min(kBlock, Vn - j0);
          const A* eb = e.data() + j0;
          // Same dtype: write the gradient straight into the output; otherwise finish the
          // block in fp32 (over the exponentials, in L1) and round once when storing.
          A* dst;
          if constexpr (std::is_same_v<T, A>) {
            dst = reinterpret_cast<A*>(g + j0);
          } else {
            dst = e.data() + j0;
          }
          // a block whose running max is the row's needs no rescaling (exp(0) = 1 exactly)
          const A f = mb[b] == ninf ? A(0) : mb[b] == m ? inv : inv * std::exp(mb[b] - m);
          const V vf(f);
          if constexpr (PROB) prob_block<T, A>(P + r * ps + j0, q.data(), o, j0, n);
          int64_t i = 0;
          for (; i + V::size() <= n; i += V::size()) {
            V gv = V::loadu(eb + i) * vf;
            if constexpr (PROB) {
              gv = gv - vgs * V::loadu(q.data() + i);
            } else {
              if (o.has_eps) gv = gv - (o.w ? vcw * V::loadu(o.w + j0 + i) : vcw);
            }
            if constexpr (CAP) {
              const V th = V::loadu(t.data() + j0 + i);
              gv = gv * (vone - th * th);
            }
            gv.store(dst + i);
          }
          for (; i < n; ++i) {
            A gv = eb[i] * f;
            if constexpr (PROB) {
              gv -= g_s * q[i];
            } else {
              if (o.has_eps) gv -= coef_w * (o.w ? o.w[j0 + i] : A(1));
            }
            if constexpr (CAP) gv *= A(1) - t[j0 + i] * t[j0 + i];
            dst[i] = gv;
          }
          if constexpr (!PROB) {
            if (y >= j0 && y < j0 + n) {
              A d = coef_y;
              if constexpr (CAP) d *= A(1) - t[y] * t[y];
              dst[y - j0] -= d;
            }
          }
          if constexpr (!std::is_same_v<T, A>) store_acc<T, A>(dst, g + j0, n);
        }
      }
    }
  });
}

template <typename T, typename A>
void dispatch_flags(bool grad, bool cap, bool prob, const at::Tensor& logits,
                    const at::Tensor& target, T* G, int64_t gstride, const A* gs, int64_t gsst,
                    const A* zs, int64_t zsst, const Opts<A>& o, A* loss, A* zl, A* lse) {
#define CROSSENT_RUN(GR, CA, PR) \
  run_rows<T, A, GR, CA, PR>(logits, target, G, gstride, gs, gsst, zs, zsst, o, loss, zl, lse)
  if (grad) {
    if (cap) {
      if (prob) CROSSENT_RUN(true, true, true); else CROSSENT_RUN(true, true, false);
    } else {
      if (prob) CROSSENT_RUN(true, false, true); else CROSSENT_RUN(true, false, false);
    }
  } else {
    if (cap) {
      if (prob) CROSSENT_RUN(false, true, true); else CROSSENT_RUN(false, true, false);
    } else {
      if (prob) CROSSENT_RUN(false, false, true); else CROSSENT_RUN(false, false, false);
    }
  }
#undef CROSSENT_RUN
}

void check_inputs(const at::Tensor& logits, const at::Tensor& target,
                  const std::optional<at::Tensor>& grad_out) {
  TORCH_CHECK(logits.dim() == 2, "crossent rows: logits must be 2-D");
  TORCH_CHECK(logits.size(1) == 0 || logits.stride(1) == 1,
              "crossent rows: logits rows must be contiguous");
  const int64_t R = logits.size(0), Vn = logits.size(1);
  if (at::isFloatingType(target.scalar_type())) {
    TORCH_CHECK(target.sizes() == logits.sizes() && target.scalar_type() == logits.scalar_type()
                    && (Vn == 0 || target.stride(1) == 1),
                "crossent rows: probability targets must match logits (shape, dtype, rows)");
  } else {
    TORCH_CHECK(target.dim() == 1 && target.size(0) == R &&
                    target.scalar_type() == at::kLong && target.is_contiguous(),
                "crossent rows: class targets must be a contiguous int64 vector of length R");
  }
  if (grad_out.has_value() && grad_out->defined()) {
    TORCH_CHECK(grad_out->sizes() == logits.sizes() &&
                    grad_out->scalar_type() == logits.scalar_type() &&
                    (Vn == 0 || grad_out->stride(1) == 1),
                "crossent rows: grad_out must match logits (shape, dtype, contiguous rows)");
  }
}

// Class indices in [0, V) or ignore_index, checked before anything is written (the gradient
// may overwrite the logits). Raises ValueError in Python.
void check_labels(const at::Tensor& target, int64_t Vn, int64_t ignore_index) {
  const int64_t* y = target.const_data_ptr<int64_t>();
  const int64_t R = target.numel();
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  bool bad = false;
  for (int64_t r = 0; r < R; ++r) {
    lo = std::min(lo, y[r]);
    hi = std::max(hi, y[r]);
    bad |= (y[r] < 0 || y[r] >= Vn) && y[r] != ignore_index;
  }
  TORCH_CHECK_VALUE(!bad, "target must hold class indices in [0, ", Vn, ") or ignore_index=",
                    ignore_index, ", got values in [", lo, ", ", hi, "]");
}

// Run the row kernel for any logits dtype; gp/zp are the gradient scales (step 0: scalar).
template <typename T, typename A>
void rows_impl(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& w,
               const std::optional<at::Tensor>& grad_out, const A* gp, int64_t gst,
               const A* zp, int64_t zst, double label_smoothing, double z_loss, double softcap,
               int64_t ignore_index, A* loss, A* zl, A* lse) {
  const int64_t Vn = logits.size(1);
  const bool grad = grad_out.has_value() && grad_out->defined();
  Opts<A> o;
  o.V = Vn;
  o.one_m_eps = A(1) - A(label_smoothing);
  o.eps_c = A(label_smoothing) / A(Vn);
  o.has_eps = label_smoothing > 0;
  o.zc = A(z_loss);
  o.cap = A(softcap);
  o.ignore_index = ignore_index;
  o.w = w.defined() ? w.const_data_ptr<A>() : nullptr;
  at::Tensor ew;
  if (w.defined() && o.has_eps) ew = (w * (label_smoothing / double(Vn))).contiguous();
  o.ew = ew.defined() ? ew.const_data_ptr<A>() : nullptr;
  o.wsum = w.defined() ? w.sum().item<A>() : A(Vn);
  T* G = grad ? grad_out->data_ptr<T>() : nullptr;
  const int64_t gstride = grad ? grad_out->stride(0) : 0;
  dispatch_flags<T, A>(grad, softcap > 0, at::isFloatingType(target.scalar_type()), logits,
                       target, G, gstride, gp, gst, zp, zst, o, loss, zl, lse);
}

at::ScalarType acc_type_of(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor weight_acc(const std::optional<at::Tensor>& weight, at::ScalarType acc, int64_t Vn) {
  if (!weight.has_value() || !weight->defined()) return at::Tensor();
  at::Tensor w = weight->to(acc).contiguous();
  TORCH_CHECK(w.dim() == 1 && w.size(0) == Vn, "crossent rows: weight must be (V,)");
  return w;
}

// The _rows contract: per-row loss, z-loss and lse; the gradient times per-row or scalar
// scales into grad_out when given.
std::tuple<at::Tensor, at::Tensor, at::Tensor> rows(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& grad_out, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& z_scale, double label_smoothing, double z_loss,
    double softcap, int64_t ignore_index) {
  check_inputs(logits, target, grad_out);
  const int64_t R = logits.size(0), Vn = logits.size(1);
  const bool grad = grad_out.has_value() && grad_out->defined();
  const auto acc = acc_type_of(logits);
  auto opts = logits.options().dtype(acc);
  at::Tensor loss = at::empty({R}, opts), zl = at::empty({R}, opts), lse = at::empty({R}, opts);
  if (R == 0 || Vn == 0) return {loss.zero_(), zl.zero_(), lse.zero_()};
  if (!at::isFloatingType(target.scalar_type())) check_labels(target, Vn, ignore_index);
  at::Tensor gs, zs;
  if (grad) {
    TORCH_CHECK(grad_scale.has_value() && z_scale.has_value(),
                "crossent rows: grad_scale and z_scale are required with grad_out");
    gs = grad_scale->to(acc).contiguous();
    zs = z_scale->to(acc).contiguous();
    TORCH_CHECK(gs.numel() == 1 || gs.numel() == R, "crossent rows: grad_scale size");
    TORCH_CHECK(zs.numel() == 1 || zs.numel() == R, "crossent rows: z_scale size");
  }
  const at::Tensor w = weight_acc(weight, acc, Vn);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "crossent_rows", [&] {
        using T = scalar_t;
        using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
        rows_impl<T, A>(logits, target, w, grad_out, grad ? gs.const_data_ptr<A>() : nullptr,
                        grad && gs.numel() > 1 ? 1 : 0,
                        grad ? zs.const_data_ptr<A>() : nullptr, grad && zs.numel() > 1 ? 1 : 0,
                        label_smoothing, z_loss, softcap, ignore_index, loss.data_ptr<A>(),
                        zl.data_ptr<A>(), lse.data_ptr<A>());
      });
  return {loss, zl, lse};
}

// Everything crossent.torch.cross_entropy needs on CPU in one call (a few microseconds of
// dispatch instead of a dozen small ops): label check, the mean's denominators, the rows,
// the reduction. reduction: 0 none, 1 mean, 2 sum. Returns (loss, z part) in the logits'
// dtype (the accumulation dtype with acc_out); the mean divides the main term by
// sum_i w[y_i] over non-ignored rows (PyTorch), the z-loss by their count (all rows for
// probability targets); no counted row gives 0, counted rows whose weights sum to 0 raise.
std::tuple<at::Tensor, at::Tensor> fused(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& grad_out, double label_smoothing, double z_loss,
    double softcap, int64_t ignore_index, int64_t reduction, bool acc_out) {
  check_inputs(logits, target, grad_out);
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "crossent fused: bad reduction code");
  const int64_t R = logits.size(0), Vn = logits.size(1);
  const bool prob = at::isFloatingType(target.scalar_type());
  const auto acc = acc_type_of(logits);
  const at::Tensor w = weight_acc(weight, acc, Vn);
  if (!prob && Vn > 0) check_labels(target, Vn, ignore_index);
  at::Tensor out, zout;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "crossent_fused", [&] {
        using T = scalar_t;
        using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
        // denominators
        double den = double(R), zden = double(R);
        if (!prob) {
          const int64_t* y = target.const_data_ptr<int64_t>();
          const A* wp = w.defined() ? w.const_data_ptr<A>() : nullptr;
          double count = 0, wsum = 0;
          for (int64_t r = 0; r < R; ++r) {
            if (y[r] == ignore_index) continue;
            count += 1;
            wsum += wp ? double(wp[y[r]]) : 1.0;
          }
          den = wsum;
          zden = count;
          // Counted rows whose weights sum to 0 (negative or zero weights) leave the weighted
          // mean undefined: refuse before anything is written (the gradient may overwrite
          // the logits). Every row ignored stays a mean of 0.
          TORCH_CHECK_VALUE(!(reduction == 1 && wp && count > 0 && wsum == 0),
                            "weight: the class weights of the non-ignored targets sum to 0, so "
                            "the weighted mean is undefined; use reduction='sum' or other "
                            "weights");
        }
        A gs = A(1), zs = A(1);
        if (reduction == 1) {
          gs = den != 0 ? A(1.0 / den) : A(0);
          zs = zden != 0 ? A(1.0 / zden) : A(0);
        }
        auto opts = logits.options().dtype(acc);
        // per-row values: tensors only for reduction="none", where they are the result;
        // otherwise scratch (three tensor allocations were a tenth of a 256 x 10 call)
        at::Tensor loss, zl;
        std::vector<A> scratch(size_t(reduction == 0 ? 1 : 3) * size_t(R), A(0));
        A* lsep = scratch.data();
        A *lp, *zp;
        if (reduction == 0) {
          loss = at::zeros({R}, opts);
          zl = at::zeros({R}, opts);
          lp = loss.data_ptr<A>();
          zp = zl.data_ptr<A>();
        } else {
          lp = lsep + R;
          zp = lp + R;
        }
        if (R > 0 && Vn > 0) {
          rows_impl<T, A>(logits, target, w, grad_out, &gs, 0, &zs, 0, label_smoothing, z_loss,
                          softcap, ignore_index, lp, zp, lsep);
        }
        // The loss in the logits' dtype, or (acc_out: under autocast) in the accumulation
        // dtype, without a detour through half precision.
        const auto out_type = acc_out ? acc : logits.scalar_type();
        if (reduction == 0) {
          out = (loss + zl).to(out_type);
          zout = zl.to(out_type);
        } else {
          double ls = 0, zsum = 0;  // double: exact enough for any batch, and cheap (R values)
          for (int64_t r = 0; r < R; ++r) {
            ls += double(lp[r]);
            zsum += double(zp[r]);
          }
          const double zpart = zsum * double(zs);
          out = scalar_out(ls * double(gs) + zpart, logits.options().dtype(out_type));
          zout = scalar_out(zpart, logits.options().dtype(out_type));
        }
      });
  return {out, zout};
}

// Ask for transparent huge pages on a fresh, untouched buffer: first-touch page faults on a
// 512 MiB gradient cost ~0.1 s with 4 KiB pages and about half with 2 MiB pages.
void advise_hugepage(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t(1) << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const auto end = begin + uintptr_t(t.numel()) * t.element_size();
  const uintptr_t a = (begin + huge - 1) & ~(huge - 1);
  const uintptr_t b = end & ~(huge - 1);
  if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_HUGEPAGE);  // a hint: ignore errors
#endif
}

// fused_loss: fused() for labels with a fresh gradient buffer, the loss given the C++
// ClosedFormBackward node (the common call of crossent.torch.cross_entropy: a Python autograd
// Function costs ~12 us a call, as much as the whole native op at 256 x 10). Under
// create_graph the node calls fused_pullback, the differentiable composite registered from
// Python. Returns (loss, z part); the z part takes no gradient, as in the Function.
std::tuple<at::Tensor, at::Tensor> fused_loss(const at::Tensor& logits, const at::Tensor& target,
                                              const std::optional<at::Tensor>& weight,
                                              double label_smoothing, double z_loss,
                                              double softcap, int64_t ignore_index,
                                              int64_t reduction, bool acc_out) {
  return fused(logits, target, weight, std::nullopt, label_smoothing, z_loss, softcap,
               ignore_index, reduction, acc_out);
}

std::tuple<at::Tensor, at::Tensor> fused_loss_autograd(
    const at::Tensor& logits, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    double label_smoothing, double z_loss, double softcap, int64_t ignore_index,
    int64_t reduction, bool acc_out) {
  const bool need = needs_closed_form(logits, "fused_loss");
  auto grad_buffer = [](const at::Tensor& x) {
    at::Tensor buf = at::empty(x.sizes(), x.options());  // contiguous
    if (buf.nbytes() >= (size_t(1) << 25)) advise_hugepage(buf);  // fewer first-touch faults
    return buf;
  };
  at::Tensor loss, zpart, grad;
  {
    at::AutoDispatchBelowADInplaceOrView below;
    if (need) grad = grad_buffer(logits);
    std::tie(loss, zpart) =
        fused(logits, target, weight, need ? std::optional<at::Tensor>(grad) : std::nullopt,
              label_smoothing, z_loss, softcap, ignore_index, reduction, acc_out);
  }
  if (!need) return {loss, zpart};
  attach_closed_form(
      loss, std::move(grad), logits, "CrossEntropyBackward",
      {logits, target, weight.value_or(at::Tensor())},
      [=](const std::vector<at::Tensor>& s) {
        at::Tensor g = grad_buffer(s[0]);
        fused(s[0], s[1], optional_tensor(s[2]), g, label_smoothing, z_loss, softcap,
              ignore_index, reduction, acc_out);
        return g;
      },
      [=](const std::vector<at::Tensor>& s, const at::Tensor& cot) {
        static auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("crossent_ext::fused_pullback", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const std::optional<at::Tensor>&, double, double,
                                               double, int64_t, int64_t, bool,
                                               const at::Tensor&)>();
        return op.call(s[0], s[1], optional_tensor(s[2]), label_smoothing, z_loss, softcap,
                       ignore_index, reduction, acc_out, cot);
      });
  return {loss, zpart};
}

}  // namespace

TORCH_LIBRARY(crossent_ext, m) {
  m.def(
      "rows(Tensor logits, Tensor target, Tensor? weight, Tensor(a!)? grad_out, "
      "Tensor? grad_scale, Tensor? z_scale, float label_smoothing, float z_loss, "
      "float softcap, int ignore_index) -> (Tensor, Tensor, Tensor)");
  m.def(
      "fused(Tensor logits, Tensor target, Tensor? weight, Tensor(a!)? grad_out, "
      "float label_smoothing, float z_loss, float softcap, int ignore_index, int reduction, "
      "bool acc_out=False) -> (Tensor, Tensor)");
  m.def("advise_hugepage(Tensor t) -> ()");
  def_closed_form(m, "fused",
                  "Tensor logits, Tensor target, Tensor? weight, float label_smoothing, "
                  "float z_loss, float softcap, int ignore_index, int reduction, bool acc_out",
                  "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(crossent_ext, CPU, m) {
  m.impl("rows", &rows).impl("fused", &fused).impl("advise_hugepage", &advise_hugepage);
  m.impl("fused_loss", &fused_loss);
}

TORCH_LIBRARY_IMPL(crossent_ext, AutogradCPU, m) { m.impl("fused_loss", &fused_loss_autograd); }
