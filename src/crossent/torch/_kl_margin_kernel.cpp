// crossent row kernels for two losses over the rows of an (R, C) matrix, value and closed-form
// gradient in one pass each (registered as crossent_ext::distill_rows and
// crossent_ext::multi_margin_rows, and as losses with their autograd node distill_loss and
// multi_margin_loss; see _ext.py for the build).
//
// distill_rows: Hinton's distillation loss T^2 KL(p_t || p_s) with p = softmax(z / T). Per row:
//   the two maxima, e_s = exp(z_s / T - m_s) and e_t = exp(z_t / T - m_t) kept in per-thread
//   rows (two exps per class), lse = m + log(sum e); then
//   KL = sum_{p_t,j > 0} p_t,j [(z_t,j / T - lse_t) - (z_s,j / T - lse_s)]   (a teacher class of
//   probability 0 contributes nothing, whatever the student says) and
//   grad_s = T (p_s - p_t) times the reduction's scale.
// multi_margin_rows: PyTorch's multi-class margin loss, (w_y / C) sum_{j != y} max(0, m - x_y +
//   x_j)^p for p in {1, 2}; grad_j = (w_y / C) [h_j > 0] (1 or 2 h_j) for j != y and
//   grad_y = -sum_{j != y} grad_j.
// These are the formulas of crossent.distillation_loss / crossent.multi_margin_loss (the
// definitions the other backends run); the tests hold the kernels to them. Row sums are added
// in row order in double, so the reduced value does not depend on the thread count.

#include "_closed_form_node.h"
#include "_vec.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

