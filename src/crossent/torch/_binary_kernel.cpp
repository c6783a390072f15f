// crossent element-wise kernel: sigmoid cross-entropy and sigmoid focal loss on logits of any
// shape, the value and the closed-form gradient w.r.t. the logits in ONE pass.
//
// Registered as crossent_ext::binary (see _ext.py for the build). Per element, with
// e = exp(-|x|) (the only exp) and l = log1p(e) (the only log for 0/1 targets):
//   softplus(x) = max(x, 0) + l = -log(1 - p),  softplus(-x) = max(-x, 0) + l = -log p,
//   p = sigma(x) = 1 / (1 + e) or e / (1 + e) by the sign of x (no cancellation either way).
// Sigmoid CE:  loss = pw t softplus(-x) + (1 - t) softplus(x), a zero coefficient silencing
//   its term even where the softplus is infinite; grad = (1 - t) p - pw t (1 - p) (p - t
//   without pos_weight), both times the element weight.
// Focal:       q = 1 - p_t, log q = log p (t = 0), log(1 - p) (t = 1), else the log-sum-exp
//   of log t + log(1 - p) and log(1 - t) + log p; M = exp(gamma log q);
//   loss = alpha_t M ce; grad = alpha_t M [(p - t) + gamma (1 - 2t) ce r], r = p (1 - p) / q
//   formed as exp(log p + log(1 - p) - log q) in [0, 1] (0 where q = 0); both times the
//   element weight.
// These are the formulas of crossent.sigmoid_cross_entropy / crossent.sigmoid_focal_loss (the
// definitions the other backends run); the tests hold the two to each other.
//
// The elements are cut into fixed chunks; each chunk's partial sum is kept in double and the
// chunk sums are added in order, so the reduced value does not depend on the thread count.
// Targets must be in [0, 1] (NaN is not): a violation raises ValueError("crossent_binary:
// targets outside [0, 1]") after the pass, and the caller words the message.

#include "_closed_form_node.h"
#include "_vec.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace {

constexpr int64_t kChunk = 4096;  // 16 KiB of fp32 per input: L1/L2 resident

template <typename A>
struct BinaryOpts {
  bool focal;
  const A* w;    // element weights (nullptr: none), laid out as w_n values ...
  int64_t w_n;   // ... repeating every w_n elements (the last dim) or covering all n
  const A* pw;   // pos_weight, same layout rules
  int64_t pw_n;
  bool has_alpha;
  A alpha;
  A gamma;
  A gscale;      // d(reduced loss) / d(element loss): 1 / n for "mean", else 1
};

// c * v with 0 * anything = 0: a silent term stays silent where v is infinite.
template <typename A>
inline Vectorized<A> mul0(const Vectorized<A>& c, const Vectorized<A>& v) {
  using V = Vectorized<A>;
  return V::blendv(c * v, V(A(0)), c == V(A(0)));
}

// Copy the weights of elements [j0, j0 + m) into out: a full array is read in place, a
// per-last-dim vector is tiled.
template <typename A>
inline const A* weights_for(const A* w, int64_t w_n, int64_t n, int64_t j0, int64_t m, A* out) {
  if (w == nullptr) return nullptr;
  if (w_n == n) return w + j0;
  int64_t i = 0, k = j0 % w_n;
  while (i < m) {
    const int64_t run = std::min(m - i, w_n - k);
    std::copy(w + k, w + k + run, out + i);
    i += run;
    k = 0;
  }
  return out;
}

