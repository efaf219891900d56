// Input checking and layout handling shared by the CPU and CUDA bindings. The kernels treat every tensor as a
// flat array of numel() elements, which is only right if a parameter and its gradient and state put the same
// element at the same flat index. TensorLists verifies devices, dtypes and shapes (naming the list and index in
// every error), passes tensors that already agree with their parameter's layout straight through, and stages the
// rest (a gradient with other strides, a sliced parameter) through temporaries laid out like the parameter,
// copying mutated ones back in finish(). The common case costs no copies.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace fused_optim {

struct ListArg {
  const char* name;
  at::TensorList tensors;
  bool mutated;
  bool may_be_empty = false;                           // e.g. max_exp_avg_sqs without amsgrad
  std::optional<at::ScalarType> dtype = std::nullopt;  // the dtype every tensor must have; unset: the params'
  bool convert = false;  // tensors of another dtype are staged as converted copies (gradients) instead of refused
};

class TensorLists {
 public:
  // lists[0] must be the parameters; every other list must match them in length (or be empty where allowed),
  // device and shape, and have its ListArg's dtype.
  TensorLists(const char* op, std::vector<ListArg> lists);

  size_t size() const { return count_; }
  at::ScalarType dtype() const { return dtype_; }  // the params'
  bool empty(size_t list) const { return ptrs_[list].empty(); }
  const at::Device& device() const { return device_; }
  void* ptr(size_t list, size_t i) const { return ptrs_[list][i]; }
  int64_t numel(size_t i) const { return numels_[i]; }
  // offsets[i]: the first element of tensor i when all are laid end to end; offsets[size()] is the total.
  std::vector<int64_t> offsets() const;

  // Copies results back into the mutated tensors that had to be staged. Call after the kernels ran.
  void finish();

 private:
  struct Staged {
    at::Tensor original;
    at::Tensor copy;
    bool copy_back;
  };
  // Raw pointers, not Tensor copies: for 1000 small tensors the reference counting alone was measurable.
  std::vector<std::vector<void*>> ptrs_;  // [list][i]: the tensor's data, or its staging copy's
  std::vector<int64_t> numels_;
  std::vector<Staged> staged_;
  size_t count_ = 0;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_{at::kCPU};
};

// The master_params list (optional in every op's schema): float32 masters or int16 low halves, one per param.
inline ListArg master_list(const std::optional<at::TensorList>& masters, std::optional<at::ScalarType> dtype) {
  return {"master_params", masters.value_or(at::TensorList()), true, /*may_be_empty=*/true, dtype};
}

// A one-element tensor argument (lr, grad_scale, found_inf): checks it and, when it lives on the CPU, returns its
// value so the caller need not touch device memory.
void check_scalar_tensor(const char* op, const char* name, const at::Tensor& t, const at::Device& device);
std::optional<double> host_value(const at::Tensor& t);

// The scalar tensors every op takes (lr is absent for an op that does not use it). Values living on the CPU are read
// here (no device memory is touched); those on the device stay unset and the CUDA kernels read them in place.
struct ScalarArgs {
  std::optional<double> lr;
  std::optional<double> inv_grad_scale = 1.0;  // 1/grad_scale; 1 without a GradScaler
  std::optional<bool> found_inf = false;
};
ScalarArgs prepare_scalars(const char* op, const TensorLists& lists, const std::optional<at::Tensor>& lr,
                           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf);

// Step counters: one element per parameter, on `device`, all float32 (torch.optim's format, exact up to 2^24) or
// all float64 (exact up to 2^53; the optimizers widen counters that near 2^24).
void check_steps(const char* op, at::TensorList steps, size_t count, const at::Device& device);
// The value of one CPU step counter.
double host_step(const at::Tensor& step);
// Adds one to each (CPU) step counter and returns the new values.
std::vector<double> advance_host_steps(at::TensorList steps);

// Finite and in [lo, hi], or [lo, hi) when hi_open (betas must stay below 1).
void check_hyperparameter(const char* op, const char* name, double value, double lo, double hi, bool hi_open = false);

}  // namespace fused_optim
