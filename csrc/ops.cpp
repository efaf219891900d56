// The operator schemas of the fused_optim namespace. Kernels register themselves per device (csrc/cpu/*.cpp,
// cuda/*.cu); fake kernels for torch.compile live in python/fused_optim/_meta.py. No Python here: the CMake build
// links this file into a plain C++ library.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <vector>

#include "common/op_list.h"

TORCH_LIBRARY(fused_optim, m) {
  m.set_python_module("fused_optim._meta");
  // Every op ends with master_params: absent for params updated in place, else one float32 master (or, for bf16
  // params, one int16 tensor of low halves: a split master) per param; see csrc/common/precision.h. Gradients may
  // have another dtype than the params, and state may be float32 or bf16 where the precision table has a kernel.
  // Adam and AdamW (decoupled_weight_decay). Shaped like ATen's _fused_adam_: mutated lists are annotated, the
  // gradients are read only, state_steps are advanced by the op, and a step where found_inf is nonzero changes
  // nothing. lr is a one-element tensor on the CPU or on the params' device.
  m.def(
      "adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, *, Tensor lr, float beta1, float beta2, "
      "float weight_decay, float eps, bool amsgrad, bool maximize, bool decoupled_weight_decay, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, Tensor(m!)[]? master_params=None) -> ()");
  // SGD with momentum, dampening and Nesterov. momentum_buffers is empty when momentum is 0; with is_first_step
  // the buffers are set to the gradient instead of blended (torch creates them from the first gradient).
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, *, Tensor lr, float weight_decay, "
      "float momentum, float dampening, bool nesterov, bool maximize, bool is_first_step, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, Tensor(m!)[]? master_params=None) -> ()");
  // RMSprop, plain or centered, with or without momentum: grad_avgs is empty unless centered, momentum_buffers
  // empty unless momentum > 0. state_steps are advanced (torch.optim keeps the count; the rule does not use it).
  m.def(
      "rmsprop_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, Tensor(c!)[] grad_avgs, "
      "Tensor(d!)[] momentum_buffers, Tensor(e!)[] state_steps, *, Tensor lr, float alpha, float eps, "
      "float weight_decay, float momentum, bool centered, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, Tensor(m!)[]? master_params=None) -> ()");
  // Adagrad for dense gradients; state_steps are advanced and drive the lr decay.
  m.def(
      "adagrad_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] state_sums, Tensor(c!)[] state_steps, *, "
      "Tensor lr, float lr_decay, float weight_decay, float eps, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, Tensor(m!)[]? master_params=None) -> ()");
  // Lion: one momentum buffer per parameter, decoupled weight decay.
  m.def(
      "lion_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, *, Tensor lr, float beta1, float beta2, "
      "float weight_decay, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor(m!)[]? master_params=None) -> ()");
  // LAMB, in two passes so the per-tensor norms can be all-reduced in between (sharded parameters): lamb_norms
  // changes nothing and returns the squared norms of each parameter and of its update direction, shape (n, 2);
  // lamb_ advances the steps, updates the moments and moves the parameters by lr * trust ratio * direction.
  m.def(
      "lamb_norms(Tensor[] params, Tensor[] grads, Tensor[] exp_avgs, Tensor[] exp_avg_sqs, Tensor[] state_steps, "
      "*, float beta1, float beta2, float eps, float weight_decay, bool bias_correction, bool maximize, "
      "Tensor? grad_scale=None, Tensor[]? master_params=None) -> Tensor");
  m.def(
      "lamb_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] state_steps, Tensor sq_norms, *, Tensor lr, float beta1, float beta2, float eps, "
      "float weight_decay, bool bias_correction, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, Tensor(m!)[]? master_params=None) -> ()");
  // The 2-norm (or, with norm_type=inf, the max-norm) of all elements of the tensors together, as a 0-dim tensor
  // on their device (float64 for float64 tensors, else float32): the one pass behind clipping.
  m.def("grad_norm(Tensor[] tensors, float norm_type=2.) -> Tensor");
}

