// The scheduler of the CUDA emulation (emulation.h): each block's threads are fibers on the calling thread, run in
// turn until each finishes or waits at a barrier or a warp shuffle; a barrier opens when every thread of the block
// waits at it, a shuffle when every lane its mask names does. Anything else that stops all threads (a thread that
// exited while others wait for it, lanes that disagree on a shuffle's mask) is an error that names the block and
// the threads. Each round runs the warps in a different order (a fixed pseudo-random one per block and round), so
// a kernel that relies on one warp running before another without a barrier between them gets caught.
//
// Fibers switch with a few instructions of assembly (x86-64 System V) instead of swapcontext, which makes a system
// call per switch and, under AddressSanitizer, clears the new stack's shadow: a block of 512 threads switches
// 1024 times at the least, and the sanitized tests took ten times as long.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "emulation.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FUSED_OPTIM_EMULATION_ASAN 1
#endif

#if !defined(__x86_64__) || !defined(__linux__)
#error "the CUDA emulation switches fibers with x86-64 Linux assembly"
#endif

// Saves the callee-saved registers and the floating-point control words on the current stack, stores the stack
// pointer in *from, and resumes the stack `to` that an earlier switch (or make_fiber) left.
extern "C" void fused_optim_emulation_switch(void** from, void* to);
asm(R"(
  .text
  .globl fused_optim_emulation_switch
  .hidden fused_optim_emulation_switch
  .type fused_optim_emulation_switch, @function
fused_optim_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fused_optim_emulation_switch, .-fused_optim_emulation_switch
  .section .note.GNU-stack, "", @progbits
  .text
)");

// The bounds of the kernels' shared memory (emulation.h's __shared__), defined by the linker; weak, for a build
// whose kernels declare none.
extern "C" char __start_fused_optim_emulated_shared[] __attribute__((weak));
extern "C" char __stop_fused_optim_emulated_shared[] __attribute__((weak));

namespace fused_optim::cuda::emulation {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = size_t(512) << 10;  // ample under AddressSanitizer; only pages touched are backed

enum class Wait { kNone, kBarrier, kShuffle, kExited };

struct Thread {
  void* sp = nullptr;  // while switched out
  Wait wait = Wait::kNone;
  // The shuffle it waits at, then its result.
  unsigned mask = 0;
  unsigned delta = 0;
  int width = 0;
  uint64_t value = 0;
  void* fake_stack = nullptr;  // AddressSanitizer's, while the fiber is switched out
};

// One launch at a time per host thread: kernels cannot launch kernels.
struct Launch {
  bool active = false;
  const std::function<void()>* body = nullptr;
  Dim3 thread_index, block_index, block_dim;
  std::vector<Thread> threads;
  char* stacks = nullptr;      // one region: per thread, a guard page then its stack
  std::vector<void*> last_sp;  // per stack: where its last fiber stopped (null: never used)
  int current = -1;
  void* scheduler_sp = nullptr;
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
  std::exception_ptr error;
};

thread_local Launch launch_state;
std::atomic<int64_t> launch_count{0};

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

size_t slot_bytes() {
  return page_size() + kStackBytes;
}

char* stack_of(int thread) {
  return launch_state.stacks + thread * slot_bytes() + page_size();
}

// Stacks for the most threads a block can have, mapped once and never unmapped: under AddressSanitizer a stack
// keeps the poison of frames its fibers never returned from, which memory mapped later at the same addresses
// would inherit.
void reserve_stacks() {
  Launch& l = launch_state;
  if (l.stacks) return;
  void* region = mmap(nullptr, kMaxThreads * slot_bytes(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TORCH_CHECK(region != MAP_FAILED, "CUDA emulation: cannot map stacks for ", kMaxThreads, " threads");
  l.stacks = static_cast<char*>(region);
  l.last_sp.assign(kMaxThreads, nullptr);
  // A guard page below each stack: an overflow faults instead of writing into the next thread's stack.
  for (int t = 0; t < kMaxThreads; ++t) {
    TORCH_CHECK(mprotect(l.stacks + t * slot_bytes(), page_size(), PROT_NONE) == 0,
                "CUDA emulation: cannot protect a stack's guard page");
  }
}

// From a fiber back to the scheduler; returns when the scheduler resumes this fiber (never if it exited).
void yield_to_scheduler(Wait wait) {
  Launch& l = launch_state;
  Thread& self = l.threads[l.current];
  self.wait = wait;
#ifdef FUSED_OPTIM_EMULATION_ASAN
  __sanitizer_start_switch_fiber(wait == Wait::kExited ? nullptr : &self.fake_stack, l.scheduler_stack,
                                 l.scheduler_stack_size);
#endif
  fused_optim_emulation_switch(&self.sp, l.scheduler_sp);
#ifdef FUSED_OPTIM_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(self.fake_stack, &l.scheduler_stack, &l.scheduler_stack_size);
#endif
}

[[noreturn]] void thread_main() {
  Launch& l = launch_state;
#ifdef FUSED_OPTIM_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &l.scheduler_stack, &l.scheduler_stack_size);
#endif
  try {
    (*l.body)();
  } catch (...) {
    if (!l.error) l.error = std::current_exception();
  }
  yield_to_scheduler(Wait::kExited);
  std::abort();  // an exited fiber is never resumed
}

// A fresh stack that the first switch to it enters thread_main on: the frame fused_optim_emulation_switch pops
// (control words, six registers, the return address), above it a null return address for thread_main, which
// enters with the stack as a call leaves it (8 below a 16-byte boundary).
void* make_fiber(int thread) {
  char* stack = stack_of(thread);
#ifdef FUSED_OPTIM_EMULATION_ASAN
  // The frames a fiber never returned from (this file's, at the top of its stack) are still poisoned.
  if (void* sp = launch_state.last_sp[thread]) {
    __asan_unpoison_memory_region(sp, static_cast<size_t>(stack + kStackBytes - static_cast<char*>(sp)));
  }
#endif
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + kStackBytes) & ~uintptr_t(15));
  uint64_t* sp = top - 9;
  uint32_t mxcsr;
  uint16_t fpu_control;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu_control));
  std::memcpy(sp, &mxcsr, sizeof(mxcsr));
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpu_control, sizeof(fpu_control));
  for (int r = 1; r <= 6; ++r) sp[r] = 0;  // r15 r14 r13 r12 rbx rbp
  sp[7] = reinterpret_cast<uint64_t>(&thread_main);
  sp[8] = 0;
  return sp;
}

