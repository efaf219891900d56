// fused_optim._C: the Python module of the compiled core. Importing it loads the operators (ops.cpp and the
// kernels); the module itself only reports how the library was built and exposes test hooks.
#include <torch/extension.h>
#include <torch/version.h>

#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "../cuda/launch_plan.h"
#include "common/op_list.h"
#include "cpu/engine.h"
#include "cpu/kernels.h"

namespace {

// Replays the CUDA engine's launch plan on the host, for tests: returns, for every block of every launch,
// (launch, tensor index, begin, end, threads_ok), where threads_ok says that simulating the block's threads over
// its range visited each element exactly once (checked when check_threads is set).
using ReplayedBlocks = std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>>;

template <int DEPTH, int kArgBytes>
ReplayedBlocks replay(const std::vector<int64_t>& numels, bool aligned, bool check_threads) {
  namespace fc = fused_optim::cuda;
  ReplayedBlocks out;
  int64_t launch_id = 0;
  fc::plan_launches<DEPTH, kArgBytes>(
      static_cast<int64_t>(numels.size()), [&](int64_t i) { return numels[i]; },
      [&](int64_t i, int d) { return reinterpret_cast<void*>((i + 1) * 4096 + d); },
      [&](const fc::TensorListMeta<DEPTH, kArgBytes>& meta, int blocks) {
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

template <int kArgBytes>
ReplayedBlocks replay_depth(const std::vector<int64_t>& numels, int depth, bool aligned, bool check_threads) {
  switch (depth) {
    case 1: return replay<1, kArgBytes>(numels, aligned, check_threads);
    case 2: return replay<2, kArgBytes>(numels, aligned, check_threads);
    case 3: return replay<3, kArgBytes>(numels, aligned, check_threads);
    case 4: return replay<4, kArgBytes>(numels, aligned, check_threads);
    case 5: return replay<5, kArgBytes>(numels, aligned, check_threads);
    case 6: return replay<6, kArgBytes>(numels, aligned, check_threads);
    case 7: return replay<7, kArgBytes>(numels, aligned, check_threads);  // Adam with amsgrad and a master
    default: TORCH_CHECK(false, "_replay_cuda_plan: depth must be 1..", fused_optim::cuda::kMaxDepth, ", got ", depth);
  }
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

// A tensor list converted once and kept on the C++ side (fused_optim._C.TensorList). The optimizers hold one per
// parameter and state list of a bucket: converting a list of 1000 tensors through pybind11 costs tens of
// microseconds (each conversion also moves the tensor's Python reference count), and those lists do not change
// from step to step; only the gradients are converted on every call.
struct CachedTensorList {
  std::vector<at::Tensor> tensors;
  // Each tensor's dtype when the list was made: `p.data = p.data.double()` (module.double(), .to(dtype) on part
  // of a model) keeps the tensor object but changes what the plan built from it assumed. (A device cannot change
  // that way: module.to(device) makes new parameters, which the identity check sees.)
  std::vector<caffe2::TypeMeta> dtypes;

  CachedTensorList() = default;  // dtypes left empty: a step's gradients, never asked `holds`
  explicit CachedTensorList(std::vector<at::Tensor> list) : tensors(std::move(list)) {
    dtypes.reserve(tensors.size());
    for (const auto& t : tensors) dtypes.push_back(t.dtype());
  }
};

// An eager binding's tensor-list argument: a CachedTensorList, borrowed, or a Python list, converted.
struct ListArg {
  const std::vector<at::Tensor>* cached = nullptr;
  std::vector<at::Tensor> converted;
  at::TensorList get() const { return cached ? at::TensorList(*cached) : at::TensorList(converted); }
};

}  // namespace

namespace pybind11::detail {
template <>
struct type_caster<ListArg> {
  PYBIND11_TYPE_CASTER(ListArg, const_name("list[Tensor] | fused_optim._C.TensorList"));
  bool load(handle src, bool convert) {
    if (isinstance<CachedTensorList>(src)) {
      value.cached = &src.cast<const CachedTensorList&>().tensors;
      return true;
    }
    make_caster<std::vector<at::Tensor>> list;
    if (!list.load(src, convert)) return false;
    value.converted = cast_op<std::vector<at::Tensor>&&>(std::move(list));
    return true;
  }
};
}  // namespace pybind11::detail

namespace {

// The same dispatcher entry as torch.ops.fused_optim.<op>, bound with pybind11: cheaper than torch.ops' generic
// argument parsing, which dominated the step for 1000 small tensors. The optimizers use these in eager mode, with
// arguments in schema order (fused_optim._ops arranges that); under torch.compile they call torch.ops so the
// compiler sees the op.
template <class T>
struct PyArg {
  using type = T;
};
template <>
struct PyArg<at::TensorList> {
  using type = const ListArg&;
};
template <>
struct PyArg<std::optional<at::TensorList>> {
  using type = const std::optional<ListArg>&;
};
template <class T>
decltype(auto) unwrap(T&& arg) {
  return std::forward<T>(arg);
}
at::TensorList unwrap(const ListArg& arg) {
  return arg.get();
}
std::optional<at::TensorList> unwrap(const std::optional<ListArg>& arg) {
  return arg ? std::optional<at::TensorList>(arg->get()) : std::nullopt;
}

template <const char* kName, class Sig>
struct Eager;
template <const char* kName, class R, class... Args>
struct Eager<kName, R(Args...)> {
  static R call(typename PyArg<Args>::type... args) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<R(Args...)>();
    return op.call(unwrap(args)...);
  }
};

#define FUSED_OPTIM_NAME(op, sig) constexpr char k_##op##name[] = "fused_optim::" #op;
FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_NAME)
#undef FUSED_OPTIM_NAME

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
      [](const std::vector<int64_t>& numels, int depth, bool aligned, bool check_threads, int arg_bytes) {
        TORCH_CHECK(arg_bytes == fused_optim::cuda::kClassicArgBytes || arg_bytes == fused_optim::cuda::kLargeArgBytes,
                    "_replay_cuda_plan: arg_bytes must be ", fused_optim::cuda::kClassicArgBytes, " or ",
                    fused_optim::cuda::kLargeArgBytes, ", got ", arg_bytes);
        return arg_bytes == fused_optim::cuda::kLargeArgBytes
                   ? replay_depth<fused_optim::cuda::kLargeArgBytes>(numels, depth, aligned, check_threads)
                   : replay_depth<fused_optim::cuda::kClassicArgBytes>(numels, depth, aligned, check_threads);
      },
      py::arg("numels"), py::arg("depth"), py::arg("aligned") = true, py::arg("check_threads") = true,
      py::arg("arg_bytes") = fused_optim::cuda::kClassicArgBytes);
  py::class_<CachedTensorList>(m, "TensorList",
                               "A list of tensors converted once, for ops called every step with the same tensors.")
      .def(py::init([](std::vector<at::Tensor> tensors) { return CachedTensorList(std::move(tensors)); }))
      .def("__len__", [](const CachedTensorList& l) { return l.tensors.size(); })
      .def("__getitem__",
           [](const CachedTensorList& l, py::ssize_t i) {
             const auto n = static_cast<py::ssize_t>(l.tensors.size());
             if (i < 0) i += n;
             if (i < 0 || i >= n) throw py::index_error("TensorList index out of range");
             return l.tensors[i];
           })
      .def("tensors", [](const CachedTensorList& l) { return l.tensors; })
      // Reading 1000 .grad attributes in Python costs about 45 us a step; here it is one C++ loop.
      .def(
          "grads",
          [](const CachedTensorList& l) -> std::optional<CachedTensorList> {
            CachedTensorList grads;
            grads.tensors.reserve(l.tensors.size());
            for (const auto& t : l.tensors) {
              const at::Tensor& g = t.grad();
              if (!g.defined()) return std::nullopt;
              grads.tensors.push_back(g);
            }
            return grads;
          },
          "The tensors' .grad as a TensorList, or None if any tensor has no gradient.")
      .def(
          "holds",
          [](const CachedTensorList& l, const py::handle& items) {
            if (!PyList_Check(items.ptr()) || static_cast<size_t>(PyList_GET_SIZE(items.ptr())) != l.tensors.size()) {
              return false;
            }
            const bool check_dtypes = l.dtypes.size() == l.tensors.size();
            for (size_t i = 0; i < l.tensors.size(); ++i) {
              PyObject* item = PyList_GET_ITEM(items.ptr(), static_cast<Py_ssize_t>(i));
              const c10::TensorImpl* impl = l.tensors[i].unsafeGetTensorImpl();
              if (!THPVariable_Check(item) || THPVariable_Unpack(item).unsafeGetTensorImpl() != impl ||
                  (check_dtypes && impl->dtype() != l.dtypes[i])) {
                return false;
              }
            }
            return true;
          },
          "Whether `items` is a list of these very tensors, in this order (by identity, without a Python loop), "
          "each still of the dtype it had when the list was made.")
      .def(
          "same_data",
          [](const CachedTensorList& l, const CachedTensorList& other) {
            if (l.tensors.size() != other.tensors.size()) return false;
            for (size_t i = 0; i < l.tensors.size(); ++i) {
              if (l.tensors[i].data_ptr() != other.tensors[i].data_ptr()) return false;
            }
            return true;
          },
          "Whether each tensor starts at the same address as the one at its position in `other` (a view and the "
          "tensor it was made from).")
      .def(
          "host_max",
          [](const CachedTensorList& l) -> std::optional<double> {
            double top = -INFINITY;
            for (const auto& t : l.tensors) {
              if (!t.device().is_cpu() || t.numel() != 1) return std::nullopt;
              const double value = t.scalar_type() == at::kDouble  ? *t.const_data_ptr<double>()
                                   : t.scalar_type() == at::kFloat ? *t.const_data_ptr<float>()
                                                                   : t.item<double>();
              top = std::max(top, value);
            }
            return top;
          },
          "The largest value of one-element CPU tensors (step counters), read without Python tensor reads; None "
          "when a tensor is elsewhere or not one element.")
      .def(
          "uniform",
          [](const CachedTensorList& l) {
            for (const auto& t : l.tensors) {
              if (t.device() != l.tensors[0].device() || t.scalar_type() != l.tensors[0].scalar_type()) return false;
            }
            return true;
          },
          "True when every tensor has the first one's device and dtype (one multi-tensor call can take them all).");
#define FUSED_OPTIM_EAGER(op, sig)                                                      \
  m.def(#op, &Eager<k_##op##name, sig>::call, py::call_guard<py::gil_scoped_release>(), \
        "Eager binding of torch.ops.fused_optim." #op " (same dispatcher entry; positional, in schema order).");
  FUSED_OPTIM_FOR_EACH_OP(FUSED_OPTIM_EAGER)
#undef FUSED_OPTIM_EAGER
  m.def("_cpu_spans", &cpu_spans, py::arg("numels"));
  m.attr("chunk_size") = fused_optim::cuda::kChunkSize;
}