namespace {

// Sparse tensors dispatch to the Sparse* keys before any kernel sees them; answer there with a clear error
// instead of the dispatcher's "could not run" message.
void reject_sparse(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto args = torch::jit::last(*stack, schema.arguments().size());
  for (size_t a = 0; a < args.size(); ++a) {
    const auto check = [&](const at::Tensor& t, const std::string& where) {
      TORCH_CHECK(!t.defined() || t.layout() == at::kStrided, schema.name(), ": ", where,
                  " is a sparse tensor; fused_optim needs dense tensors (for sparse gradients use "
                  "torch.optim.SparseAdam)");
    };
    if (args[a].isTensor()) check(args[a].toTensor(), schema.arguments()[a].name());
    if (args[a].isTensorList()) {
      const auto list = args[a].toTensorList();
      for (size_t i = 0; i < list.size(); ++i) {
        check(list.get(i), schema.arguments()[a].name() + "[" + std::to_string(i) + "]");
      }
    }
  }
  TORCH_CHECK(false, schema.name(), ": sparse tensors are not supported");
}
}  // namespace

// The Autograd-key kernel of an in-place optimizer op. There is no graph to record, so it only does what torch's
// generic fallbacks would (refuse to mutate tensors that require grad while grad mode is on, run the op below
// autograd, bump the version counters of what it mutated), but unboxed: the generic fallbacks box every tensor of
// every list into an IValue, which cost more than the kernels themselves for 1000 small tensors.
template <const char* kName, class Sig>
struct InPlaceAutograd;

template <const char* kName, class R, class... Args>
struct InPlaceAutograd<kName, R(Args...)> {
  static R call(Args... args) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<R(Args...)>();
    static const std::vector<bool> mutated = [] {
      std::vector<bool> m;
      for (const auto& a : op.schema().arguments()) m.push_back(a.alias_info() && a.alias_info()->isWrite());
      return m;
    }();
    if (c10::GradMode::is_enabled()) {
      size_t i = 0;
      (check_no_grad(args, mutated[i++]), ...);
    }
    const auto below_autograd = [&] {
      at::AutoDispatchBelowADInplaceOrView guard;
      return op.call(args...);
    };
    const auto bump_all = [&] {
      size_t i = 0;
      (bump(args, mutated[i++]), ...);
    };
    if constexpr (std::is_void_v<R>) {
      below_autograd();
      bump_all();
    } else {  // a fresh result (LAMB's norms), outside autograd
      R result = below_autograd();
      bump_all();
      return result;
    }
  }

 private:
  static void check_no_grad(at::TensorList list, bool mutated) {
    for (const auto& t : list) check_no_grad(t, mutated);
  }
  static void check_no_grad(const std::optional<at::TensorList>& list, bool mutated) {
    if (list) check_no_grad(*list, mutated);
  }
  static void check_no_grad(const at::Tensor& t, bool mutated) {
    TORCH_CHECK(!mutated || !t.defined() || !t.requires_grad(), kName,
                " updates tensors that require grad in place; call it under torch.no_grad() (optimizer.step() "
                "does)");
  }
  template <class T>
  static void check_no_grad(const T&, bool) {}

  static void bump(at::TensorList list, bool mutated) {
    if (mutated) {
      for (const auto& t : list) t.unsafeGetTensorImpl()->bump_version();
    }
  }
  static void bump(const std::optional<at::TensorList>& list, bool mutated) {
    if (list) bump(*list, mutated);
  }
  template <class T>
  static void bump(const T&, bool) {}
};

#define FUSED_OPTIM_NAME(op, sig) constexpr char k_##op##name[] = "fused_optim::" #op;
FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_NAME)
#undef FUSED_OPTIM_NAME

TORCH_LIBRARY_IMPL(fused_optim, Autograd, m) {
#define FUSED_OPTIM_AUTOGRAD(op, sig) m.impl(#op, &InPlaceAutograd<k_##op##name, sig>::call);
  FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_AUTOGRAD)
#undef FUSED_OPTIM_AUTOGRAD
}

TORCH_LIBRARY_IMPL(fused_optim, SparseCPU, m) {
#define FUSED_OPTIM_SPARSE(op, sig) m.impl(#op, torch::CppFunction::makeFromBoxedFunction<&reject_sparse>());
  FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_SPARSE)
}
TORCH_LIBRARY_IMPL(fused_optim, SparseCUDA, m) {
  FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_SPARSE)
#undef FUSED_OPTIM_SPARSE
}