void resume(int thread) {
  Launch& l = launch_state;
  l.current = thread;
  l.thread_index = {static_cast<unsigned>(thread), 0, 0};
#ifdef FUSED_OPTIM_EMULATION_ASAN
  __sanitizer_start_switch_fiber(&l.scheduler_fake_stack, stack_of(thread), kStackBytes);
#endif
  fused_optim_emulation_switch(&l.scheduler_sp, l.threads[thread].sp);
  l.last_sp[thread] = l.threads[thread].sp;
#ifdef FUSED_OPTIM_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(l.scheduler_fake_stack, nullptr, nullptr);
#endif
  l.current = -1;
}

std::string describe(const std::vector<Thread>& threads) {
  int counts[4] = {0, 0, 0, 0};
  for (const Thread& t : threads) ++counts[static_cast<int>(t.wait)];
  std::ostringstream out;
  out << counts[static_cast<int>(Wait::kBarrier)] << " at __syncthreads, " << counts[static_cast<int>(Wait::kShuffle)]
      << " at a shuffle, " << counts[static_cast<int>(Wait::kExited)] << " exited";
  return out.str();
}

// Opens the shuffles whose lanes have all arrived, checking that they agree; true if any opened.
bool release_shuffles(int threads) {
  Launch& l = launch_state;
  bool released = false;
  for (int warp = 0; warp < threads / kWarp; ++warp) {
    Thread* lanes = &l.threads[warp * kWarp];
    int first = -1;
    for (int i = 0; i < kWarp && first < 0; ++i) {
      if (lanes[i].wait == Wait::kShuffle) first = i;
    }
    if (first < 0) continue;
    const unsigned mask = lanes[first].mask;
    bool all_arrived = true;
    for (int i = 0; i < kWarp; ++i) {
      if (!(mask >> i & 1u)) continue;
      if (lanes[i].wait == Wait::kExited) {
        TORCH_CHECK(false, "CUDA emulation: block ", l.block_index.x, " lane ", i, " of warp ", warp,
                    " exited but lane ", first, " waits for it at a shuffle with mask ", mask);
      }
      all_arrived = all_arrived && lanes[i].wait == Wait::kShuffle;
    }
    if (!all_arrived) continue;
    uint64_t results[kWarp];
    for (int i = 0; i < kWarp; ++i) {
      if (!(mask >> i & 1u)) continue;
      const Thread& lane = lanes[i];
      // Each lane may ask for its own offset; the mask and the width are the shuffle's.
      TORCH_CHECK(lane.mask == mask && lane.width == lanes[first].width, "CUDA emulation: block ", l.block_index.x,
                  " warp ", warp, ": lanes ", first, " and ", i, " meet at shuffles with different masks or widths");
      const int segment = i / lane.width * lane.width;
      const int source = i + static_cast<int>(lane.delta);
      if (source >= segment + lane.width) {
        results[i] = lane.value;  // beyond the segment: a lane keeps its own value
      } else {
        TORCH_CHECK(mask >> source & 1u, "CUDA emulation: block ", l.block_index.x, " warp ", warp, ": lane ", i,
                    " reads lane ", source, ", which is not in the shuffle's mask");
        results[i] = lanes[source].value;
      }
    }
    for (int i = 0; i < kWarp; ++i) {
      if (!(mask >> i & 1u)) continue;
      lanes[i].value = results[i];
      lanes[i].wait = Wait::kNone;
    }
    released = true;
  }
  return released;
}

