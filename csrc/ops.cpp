// The operator schemas of the fused_optim namespace. Kernels register themselves per device (csrc/cpu/*.cpp,
// cuda/*.cu); fake kernels for torch.compile live in python/fused_optim/_meta.py. No Python here: the CMake build
// links this file into a plain C++ library.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <string>

TORCH_LIBRARY(fused_optim, m) {
  m.set_python_module("fused_optim._meta");
  // Adam and AdamW (decoupled_weight_decay). Shaped like ATen's _fused_adam_: mutated lists are annotated, the
  // gradients are read only, state_steps are advanced by the op, and a step where found_inf is nonzero changes
  // nothing. lr is a one-element tensor on the CPU or on the params' device.
  m.def(
      "adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] state_steps, *, Tensor lr, float beta1, float beta2, "
      "float weight_decay, float eps, bool amsgrad, bool maximize, bool decoupled_weight_decay, "
      "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
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

TORCH_LIBRARY_IMPL(fused_optim, SparseCPU, m) {
  m.impl("adam_", torch::CppFunction::makeFromBoxedFunction<&reject_sparse>());
}
TORCH_LIBRARY_IMPL(fused_optim, SparseCUDA, m) {
  m.impl("adam_", torch::CppFunction::makeFromBoxedFunction<&reject_sparse>());
}
