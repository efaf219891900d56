// CPU binding of fused_optim::rmsprop_: checks the arguments, advances the step counters and hands pointers to
// the active ISA's kernel.
#include <torch/library.h>

#include "../common/rmsprop_args.h"
#include "launch.h"

namespace fused_optim::cpu {
namespace {

void rmsprop_(at::TensorList params, at::TensorList grads, at::TensorList square_avgs, at::TensorList grad_avgs,
              at::TensorList momentum_buffers, at::TensorList state_steps, const at::Tensor& lr, double alpha,
              double eps, double weight_decay, double momentum, bool centered, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
              std::optional<at::TensorList> master_params) {
  RmspropArgs a = prepare_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, lr, alpha, eps,
                                  weight_decay, momentum, centered, maximize, grad_scale, found_inf, master_params);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  advance_host_steps(state_steps);  // torch.optim.RMSprop keeps a step count; the rule itself does not use it
  const bool has_momentum = momentum != 0;
  std::vector<size_t> arrays{kRmsParams, kRmsGrads, kRmsSquareAvgs};
  if (centered) arrays.push_back(kRmsGradAvgs);
  if (has_momentum) arrays.push_back(kRmsMomentumBuffers);
  const auto launch = make_launch(a.lists, arrays, kRmsMasters, a.hyper, a.scalars);
  active_kernels().rmsprop[a.precision.index][2 * centered + has_momentum](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("rmsprop_", &rmsprop_);
}

}  // namespace fused_optim::cpu
