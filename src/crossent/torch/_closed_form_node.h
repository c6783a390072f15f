// The autograd node of crossent's CPU kernels that compute a loss together with its
// closed-form gradient w.r.t. the first input (the sigmoid losses, distillation and
// multi-class margin rows). A node written in C++, as native ops have theirs: a Python
// torch.autograd.Function costs ~20 us per fwd+bwd, more than the whole native op at small
// shapes. The forward keeps the kernel's gradient; backward hands it over scaled by the
// cotangent (in place: autograd then adopts it as .grad without a copy), computes it again
// for a retained graph's second backward, and under create_graph runs the loss definition's
// pullback in differentiable torch ops (a Python op the fast paths register), so double
// backward is the definition's exactly.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

// The kernel's gradient again, from the saved inputs.
using Regrad = std::function<at::Tensor(const std::vector<at::Tensor>&)>;
// The definition's pullback of a cotangent, in differentiable ops, from the saved inputs.
using Pullback = std::function<at::Tensor(const std::vector<at::Tensor>&, const at::Tensor&)>;

inline std::optional<at::Tensor> optional_tensor(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// A 0-dim cotangent's value; read in place on CPU (item() is a dispatch, a microsecond of a
// 256 x 10 backward).
inline double scalar_value(const at::Tensor& t) {
  if (!t.is_cpu() || !at::isFloatingType(t.scalar_type())) return t.item<double>();
  double v = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, t.scalar_type(), "crossent_cot",
                                  [&] { v = static_cast<double>(*t.const_data_ptr<scalar_t>()); });
  return v;
}

// A 0-dim tensor holding v, written in place (at::scalar_tensor's fill is one dispatch more).
inline at::Tensor scalar_out(double v, const at::TensorOptions& opts) {
  at::Tensor out = at::empty({}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "crossent_out",
                                  [&] { *out.data_ptr<scalar_t>() = static_cast<scalar_t>(v); });
  return out;
}

struct ClosedFormBackward : public torch::autograd::Node {
  std::string name_;
  std::vector<torch::autograd::SavedVariable> saved_;  // the op's tensor inputs, x first
  at::Tensor grad_;  // the kernel's gradient, handed over by the first backward
  Regrad regrad_;
  Pullback pullback_;

  std::string name() const override { return name_; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : saved_) s.reset_data();
    grad_.reset();
  }

  std::vector<at::Tensor> unpack_saved() {
    std::vector<at::Tensor> out;
    out.reserve(saved_.size());
    for (auto& s : saved_) out.push_back(s.unpack());
    return out;
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& cots) override {
    const at::Tensor& cot = cots[0];
    if (!cot.defined()) return {at::Tensor()};
    if (at::GradMode::is_enabled()) return {pullback_(unpack_saved(), cot)};  // create_graph
    at::Tensor g;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      g = std::move(grad_);  // moved out: no reference is left here
    }
    if (!g.defined()) g = regrad_(unpack_saved());
    if (cot.dim() != 0) {  // reduction="none": per element, or per row of (R, C)
      g.mul_((cot.dim() < g.dim() ? cot.unsqueeze(-1) : cot).to(g.scalar_type()));
    } else if (scalar_value(cot) != 1.0) {  // loss.backward() passes 1: nothing to scale
      g.mul_(cot.to(g.scalar_type()));
    }
    return {g};
  }
};

// Give ``loss`` (computed with autograd off, with its gradient ``grad`` w.r.t. ``x``) a
// ClosedFormBackward node; ``saved`` are the op's tensor inputs (x first, undefined for an
// absent optional one) as regrad and pullback receive them.
inline at::Tensor attach_closed_form(const at::Tensor& loss, at::Tensor grad,
                                     const at::Tensor& x, const char* name,
                                     const std::vector<at::Tensor>& saved, Regrad regrad,
                                     Pullback pullback) {
  auto node = c10::make_intrusive<ClosedFormBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x));
  node->name_ = name;
  node->saved_.reserve(saved.size());
  for (const auto& t : saved) node->saved_.emplace_back(t, false);
  node->grad_ = std::move(grad);
  node->regrad_ = std::move(regrad);
  node->pullback_ = std::move(pullback);
  torch::autograd::set_history(loss, node);
  return loss;
}

// Declare a closed-form op NAME_loss(ARGS) -> RETURNS and NAME_pullback(ARGS, Tensor cot) ->
// Tensor, the definition's pullback that create_graph calls (its kernel is registered from
// Python): one argument list for both, so the pullback always receives the op's inputs.
inline void def_closed_form(torch::Library& m, const std::string& name, const std::string& args,
                            const std::string& returns = "Tensor") {
  m.def((name + "_loss(" + args + ") -> " + returns).c_str());
  m.def((name + "_pullback(" + args + ", Tensor cot) -> Tensor").c_str());
}

// The checks every closed-form op's autograd kernel makes; true when a node is needed.
inline bool needs_closed_form(const at::Tensor& x, const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(!torch::autograd::isFwGradDefined(x), "crossent ", op,
                              ": no forward-mode derivative");
  return torch::autograd::compute_requires_grad(x);
}

}  // namespace
