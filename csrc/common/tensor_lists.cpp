#include "tensor_lists.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/ops/empty_strided.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace fused_optim {
namespace {

bool is_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The flat order a parameter's family uses: the parameter's own when it is dense, else row-major.
std::vector<int64_t> canonical_strides(const at::Tensor& param) {
  if (param.is_non_overlapping_and_dense()) return param.strides().vec();
  std::vector<int64_t> strides(param.dim());
  int64_t s = 1;
  for (int64_t d = param.dim() - 1; d >= 0; --d) {
    strides[d] = s;
    s *= std::max<int64_t>(param.size(d), 1);
  }
  return strides;
}

// Dense with exactly these strides (the stride of a size-1 dimension is irrelevant).
bool has_layout(const at::Tensor& t, const std::vector<int64_t>& strides) {
  if (!t.is_non_overlapping_and_dense()) return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) != 1 && t.stride(d) != strides[d]) return false;
  }
  return true;
}

}  // namespace

TensorLists::TensorLists(const char* op, std::vector<ListArg> lists) {
  TORCH_CHECK(!lists.empty(), op, ": no tensor lists");
  const at::TensorList params = lists[0].tensors;
  const char* first = lists[0].name;  // "params", or "tensors" for grad_norm
  count_ = params.size();
  for (const auto& l : lists) {
    TORCH_CHECK(l.tensors.size() == count_ || (l.may_be_empty && l.tensors.empty()), op, ": ", l.name, " has ",
                l.tensors.size(), " tensors but ", first, " has ", count_);
  }
  if (count_ == 0) return;
  device_ = params[0].device();
  dtype_ = params[0].scalar_type();
  TORCH_CHECK(is_float(dtype_), op, ": ", first, "[0] has dtype ", dtype_,
              "; supported dtypes are float32, float64, float16 and bfloat16");

  numels_.resize(count_);
  for (size_t i = 0; i < count_; ++i) numels_[i] = params[i].numel();
  // Strides of each family's flat order, computed only for parameters that are not plainly contiguous.
  std::vector<std::vector<int64_t>> strides(count_);

  ptrs_.reserve(lists.size());
  for (const auto& l : lists) {
    std::vector<void*>& ptrs = ptrs_.emplace_back();
    ptrs.reserve(l.tensors.size());
    for (size_t i = 0; i < l.tensors.size(); ++i) {
      const at::Tensor& t = l.tensors[i];
      const at::Tensor& p = params[i];
      TORCH_CHECK(t.defined(), op, ": ", l.name, "[", i, "] is undefined");
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", l.name, "[", i, "] is a sparse tensor (layout ", t.layout(),
                  "); fused_optim needs dense tensors (use torch.optim.SparseAdam for sparse gradients)");
      TORCH_CHECK(t.device() == device_, op, ": ", l.name, "[", i, "] is on ", t.device(), " but ", first, "[0] is on ",
                  device_, "; all tensors of one call must be on one device");
      const at::ScalarType want = l.dtype.value_or(dtype_);
      const bool convert = t.scalar_type() != want;
      TORCH_CHECK(!convert || (l.convert && is_float(t.scalar_type())), op, ": ", l.name, "[", i, "] has dtype ",
                  t.scalar_type(), " but must be ", want, l.dtype ? "" : " like ", l.dtype ? "" : first,
                  l.dtype ? "" : "[0]; one call takes one dtype per list");
      TORCH_CHECK(t.sizes() == p.sizes(), op, ": ", l.name, "[", i, "] has shape ", t.sizes(), " but ", first, "[", i,
                  "] has shape ", p.sizes());
      // The common case: both contiguous, same flat order.
      if (!convert && t.is_contiguous() && p.is_contiguous()) {
        ptrs.push_back(t.data_ptr());
        continue;
      }
      // An expanded view shares memory between its elements: updating it in place (through a staged copy that is
      // written back) would be wrong, so it is refused before anything is written.
      TORCH_CHECK(!l.mutated || at::has_internal_overlap(t) != at::MemOverlap::Yes, op, ": ", l.name, "[", i,
                  "] has elements that share memory (an expanded view?), so it cannot be updated in place");
      if (strides[i].empty()) strides[i] = canonical_strides(p);
      if (!convert && has_layout(t, strides[i])) {
        ptrs.push_back(t.data_ptr());
        continue;
      }
      at::Tensor copy = at::empty_strided(t.sizes(), strides[i], t.options().dtype(want));
      copy.copy_(t);
      ptrs.push_back(copy.data_ptr());
      staged_.push_back({t, std::move(copy), l.mutated});
    }
  }
}

