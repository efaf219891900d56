// Picks the CPU kernel table at run time: the widest instruction set the CPU supports, unless the environment
// variable FUSED_OPTIM_CPU_ISA (or set_isa(), used by the tests) names another.
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels.h"

namespace fused_optim::cpu {
namespace {

struct Candidate {
  const KernelTable* table;
  bool supported;
};

std::vector<Candidate> candidates() {
  std::vector<Candidate> list{{&DEFAULT::kernels, true}};
#ifdef FUSED_OPTIM_X86_ISAS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  list.push_back({&AVX2::kernels, avx2});
  list.push_back({&AVX512::kernels, avx512});
#endif
  return list;
}

const KernelTable* find(const std::string& name) {
  std::string known;
  for (const auto& c : candidates()) {
    known += std::string(known.empty() ? "" : ", ") + c.table->isa;
    if (name == c.table->isa || (name == "avx2" && std::string(c.table->isa) == "AVX2") ||
        (name == "avx512" && std::string(c.table->isa) == "AVX512") ||
        (name == "default" && std::string(c.table->isa) == "DEFAULT")) {
      TORCH_CHECK(c.supported, "fused_optim: this CPU does not support the ", name, " instruction set");
      return c.table;
    }
  }
  TORCH_CHECK(false, "fused_optim: unknown CPU instruction set '", name, "' (known: ", known, ")");
}

const KernelTable* pick() {
  if (const char* env = std::getenv("FUSED_OPTIM_CPU_ISA"); env != nullptr && *env != '\0') return find(env);
  const KernelTable* best = nullptr;
  for (const auto& c : candidates()) {
    if (c.supported) best = c.table;
  }
  return best;
}

std::atomic<const KernelTable*>& active() {
  static std::atomic<const KernelTable*> table{pick()};
  return table;
}

}  // namespace

const KernelTable& active_kernels() {
  return *active().load(std::memory_order_relaxed);
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const auto& c : candidates()) {
    if (c.supported) names.emplace_back(c.table->isa);
  }
  return names;
}

void set_isa(const std::string& name) {
  active().store(find(name), std::memory_order_relaxed);
}

}  // namespace fused_optim::cpu