// One vector of elements: loss and gradient (unscaled). Lanes past the end hold x = t = 0 and
// are dropped by the caller.
template <typename A>
inline void binary_vec(const Vectorized<A>& x, const Vectorized<A>& t, const Vectorized<A>& w,
                       const Vectorized<A>& pw, bool has_w, bool has_pw,
                       const BinaryOpts<A>& o, Vectorized<A>& loss, Vectorized<A>& grad) {
  using V = Vectorized<A>;
  const V zero(A(0)), one(A(1));
  const V e = vexp<A>(zero - x.abs());
  const V l = e.log1p();
  const V sp_pos = at::vec::maximum(x, zero) + l;         // softplus(x) = -log(1 - p)
  const V sp_neg = at::vec::maximum(zero - x, zero) + l;  // softplus(-x) = -log p
  const V inv = one / (one + e);
  const V ei = e * inv;
  const V nonneg = x >= zero;
  const V p = V::blendv(ei, inv, nonneg);
  const V pm = V::blendv(inv, ei, nonneg);  // 1 - p
  const V tc = one - t;
  if (!o.focal) {
    const V a = has_pw ? pw * t : t;
    loss = mul0<A>(a, sp_neg) + mul0<A>(tc, sp_pos);
    grad = has_pw ? tc * p - a * pm : p - t;
    if (has_w) {
      loss = loss * w;
      grad = grad * w;
    }
    return;
  }
  const V ce = mul0<A>(t, sp_neg) + mul0<A>(tc, sp_pos);
  const V log_p = zero - sp_neg, log_1mp = zero - sp_pos;
  const V is0 = t == zero, is1 = t == one;
  V log_q = V::blendv(log_1mp, log_p, is0);  // exact for 0/1 targets
  if ((is0 | is1).zero_mask() != 0) {        // a soft target in this vector
    const V la = t.log() + log_1mp, lb = tc.log() + log_p;
    const V hi = at::vec::maximum(la, lb), lo = at::vec::minimum(la, lb);
    // hi = -inf only where both terms are -inf (q = 0): keep -inf, not NaN from -inf - -inf
    const V lse = V::blendv(hi + vexp<A>(lo - hi).log1p(), hi, hi == V(-std::numeric_limits<A>::infinity()));
    log_q = V::blendv(lse, log_q, is0 | is1);
  }
  V inner = p - t;
  V mod = one;
  if (o.gamma != A(0)) {
    const V g(o.gamma);
    mod = vexp<A>(g * log_q);
    const V ninf(-std::numeric_limits<A>::infinity());
    const V sat = log_q == ninf;
    const V r = V::blendv(vexp<A>(log_p + log_1mp - V::blendv(log_q, zero, sat)), zero, sat);
    inner = inner + g * (one - t - t) * (ce * r);
  }
  loss = ce * mod;
  grad = mod * inner;
  if (o.has_alpha) {
    const V a(o.alpha), b(A(1) - o.alpha);
    const V alpha_t = a * t + b * tc;
    loss = alpha_t * loss;
    grad = alpha_t * grad;
  }
  if (has_w) {
    loss = loss * w;
    grad = grad * w;
  }
}

// Elements [0, m) of one chunk: loss values into L (when not null), scaled gradient into G
// (when not null); returns the chunk's loss sum and ORs target-range violations into bad.
template <typename A>
inline double binary_chunk(const A* x, const A* t, const A* w, const A* pw, int64_t m,
                           const BinaryOpts<A>& o, A* L, A* G, bool& bad) {
  using V = Vectorized<A>;
  const V zero(A(0)), one(A(1)), gs(o.gscale);
  V acc(A(0)), out_of_range(A(0));
  A tail_sum = A(0);
  const bool has_w = w != nullptr, has_pw = pw != nullptr;
  for (int64_t i = 0; i < m; i += V::size()) {
    const int64_t k = std::min<int64_t>(V::size(), m - i);
    const bool full = k == V::size();
    const V xv = full ? V::loadu(x + i) : V::loadu(x + i, k);
    const V tv = full ? V::loadu(t + i) : V::loadu(t + i, k);
    const V wv = has_w ? (full ? V::loadu(w + i) : V::loadu(w + i, k)) : one;
    const V pwv = has_pw ? (full ? V::loadu(pw + i) : V::loadu(pw + i, k)) : one;
    // NaN fails both comparisons: (t >= 0) & (t <= 1) is all-ones exactly for valid lanes
    out_of_range = out_of_range | ((tv >= zero) & (tv <= one)).eq(zero);
    V lv, gv;
    binary_vec<A>(xv, tv, wv, pwv, has_w, has_pw, o, lv, gv);
    if (full) {
      acc = acc + lv;
      if (L) lv.store(L + i);
      if (G) (gv * gs).store(G + i);
    } else {
      A buf[V::size()];
      lv.store(buf);
      for (int64_t j = 0; j < k; ++j) tail_sum += buf[j];
      if (L) lv.store(L + i, k);
      if (G) (gv * gs).store(G + i, k);
      // the padded lanes (t = 0) are in range; nothing to undo in out_of_range
    }
  }
  A flags[V::size()];
  out_of_range.store(flags);
  for (int64_t j = 0; j < V::size(); ++j) bad |= flags[j] != A(0);
  return double(at::vec::vec_reduce_all<A>([](V& a, V& b) { return a + b; }, acc)) +
         double(tail_sum);
}