std::vector<int64_t> TensorLists::offsets() const {
  std::vector<int64_t> out(count_ + 1, 0);
  for (size_t i = 0; i < count_; ++i) out[i + 1] = out[i] + numels_[i];
  return out;
}

void TensorLists::finish() {
  for (auto& s : staged_) {
    if (s.copy_back) s.original.copy_(s.copy);
  }
  staged_.clear();
}

void check_scalar_tensor(const char* op, const char* name, const at::Tensor& t, const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.numel() == 1, op, ": ", name, " must have one element, got shape ", t.sizes());
  TORCH_CHECK(is_float(t.scalar_type()), op, ": ", name, " must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu() || t.device() == device, op, ": ", name, " is on ", t.device(),
              " but the params are on ", device);
}

#ifdef FUSED_OPTIM_CUDA_EMULATION
namespace cuda::emulation {
bool scalars_on_device();
}
#endif

std::optional<double> host_value(const at::Tensor& t) {
  if (!t.device().is_cpu()) return std::nullopt;
#ifdef FUSED_OPTIM_CUDA_EMULATION  // tests/cuda_emulation can read CPU scalars in the kernels, as GPU memory
  if (cuda::emulation::scalars_on_device()) return std::nullopt;
#endif
  return t.item<double>();
}

ScalarArgs prepare_scalars(const char* op, const TensorLists& lists, const std::optional<at::Tensor>& lr,
                           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  const at::Device device = lists.size() ? lists.device() : at::Device(at::kCPU);
  ScalarArgs s;
  if (lr) {
    check_scalar_tensor(op, "lr", *lr, device);
    s.lr = host_value(*lr);
    if (s.lr) check_hyperparameter(op, "lr", *s.lr, 0.0, INFINITY);
  }
  if (grad_scale) {
    check_scalar_tensor(op, "grad_scale", *grad_scale, device);
    const auto scale = host_value(*grad_scale);
    s.inv_grad_scale = scale ? std::optional<double>(1.0 / *scale) : std::nullopt;
  }
  if (found_inf) {
    check_scalar_tensor(op, "found_inf", *found_inf, device);
    const auto inf = host_value(*found_inf);
    s.found_inf = inf ? std::optional<bool>(*inf != 0.0) : std::nullopt;
  }
  return s;
}

void check_steps(const char* op, at::TensorList steps, size_t count, const at::Device& device) {
  TORCH_CHECK(steps.size() == count, op, ": state_steps has ", steps.size(), " tensors but params has ", count);
  for (size_t i = 0; i < steps.size(); ++i) {
    const at::Tensor& s = steps[i];
    TORCH_CHECK(s.defined() && s.numel() == 1 && (s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble), op,
                ": state_steps[", i, "] must be a one-element float32 or float64 tensor");
    TORCH_CHECK(s.scalar_type() == steps[0].scalar_type(), op, ": state_steps[", i, "] is ", s.scalar_type(),
                " but state_steps[0] is ", steps[0].scalar_type(), "; the counters of one call share a dtype");
    TORCH_CHECK(s.device() == device, op, ": state_steps[", i, "] is on ", s.device(), " but params[", i, "] is on ",
                device);
  }
}

double host_step(const at::Tensor& step) {
  return step.scalar_type() == at::kDouble ? *step.const_data_ptr<double>() : *step.const_data_ptr<float>();
}

std::vector<double> advance_host_steps(at::TensorList steps) {
  std::vector<double> values(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].scalar_type() == at::kDouble) {
      values[i] = *steps[i].data_ptr<double>() += 1.0;
    } else {
      values[i] = *steps[i].data_ptr<float>() += 1.0f;
    }
  }
  return values;
}

void check_hyperparameter(const char* op, const char* name, double value, double lo, double hi, bool hi_open) {
  const bool below = hi_open ? value < hi : value <= hi;
  TORCH_CHECK(std::isfinite(value) && value >= lo && below, op, ": invalid ", name, " ", value,
              " (must be finite and in [", lo, ", ", hi, hi_open ? "))" : "])");
}

}  // namespace fused_optim