namespace {

// Reduced losses from per-row values: 0 none (the rows, in out_type), 1 mean, 2 sum.
at::Tensor reduce_rows(const std::vector<double>& rows, int64_t reduction,
                       const at::TensorOptions& opts) {
  const int64_t R = int64_t(rows.size());
  if (reduction == 0) {
    at::Tensor out = at::empty({R}, opts.dtype(at::kDouble));
    std::copy(rows.begin(), rows.end(), out.data_ptr<double>());
    return out.to(opts.dtype());
  }
  double s = 0.0;
  for (double v : rows) s += v;
  return scalar_out(reduction == 1 ? s / double(R) : s, opts);
}

// One loss value per row of x: body(T{}, A{}, grad_scale, grad_ptr or nullptr, rows) fills
// the rows (and the gradient) for x's dtype T and accumulation type A; returns (the reduced
// loss in x's dtype, the gradient or an empty tensor).
template <typename Body>
std::tuple<at::Tensor, at::Tensor> row_loss(const at::Tensor& x, int64_t reduction,
                                            bool want_grad, Body body) {
  const int64_t R = x.size(0);
  // x is contiguous: a plain empty of its sizes (empty_like's layout logic is a dispatch more)
  at::Tensor grad = at::empty(want_grad ? x.sizes() : at::IntArrayRef{0}, x.options());
  std::vector<double> rows(R, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "crossent_rows2",
                                  [&] {
    using T = scalar_t;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const A gs = reduction == 1 && R > 0 ? A(1.0 / double(R)) : A(1);
    if (R > 0 && x.size(1) > 0)
      body(T(0), A(0), gs, want_grad ? grad.data_ptr<T>() : static_cast<T*>(nullptr), rows);
  });
  return {reduce_rows(rows, reduction, x.options()), grad};
}

template <typename T, typename A>
void distill_impl(const at::Tensor& student, const at::Tensor& teacher, double temperature,
                  A gscale, T* G, std::vector<double>& rows) {
  using V = Vectorized<A>;
  const int64_t R = student.size(0), C = student.size(1);
  const T* S = student.const_data_ptr<T>();
  const T* Tt = teacher.const_data_ptr<T>();
  const A inv_t = A(1.0 / temperature), tt = A(temperature);
  at::parallel_for(0, R, row_grain(C), [&](int64_t r0, int64_t r1) {
    std::vector<A> zs(C), zt(C), es(C), et(C);
    for (int64_t r = r0; r < r1; ++r) {
      load_acc<T, A>(S + r * C, zs.data(), C);
      load_acc<T, A>(Tt + r * C, zt.data(), C);
      const V vi(inv_t);
      int64_t j = 0;
      for (; j + V::size() <= C; j += V::size()) {
        (V::loadu(zs.data() + j) * vi).store(zs.data() + j);
        (V::loadu(zt.data() + j) * vi).store(zt.data() + j);
      }
      for (; j < C; ++j) {
        zs[j] *= inv_t;
        zt[j] *= inv_t;
      }
      const A ms = block_max<A>(zs.data(), C), mt = block_max<A>(zt.data(), C);
      const A ss = exp_sum<A, true>(zs.data(), ms, es.data(), C);
      const A st = exp_sum<A, true>(zt.data(), mt, et.data(), C);
      const A lse_s = ms + std::log(ss), lse_t = mt + std::log(st);
      const A inv_ss = A(1) / ss, inv_st = A(1) / st;
      const V vls(lse_s), vlt(lse_t), vis(inv_ss), vit(inv_st), zero(A(0));
      V acc(A(0));
      A tail = A(0);
      T* g = G ? G + r * C : nullptr;
      const V vg(tt * gscale);
      A gbuf[V::size()];
      for (j = 0; j + V::size() <= C; j += V::size()) {
        const V pt = V::loadu(et.data() + j) * vit;
        const V d = (V::loadu(zt.data() + j) - vlt) - (V::loadu(zs.data() + j) - vls);
        acc = acc + V::blendv(pt * d, zero, pt == zero);
        if (g) {
          const V gv = (V::loadu(es.data() + j) * vis - pt) * vg;
          if constexpr (std::is_same_v<T, A>) {
            gv.store(g + j);
          } else {
            gv.store(gbuf);
            for (int64_t k = 0; k < V::size(); ++k) g[j + k] = static_cast<T>(gbuf[k]);
          }
        }
      }
      for (; j < C; ++j) {
        const A pt = et[j] * inv_st;
        if (pt != A(0)) tail += pt * ((zt[j] - lse_t) - (zs[j] - lse_s));
        if (g) g[j] = static_cast<T>((es[j] * inv_ss - pt) * tt * gscale);
      }
      const A kl = at::vec::vec_reduce_all<A>([](V& a, V& b) { return a + b; }, acc) + tail;
      rows[r] = double(tt) * double(tt) * double(kl);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> distill_rows(const at::Tensor& student,
                                                const at::Tensor& teacher, double temperature,
                                                int64_t reduction, bool want_grad) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "crossent distill_rows: bad reduction code");
  TORCH_CHECK(student.dim() == 2 && student.is_contiguous() && teacher.is_contiguous() &&
                  teacher.sizes() == student.sizes() &&
                  teacher.scalar_type() == student.scalar_type(),
              "crossent distill_rows: contiguous (R, C) logits of one shape and dtype");
  return row_loss(student, reduction, want_grad, [&](auto t, auto a, auto gs, auto* G,
                                                      std::vector<double>& rows) {
    distill_impl<decltype(t), decltype(a)>(student, teacher, temperature, gs, G, rows);
  });
}

// Rows [r0, r1) narrower than one vector (C = 10 against 16 float lanes): one plain loop
// straight over each row, with no staging copy and no horizontal vector sums, which cost more
// than such a row's arithmetic. The target's own term is skipped, not subtracted.
template <int P, bool WantGrad, typename T, typename A>
void margin_narrow(const T* X, const int64_t* Y, const A* w, A margin, A gscale, T* G,
                   int64_t C, int64_t r0, int64_t r1, std::vector<double>& rows) {
  const A inv_c = A(1) / A(C);
  for (int64_t r = r0; r < r1; ++r) {
    const T* x = X + r * C;
    const int64_t y = Y[r];
    const A wy = w ? w[y] : A(1);
    const A base = margin - static_cast<A>(x[y]);
    const A coef = gscale * inv_c * wy;
    A total = A(0), gsum = A(0);
    for (int64_t j = 0; j < C; ++j) {
      const A h = base + static_cast<A>(x[j]);
      const bool pos = h > A(0) && j != y;  // NaN counts as not violating
      const A hp = pos ? h : A(0);
      total += P == 1 ? hp : hp * hp;
      if constexpr (WantGrad) {
        const A gj = (P == 1 ? (pos ? A(1) : A(0)) : A(2) * hp) * coef;
        gsum += gj;
        G[r * C + j] = static_cast<T>(gj);
      }
    }
    if constexpr (WantGrad) G[r * C + y] = static_cast<T>(-gsum);
    rows[r] = double(total) * double(inv_c) * double(wy);
  }
}

template <typename T, typename A>
void margin_impl(const at::Tensor& logits, const int64_t* Y, const A* w, int64_t p, A margin,
                 A gscale, T* G, std::vector<double>& rows) {
  using V = Vectorized<A>;
  const int64_t R = logits.size(0), C = logits.size(1);
  const T* X = logits.const_data_ptr<T>();
  const A inv_c = A(1) / A(C);
  if (C < V::size()) {
    at::parallel_for(0, R, row_grain(C), [&](int64_t r0, int64_t r1) {
      if (p == 1 && G)
        margin_narrow<1, true>(X, Y, w, margin, gscale, G, C, r0, r1, rows);
      else if (p == 1)
        margin_narrow<1, false>(X, Y, w, margin, gscale, G, C, r0, r1, rows);
      else if (G)
        margin_narrow<2, true>(X, Y, w, margin, gscale, G, C, r0, r1, rows);
      else
        margin_narrow<2, false>(X, Y, w, margin, gscale, G, C, r0, r1, rows);
    });
    return;
  }
  at::parallel_for(0, R, row_grain(C), [&](int64_t r0, int64_t r1) {
    // fp32 / fp64 rows are read and their gradient written in place; half precision goes
    // through accumulation-type copies
    constexpr bool kDirect = std::is_same_v<T, A>;
    std::vector<A> zbuf(kDirect ? 0 : C), gbuf(G && !kDirect ? C : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const A* z;
      A* g = nullptr;
      if constexpr (kDirect) {
        z = reinterpret_cast<const A*>(X + r * C);
        if (G) g = reinterpret_cast<A*>(G + r * C);
      } else {
        load_acc<T, A>(X + r * C, zbuf.data(), C);
        z = zbuf.data();
        if (G) g = gbuf.data();
      }
      const int64_t y = Y[r];
      const A wy = w ? w[y] : A(1);
      const A zy = z[y];
      const V base(margin - zy), zero(A(0)), coef(gscale * inv_c * wy), two(A(2));
      V acc(A(0)), gacc(A(0));
      A tail = A(0), gtail = A(0);
      int64_t j = 0;
      for (; j + V::size() <= C; j += V::size()) {
        const V h = base + V::loadu(z + j);
        const V pos = h > zero;  // NaN counts as not violating, as in the definition
        const V hp = V::blendv(zero, h, pos);
        acc = acc + (p == 1 ? hp : hp * hp);
        if (G) {
          const V gj = (p == 1 ? (pos & V(A(1))) : two * hp) * coef;
          gacc = gacc + gj;
          gj.store(g + j);
        }
      }
      for (; j < C; ++j) {
        const A h = margin - zy + z[j];
        const A hp = h > A(0) ? h : A(0);
        tail += p == 1 ? hp : hp * hp;
        if (G) {
          g[j] = (p == 1 ? (h > A(0) ? A(1) : A(0)) : A(2) * hp) * gscale * inv_c * wy;
          gtail += g[j];
        }
      }
      // the target's own term (h = margin, rounded as above) was counted: take it out
      const A hy0 = (margin - zy) + zy;
      const A hy = hy0 > A(0) ? hy0 : A(0);
      A total = at::vec::vec_reduce_all<A>([](V& a, V& b) { return a + b; }, acc) + tail;
      total -= p == 1 ? hy : hy * hy;
      rows[r] = double(total) * double(inv_c) * double(wy);
      if (G) {
        A gsum = at::vec::vec_reduce_all<A>([](V& a, V& b) { return a + b; }, gacc) + gtail;
        gsum -= g[y];
        g[y] = -gsum;
        if constexpr (!kDirect) store_acc<T, A>(g, G + r * C, C);
      }
    }
  });
}

// The kernel's layout of multi_margin_rows' inputs: contiguous logits and int64 labels (a
// differentiable copy where the caller's are not, so the node's edges still reach them).
std::pair<at::Tensor, at::Tensor> margin_layout(const at::Tensor& logits,
                                                const at::Tensor& labels) {
  // what the kernel does not take is a ValueError, on which the Python path hands the call
  // to the loss's definition: it serves the call or words the error
  TORCH_CHECK_VALUE(logits.dim() == 2 && logits.size(0) > 0 && logits.size(1) > 0 &&
                        labels.dim() == 1 && labels.size(0) == logits.size(0) &&
                        at::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
                    "crossent multi_margin: the kernel takes non-empty (R, C) logits and (R,) "
                    "integer labels");
  return {logits.contiguous(),
          (labels.scalar_type() == at::kLong ? labels : labels.to(at::kLong)).contiguous()};
}

std::tuple<at::Tensor, at::Tensor> multi_margin_rows(const at::Tensor& logits_in,
                                                     const at::Tensor& labels_in,
                                                     const std::optional<at::Tensor>& weight,
                                                     int64_t p, double margin, int64_t reduction,
                                                     bool want_grad) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "crossent multi_margin_rows: bad reduction");
  TORCH_CHECK(p == 1 || p == 2, "crossent multi_margin_rows: p must be 1 or 2");
  at::Tensor logits, labels;
  std::tie(logits, labels) = margin_layout(logits_in, labels_in);
  const int64_t R = logits.size(0), C = logits.size(1);
  const int64_t* Y = labels.const_data_ptr<int64_t>();
  bool bad = false;
  for (int64_t r = 0; r < R; ++r) bad |= Y[r] < 0 || Y[r] >= C;
  TORCH_CHECK_VALUE(!bad, "crossent_multi_margin: labels out of range");
  const auto acc = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor w;
  if (weight.has_value() && weight->defined()) {
    TORCH_CHECK_VALUE(weight->dim() == 1 && weight->size(0) == C,
                      "crossent multi_margin_rows: weight is (C,)");
    w = weight->to(acc).contiguous();
  }
  return row_loss(logits, reduction, want_grad, [&](auto t, auto a, auto gs, auto* G,
                                                     std::vector<double>& rows) {
    using A = decltype(a);
    margin_impl<decltype(t), A>(logits, Y, w.defined() ? w.const_data_ptr<A>() : nullptr, p,
                                A(margin), gs, G, rows);
  });
}

// distill_loss and multi_margin_loss: the losses alone; on tensors that require grad, with
// their ClosedFormBackward node (double backward: *_pullback, the definitions' pullbacks,
// registered from Python).
at::Tensor distill_loss(const at::Tensor& student, const at::Tensor& teacher, double temperature,
                        int64_t reduction) {
  return std::get<0>(distill_rows(student, teacher, temperature, reduction, false));
}

at::Tensor distill_loss_autograd(const at::Tensor& student, const at::Tensor& teacher,
                                 double temperature, int64_t reduction) {
  const bool need = needs_closed_form(student, "distill_loss");
  at::Tensor loss, grad;
  {
    at::AutoDispatchBelowADInplaceOrView below;
    std::tie(loss, grad) = distill_rows(student, teacher, temperature, reduction, need);
  }
  if (!need) return loss;
  return attach_closed_form(
      loss, std::move(grad), student, "DistillationLossBackward", {student, teacher},
      [=](const std::vector<at::Tensor>& s) {
        return std::get<1>(distill_rows(s[0], s[1], temperature, reduction, true));
      },
      [=](const std::vector<at::Tensor>& s, const at::Tensor& cot) {
        static auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("crossent_ext::distill_pullback", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double,
                                               int64_t, const at::Tensor&)>();
        return op.call(s[0], s[1], temperature, reduction, cot);
      });
}

at::Tensor multi_margin_loss(const at::Tensor& logits, const at::Tensor& labels,
                             const std::optional<at::Tensor>& weight, int64_t p, double margin,
                             int64_t reduction) {
  return std::get<0>(multi_margin_rows(logits, labels, weight, p, margin, reduction, false));
}

at::Tensor multi_margin_loss_autograd(const at::Tensor& logits_in, const at::Tensor& labels_in,
                                      const std::optional<at::Tensor>& weight, int64_t p,
                                      double margin, int64_t reduction) {
  TORCH_CHECK(!(weight.has_value() && weight->defined() && weight->requires_grad()),
              "crossent multi_margin_loss: no gradient w.r.t. weight");
  const bool need = needs_closed_form(logits_in, "multi_margin_loss");
  // laid out here, with autograd on: a copy of non-contiguous logits is differentiable, so
  // the node's edge and double backward's pullback reach the caller's tensor through it
  at::Tensor logits, labels;
  std::tie(logits, labels) = margin_layout(logits_in, labels_in);
  at::Tensor loss, grad;
  {
    at::AutoDispatchBelowADInplaceOrView below;
    std::tie(loss, grad) = multi_margin_rows(logits, labels, weight, p, margin, reduction, need);
  }
  if (!need) return loss;
  return attach_closed_form(
      loss, std::move(grad), logits, "MultiMarginLossBackward",
      {logits, labels, weight.value_or(at::Tensor())},
      [=](const std::vector<at::Tensor>& s) {
        return std::get<1>(
            multi_margin_rows(s[0], s[1], optional_tensor(s[2]), p, margin, reduction, true));
      },
      [=](const std::vector<at::Tensor>& s, const at::Tensor& cot) {
        static auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("crossent_ext::multi_margin_pullback", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const std::optional<at::Tensor>&, int64_t, double,
                                               int64_t, const at::Tensor&)>();
        return op.call(s[0], s[1], optional_tensor(s[2]), p, margin, reduction, cot);
      });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(crossent_ext, m) {
  const std::string distill = "Tensor student, Tensor teacher, float temperature, int reduction";
  const std::string margin =
      "Tensor logits, Tensor labels, Tensor? weight, int p, float margin, int reduction";
  m.def(("distill_rows(" + distill + ", bool want_grad) -> (Tensor, Tensor)").c_str());
  m.def(("multi_margin_rows(" + margin + ", bool want_grad) -> (Tensor, Tensor)").c_str());
  def_closed_form(m, "distill", distill);
  def_closed_form(m, "multi_margin", margin);
}

TORCH_LIBRARY_IMPL(crossent_ext, CPU, m) {
  m.impl("distill_rows", &distill_rows).impl("multi_margin_rows", &multi_margin_rows);
  m.impl("distill_loss", &distill_loss).impl("multi_margin_loss", &multi_margin_loss);
}

TORCH_LIBRARY_IMPL(crossent_ext, AutogradCPU, m) {
  m.impl("distill_loss", &distill_loss_autograd)
      .impl("multi_margin_loss", &multi_margin_loss_autograd);
}
