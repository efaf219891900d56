// The scalar tensor arguments (lr, grad_scale, found_inf) as the kernels see them: host values when they live on
// the CPU, pointers into device memory otherwise, so no step ever synchronizes with the host.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>

#include <optional>

#include "../csrc/common/tensor_lists.h"
#include "typed_io.cuh"

namespace fused_optim::cuda {

// A value that is either known on the host or one element of device memory, of any floating dtype the CPU path
// accepts too (a bf16 lr is as valid on the GPU as on the CPU).
struct DeviceScalar {
  double host = 0.0;
  const void* device = nullptr;
  Dtype dtype = Dtype::kF32;

  static DeviceScalar of(const at::Tensor& t, std::optional<double> host_value) {
    DeviceScalar s;
    if (host_value) {
      s.host = *host_value;
    } else {
      s.device = t.const_data_ptr();
      s.dtype = dtype_code(t.scalar_type());
    }
    return s;
  }
  __host__ __device__ bool on_device() const { return device != nullptr; }
  __device__ double get() const { return device ? load1<double>(device, dtype, 0) : host; }
};

struct DeviceScalars {
  DeviceScalar lr;
  DeviceScalar grad_scale;  // on the host: already the inverse; on the device: the scale itself
  DeviceScalar found_inf;   // only ever on the device: a host flag is handled before any launch
  bool steps_f64 = false;   // the step counters are float64 (else float32), see check_steps

  // lr is absent for an op that does not use it (LAMB's first pass).
  static DeviceScalars of(const ScalarArgs& host, const std::optional<at::Tensor>& lr,
                          const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
    DeviceScalars s;
    if (lr) s.lr = DeviceScalar::of(*lr, host.lr);
    s.grad_scale.host = host.inv_grad_scale.value_or(1.0);
    if (grad_scale && !host.inv_grad_scale) s.grad_scale = DeviceScalar::of(*grad_scale, std::nullopt);
    if (found_inf && !host.found_inf) s.found_inf = DeviceScalar::of(*found_inf, std::nullopt);
    return s;
  }
  DeviceScalars with_steps(at::TensorList steps) const {
    DeviceScalars s = *this;
    s.steps_f64 = !steps.empty() && steps[0].scalar_type() == at::kDouble;
    return s;
  }
  // One step counter, by the address the launch plan holds.
  __device__ double step(const void* counter) const {
    return steps_f64 ? *static_cast<const double*>(counter) : double(*static_cast<const float*>(counter));
  }
  // The count the next advance stores in that counter (rounded to its dtype, as the advance rounds it).
  __device__ double next_step(const void* counter) const {
    const double next = step(counter) + 1.0;
    return steps_f64 ? next : double(static_cast<float>(next));
  }
  __device__ bool skip() const { return found_inf.on_device() && found_inf.get() != 0.0; }
  __device__ double inv_grad_scale() const { return grad_scale.on_device() ? 1.0 / grad_scale.get() : grad_scale.host; }
};

// Step counters live on the device. Like torch's fused path: advance every counter in one launch before the
// kernels read the new values, and take the increment back where found_inf (on the device) says the step was
// skipped, with no host synchronisation either way.
inline void advance_steps(at::TensorList steps) {
  at::_foreach_add_(steps, 1.0);
}
inline void undo_skipped_steps(at::TensorList steps, const DeviceScalars& scalars,
                               const std::optional<at::Tensor>& found_inf) {
  if (!scalars.found_inf.on_device() || steps.empty()) return;
  // Take back exactly one: the kernels skip on any non-zero flag, but GradScaler sums its per-device flags (2.0
  // when two devices overflowed) and a NaN flag would poison the counters. The foreach op wants a 0-dim tensor.
  const at::Tensor skipped = found_inf->ne(0).to(steps[0].scalar_type()).reshape({});
  at::_foreach_add_(steps, skipped, -1.0);
}

}  // namespace fused_optim::cuda