void poison_shared_memory() {
  if (__start_fused_optim_emulated_shared != nullptr) {
    std::memset(__start_fused_optim_emulated_shared, 0xff,
                __stop_fused_optim_emulated_shared - __start_fused_optim_emulated_shared);
  }
}

void run_block(int threads) {
  Launch& l = launch_state;
  poison_shared_memory();
  std::vector<int> warps(threads / kWarp);
  std::iota(warps.begin(), warps.end(), 0);
  std::mt19937 order(static_cast<uint32_t>(launch_count * 7919 + l.block_index.x));
  for (int t = 0; t < threads; ++t) {
    l.threads[t] = Thread{};
    l.threads[t].sp = make_fiber(t);
    l.last_sp[t] = l.threads[t].sp;
  }
  while (true) {
    std::shuffle(warps.begin(), warps.end(), order);
    for (int warp : warps) {
      for (int t = warp * kWarp; t < (warp + 1) * kWarp; ++t) {
        if (l.threads[t].wait == Wait::kNone) resume(t);
      }
    }
    if (l.error) std::rethrow_exception(std::exchange(l.error, nullptr));
    int exited = 0;
    int at_barrier = 0;
    for (const Thread& t : l.threads) {
      exited += t.wait == Wait::kExited;
      at_barrier += t.wait == Wait::kBarrier;
    }
    if (exited == threads) return;
    if (at_barrier == threads) {
      for (Thread& t : l.threads) t.wait = Wait::kNone;
      continue;
    }
    if (release_shuffles(threads)) continue;
    TORCH_CHECK(false, "CUDA emulation: block ", l.block_index.x, " of ", threads,
                " threads cannot go on: ", describe(l.threads),
                " (a __syncthreads must be reached by every thread of the block, a shuffle by every lane of its mask)");
  }
}

std::atomic<bool> scalars_on_device_flag = [] {
  const char* value = std::getenv("FUSED_OPTIM_EMULATE_DEVICE_SCALARS");
  return value && std::string(value) != "" && std::string(value) != "0";
}();

}  // namespace

const Dim3& thread_index() {
  return launch_state.thread_index;
}
const Dim3& block_index() {
  return launch_state.block_index;
}
const Dim3& block_dim() {
  return launch_state.block_dim;
}
bool scalars_on_device() {
  return scalars_on_device_flag;
}

void launch(int blocks, int threads, const std::function<void()>& thread) {
  Launch& l = launch_state;
  TORCH_CHECK(!l.active, "CUDA emulation: a kernel launched a kernel");
  // One launch at a time in the process: the kernels' shared memory is the process's (as one GPU queues launches).
  static std::mutex one_at_a_time;
  const std::lock_guard<std::mutex> lock(one_at_a_time);
  TORCH_CHECK(blocks > 0, "CUDA emulation: a launch of ", blocks, " blocks");
  TORCH_CHECK(threads > 0 && threads <= kMaxThreads && threads % kWarp == 0, "CUDA emulation: a launch of ", threads,
              " threads per block (the kernels use whole warps, at most 1024 threads)");
  ++launch_count;
  reserve_stacks();
  l.active = true;
  l.body = &thread;
  l.block_dim = {static_cast<unsigned>(threads), 1, 1};
  l.threads.resize(threads);
  try {
    for (int b = 0; b < blocks; ++b) {
      l.block_index = {static_cast<unsigned>(b), 0, 0};
      run_block(threads);
    }
  } catch (...) {
    l.active = false;
    throw;
  }
  l.active = false;
}

void sync_threads() {
  TORCH_CHECK(launch_state.current >= 0, "CUDA emulation: __syncthreads outside a kernel");
  yield_to_scheduler(Wait::kBarrier);
}

uint64_t shuffle_down(unsigned mask, uint64_t bits, unsigned delta, int width) {
  Launch& l = launch_state;
  TORCH_CHECK(l.current >= 0, "CUDA emulation: a shuffle outside a kernel");
  TORCH_CHECK(width > 0 && width <= kWarp && (width & (width - 1)) == 0,
              "CUDA emulation: shuffle width must be a power of two up to 32, got ", width);
  const int lane = l.current % kWarp;
  TORCH_CHECK(mask >> lane & 1u, "CUDA emulation: lane ", lane, " shuffles with a mask (", mask,
              ") that leaves it out");
  Thread& self = l.threads[l.current];
  self.mask = mask;
  self.delta = delta;
  self.width = width;
  self.value = bits;
  yield_to_scheduler(Wait::kShuffle);
  return self.value;
}

}  // namespace fused_optim::cuda::emulation

// What the tests ask of the emulation.
TORCH_LIBRARY(fused_optim_emulation, m) {
  m.def("launches() -> int", [] { return fused_optim::cuda::emulation::launch_count.load(); });
  m.def("scalars_on_device() -> bool", [] { return fused_optim::cuda::emulation::scalars_on_device(); });
  m.def("set_scalars_on_device(bool on) -> ()",
        [](bool on) { fused_optim::cuda::emulation::scalars_on_device_flag = on; });
}