template <typename T, typename A>
void binary_impl(const at::Tensor& logits, const at::Tensor& targets, const BinaryOpts<A>& o,
                 const at::Tensor& loss_out, const at::Tensor& grad_out, double& total, bool& bad) {
  const int64_t n = logits.numel();
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  const T* X = logits.const_data_ptr<T>();
  const A* Tg = targets.const_data_ptr<A>();
  T* L = loss_out.defined() ? loss_out.data_ptr<T>() : nullptr;
  T* G = grad_out.defined() ? grad_out.data_ptr<T>() : nullptr;
  constexpr bool kDirect = std::is_same_v<T, A>;
  std::vector<double> part(nchunks, 0.0);
  std::vector<char> flag(nchunks, 0);
  at::parallel_for(0, nchunks, row_grain(kChunk), [&](int64_t c0, int64_t c1) {
    std::vector<A> xb(kDirect ? 0 : kChunk), lb(kDirect || !L ? 0 : kChunk),
        gb(kDirect || !G ? 0 : kChunk);
    std::vector<A> wb(o.w && o.w_n != n ? kChunk : 0), pwb(o.pw && o.pw_n != n ? kChunk : 0);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * kChunk, m = std::min(kChunk, n - j0);
      const A* x;
      if constexpr (kDirect) {
        x = X + j0;
      } else {
        load_acc<T, A>(X + j0, xb.data(), m);
        x = xb.data();
      }
      A* l = nullptr;
      A* g = nullptr;
      if constexpr (kDirect) {
        l = L ? L + j0 : nullptr;
        g = G ? G + j0 : nullptr;
      } else {
        l = L ? lb.data() : nullptr;
        g = G ? gb.data() : nullptr;
      }
      const A* w = weights_for<A>(o.w, o.w_n, n, j0, m, wb.data());
      const A* pw = weights_for<A>(o.pw, o.pw_n, n, j0, m, pwb.data());
      bool b = false;
      part[c] = binary_chunk<A>(x, Tg + j0, w, pw, m, o, l, g, b);
      flag[c] = b;
      if constexpr (!kDirect) {
        if (L) store_acc<T, A>(lb.data(), L + j0, m);
        if (G) store_acc<T, A>(gb.data(), G + j0, m);
      }
    }
  });
  total = 0.0;
  for (int64_t c = 0; c < nchunks; ++c) {
    total += part[c];
    bad |= flag[c] != 0;
  }
}

at::Tensor weight_of(const std::optional<at::Tensor>& w, at::ScalarType acc, int64_t n,
                     int64_t last, const char* name) {
  if (!w.has_value() || !w->defined()) return at::Tensor();
  TORCH_CHECK(w->scalar_type() == acc && w->is_contiguous() &&
                  (w->numel() == n || (w->numel() == last && last > 0)),
              "crossent binary: ", name, " must be contiguous, in the accumulation dtype, with "
              "one value per element or per last-dim position");
  return *w;
}

