// fused_optim._C: the Python module of the compiled core. Importing it loads the operators (ops.cpp and the
// kernels); the module itself only reports how the library was built and exposes test hooks.
#include <torch/extension.h>
#include <torch/version.h>

#include <mutex>
#include <tuple>
#include <vector>

#include "../cuda/launch_plan.h"
#include "common/adam_args.h"
#include "common/sgd_args.h"
#include "cpu/engine.h"
#include "cpu/kernels.h"

namespace {

// Replays the CUDA engine's launch plan on the host, for tests: returns, for every block of every launch,
// (launch, tensor index, begin, end, threads_ok), where threads_ok says that simulating the block's threads over
// its range visited each element exactly once (checked when check_threads is set).
template <int DEPTH>
std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>> replay(const std::vector<int64_t>& numels,
                                                                         bool aligned, bool check_threads) {
  namespace fc = fused_optim::cuda;
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>> out;
  int64_t launch_id = 0;
  fc::plan_launches<DEPTH>(
      static_cast<int64_t>(numels.size()), [&](int64_t i) { return numels[i]; },
      [&](int64_t i, int d) { return reinterpret_cast<void*>((i + 1) * 4096 + d); },
      [&](const fc::TensorListMeta<DEPTH>& meta, int blocks) {
        for (int b = 0; b < blocks; ++b) {
          const fc::BlockRange r = fc::block_range(meta, b);
          bool ok = r.begin < r.end;
          for (int d = 0; d < DEPTH; ++d) {
            ok = ok &&
                 meta.addresses[d][r.tensor] == reinterpret_cast<void*>((meta.tensor_index[r.tensor] + 1) * 4096 + d);
          }
          if (check_threads && ok) {
            std::vector<int> visits(r.end - r.begin, 0);
            constexpr int kThreads = 512;
            for (int t = 0; t < kThreads; ++t) {
              fc::for_each_in_block<4>(r, aligned, t, kThreads, [&](int64_t i, int count) {
                for (int k = 0; k < count; ++k) visits[i + k - r.begin] += 1;
              });
            }
            for (int v : visits) ok = ok && v == 1;
          }
          out.emplace_back(launch_id, meta.tensor_index[r.tensor], r.begin, r.end, ok);
        }
        ++launch_id;
      });
  return out;
}

// Runs the CPU engine's split over fake tensors of the given sizes (nothing is allocated), for tests: returns the
// (tensor, begin, end) spans the threads were handed.
std::vector<std::tuple<int64_t, int64_t, int64_t>> cpu_spans(const std::vector<int64_t>& numels) {
  std::vector<int64_t> offsets{0};
  for (int64_t n : numels) offsets.push_back(offsets.back() + n);
  std::mutex mutex;
  std::vector<std::tuple<int64_t, int64_t, int64_t>> spans;
  fused_optim::cpu::parallel_for_spans(offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const std::lock_guard<std::mutex> lock(mutex);
    spans.emplace_back(t, begin, end);
  });
  return spans;
}

// The same dispatcher entry as torch.ops.fused_optim.adam_, bound with pybind11: converting long tensor lists
// here costs a fraction of torch.ops' generic argument parsing (which dominated the step for 1000 small tensors).
// The optimizers use it in eager mode; under torch.compile they call torch.ops so the compiler sees the op.
void adam_eager(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                const std::vector<at::Tensor>& max_exp_avg_sqs, const std::vector<at::Tensor>& state_steps,
                const at::Tensor& lr, double beta1, double beta2, double weight_decay, double eps, bool amsgrad,
                bool maximize, bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
                const std::optional<at::Tensor>& found_inf) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fused_optim::adam_", "").typed<fused_optim::AdamSignature>();
  op.call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay, eps,
          amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf);
}

void sgd_eager(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
               const std::vector<at::Tensor>& momentum_buffers, const at::Tensor& lr, double weight_decay,
               double momentum, double dampening, bool nesterov, bool maximize, bool is_first_step,
               const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("fused_optim::sgd_", "").typed<fused_optim::SgdSignature>();
  op.call(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize, is_first_step,
          grad_scale, found_inf);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused_optim compiled core: operators are in torch.ops.fused_optim; this module reports build facts.";
#ifdef FUSED_OPTIM_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_version") = std::to_string(FUSED_OPTIM_CUDA_MAJOR) + "." + std::to_string(FUSED_OPTIM_CUDA_MINOR);
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_version") = py::none();
#endif
  m.attr("torch_version") = TORCH_VERSION;
  m.def(
      "cpu_isa", [] { return std::string(fused_optim::cpu::active_kernels().isa); },
      "The instruction set of the CPU kernels in use.");
  m.def("cpu_supported_isas", &fused_optim::cpu::supported_isas,
        "The instruction sets this CPU can run, narrowest first.");
  m.def("set_cpu_isa", &fused_optim::cpu::set_isa, "Use the CPU kernels of another instruction set (for tests).");
  m.def(
      "_replay_cuda_plan",
      [](const std::vector<int64_t>& numels, int depth, bool aligned, bool check_threads) {
        switch (depth) {
          case 1: return replay<1>(numels, aligned, check_threads);
          case 2: return replay<2>(numels, aligned, check_threads);
          case 3: return replay<3>(numels, aligned, check_threads);
          case 4: return replay<4>(numels, aligned, check_threads);
          case 5: return replay<5>(numels, aligned, check_threads);
          case 6: return replay<6>(numels, aligned, check_threads);
          default: TORCH_CHECK(false, "_replay_cuda_plan: depth must be 1..6, got ", depth);
        }
      },
      py::arg("numels"), py::arg("depth"), py::arg("aligned") = true, py::arg("check_threads") = true);
  m.def("adam_", &adam_eager, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("state_steps"), py::kw_only(), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("weight_decay"), py::arg("eps"), py::arg("amsgrad"), py::arg("maximize"),
        py::arg("decoupled_weight_decay"), py::arg("grad_scale") = py::none(), py::arg("found_inf") = py::none(),
        py::call_guard<py::gil_scoped_release>(),
        "Eager binding of torch.ops.fused_optim.adam_ (same dispatcher entry).");
  m.def("sgd_", &sgd_eager, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"), py::kw_only(),
        py::arg("lr"), py::arg("weight_decay"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("is_first_step"), py::arg("grad_scale") = py::none(),
        py::arg("found_inf") = py::none(), py::call_guard<py::gil_scoped_release>(),
        "Eager binding of torch.ops.fused_optim.sgd_ (same dispatcher entry).");
  m.def("_cpu_spans", &cpu_spans, py::arg("numels"));
  m.attr("chunk_size") = fused_optim::cuda::kChunkSize;
  m.attr("max_blocks_per_launch") = fused_optim::cuda::kMaxBlocks;
}