// reduction: 0 none, 1 mean, 2 sum. Returns (loss in the logits' dtype: the logits' shape for
// none, else a scalar; gradient of the reduced loss w.r.t. the logits, or an empty tensor).
std::tuple<at::Tensor, at::Tensor> binary(const at::Tensor& logits, const at::Tensor& targets,
                                          const std::optional<at::Tensor>& weight,
                                          const std::optional<at::Tensor>& pos_weight,
                                          bool focal, double alpha, double gamma,
                                          int64_t reduction, bool want_grad) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "crossent binary: bad reduction code");
  TORCH_CHECK(logits.is_contiguous() && targets.is_contiguous() &&
                  targets.sizes() == logits.sizes(),
              "crossent binary: logits and targets must be contiguous and of one shape");
  const auto acc = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(targets.scalar_type() == acc,
              "crossent binary: targets must be in the accumulation dtype");
  const int64_t n = logits.numel();
  const int64_t last = logits.dim() ? logits.size(-1) : 1;
  const at::Tensor w = weight_of(weight, acc, n, last, "weight");
  const at::Tensor pw = weight_of(pos_weight, acc, n, last, "pos_weight");
  // logits are contiguous: plain empties of their sizes
  const auto fresh = [&] { return at::empty(logits.sizes(), logits.options()); };
  at::Tensor loss_out = reduction == 0 ? fresh() : at::Tensor();
  at::Tensor grad_out = want_grad ? fresh() : at::Tensor();
  // an op returns tensors: "no gradient" is an empty one
  double total = 0.0;
  bool bad = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "crossent_binary", [&] {
        using T = scalar_t;
        using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
        BinaryOpts<A> o;
        o.focal = focal;
        o.w = w.defined() ? w.const_data_ptr<A>() : nullptr;
        o.w_n = w.defined() ? w.numel() : 0;
        o.pw = pw.defined() ? pw.const_data_ptr<A>() : nullptr;
        o.pw_n = pw.defined() ? pw.numel() : 0;
        o.has_alpha = alpha >= 0;
        o.alpha = A(alpha);
        o.gamma = A(gamma);
        o.gscale = reduction == 1 && n > 0 ? A(1.0 / double(n)) : A(1);
        if (n > 0) binary_impl<T, A>(logits, targets, o, loss_out, grad_out, total, bad);
      });
  TORCH_CHECK_VALUE(!bad, "crossent_binary: targets outside [0, 1]");
  if (!grad_out.defined()) grad_out = at::empty({0}, logits.options());
  if (reduction == 0) return {loss_out, grad_out};
  const double value = reduction == 1 ? total / double(n) : total;
  return {scalar_out(value, logits.options()), grad_out};
}

// binary_loss: the loss alone; on tensors that require grad, with its ClosedFormBackward node
// (double backward: binary_pullback, the definition's pullback, registered from Python).
at::Tensor binary_loss(const at::Tensor& logits, const at::Tensor& targets,
                       const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& pos_weight, bool focal, double alpha,
                       double gamma, int64_t reduction) {
  return std::get<0>(
      binary(logits, targets, weight, pos_weight, focal, alpha, gamma, reduction, false));
}

at::Tensor binary_loss_autograd(const at::Tensor& logits, const at::Tensor& targets,
                                const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& pos_weight, bool focal,
                                double alpha, double gamma, int64_t reduction) {
  const bool need = needs_closed_form(logits, "binary_loss");
  at::Tensor loss, grad;
  {
    at::AutoDispatchBelowADInplaceOrView below;
    std::tie(loss, grad) =
        binary(logits, targets, weight, pos_weight, focal, alpha, gamma, reduction, need);
  }
  if (!need) return loss;
  return attach_closed_form(
      loss, std::move(grad), logits,
      focal ? "SigmoidFocalLossBackward" : "SigmoidCrossEntropyBackward",
      {logits, targets, weight.value_or(at::Tensor()), pos_weight.value_or(at::Tensor())},
      [=](const std::vector<at::Tensor>& s) {
        return std::get<1>(binary(s[0], s[1], optional_tensor(s[2]), optional_tensor(s[3]),
                                  focal, alpha, gamma, reduction, true));
      },
      [=](const std::vector<at::Tensor>& s, const at::Tensor& cot) {
        static auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("crossent_ext::binary_pullback", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&, bool, double,
                                               double, int64_t, const at::Tensor&)>();
        return op.call(s[0], s[1], optional_tensor(s[2]), optional_tensor(s[3]), focal, alpha,
                       gamma, reduction, cot);
      });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(crossent_ext, m) {
  const std::string args =
      "Tensor logits, Tensor targets, Tensor? weight, Tensor? pos_weight, bool focal, "
      "float alpha, float gamma, int reduction";
  m.def(("binary(" + args + ", bool want_grad) -> (Tensor, Tensor)").c_str());
  def_closed_form(m, "binary", args);
}

TORCH_LIBRARY_IMPL(crossent_ext, CPU, m) {
  m.impl("binary", &binary).impl("binary_loss", &binary_loss);
}

TORCH_LIBRARY_IMPL(crossent_ext, AutogradCPU, m) { m.impl("binary_loss", &binary_loss_autograd); }
