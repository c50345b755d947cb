#include "tools/cuda_emu/fibers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;

// Bounds of the section that holds every static __shared__ variable (the
// linker defines them; weak, for a binary without any).
extern "C" unsigned char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_cuda_emu_shared[] __attribute__((weak));

#if !defined(__x86_64__)
#error "cuda_emu switches fibers with x86-64 instructions (emu_switch_context)"
#endif

// Switching fibers is the emulator's inner loop (every barrier and shuffle):
// swapcontext costs a system call (it saves the signal mask), so fibers switch
// with a few instructions that save the callee-saved registers and the
// floating-point control words on the old stack and restore them from the new.
extern "C" void emu_switch_context(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl emu_switch_context
  .type emu_switch_context, @function
emu_switch_context:
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
  .size emu_switch_context, .-emu_switch_context
)");

namespace emu {
namespace {

// Big enough for the kernels' local arrays and the emulated WMMA fragments
// (1 KiB each); pages are only committed when touched.
constexpr size_t kStackBytes = size_t{256} << 10;

enum class Wait { kNone, kBlock, kWarp };

struct WarpBarrier {
  unsigned mask = 0;
  unsigned arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  bool done = false;
  Wait wait = Wait::kNone;
  uint64_t wait_generation = 0;  // the barrier's generation when the fiber arrived
  int wait_barrier = -1;         // index into its warp's barriers
  uint64_t exchanges = 0;        // this lane's warp exchanges so far (double-buffer parity)
};

struct Block {
  int size = 0;
  dim3 block;
  std::vector<Fiber> fibers;
  void* scheduler_sp = nullptr;
  int current = -1;
  const std::function<void()>* thread_main = nullptr;
  unsigned char* dynamic_shared = nullptr;

  uint64_t block_generation = 0;
  int block_arrived = 0;
  const char* block_site = nullptr;  // the barrier the current arrivals wait at
  std::string error;                 // set by a fiber: the block stops
  int exited = 0;
  std::vector<std::vector<WarpBarrier>> warp_barriers;  // per warp, one per mask in use
  std::vector<uint64_t> warp_generation;                // per warp: bumped by any completed warp barrier
  std::vector<uint64_t> warp_slots[2];                  // one per thread, double-buffered
  std::vector<uint64_t> block_slots;
};

Block* running = nullptr;

// Stacks are reused from launch to launch; each has a guard page below it, so
// an overflow faults instead of corrupting a neighbour.
std::vector<unsigned char*>& stacks(int count) {
  static std::vector<unsigned char*> pool;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  while (static_cast<int>(pool.size()) < count) {
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(p, page, PROT_NONE);
    pool.push_back(static_cast<unsigned char*>(p) + page);
  }
  return pool;
}

void set_builtins(const Block& b, int rank) {
  threadIdx = dim3(rank % b.block.x, rank / b.block.x % b.block.y, rank / (b.block.x * b.block.y));
}

void yield_to_scheduler() {
  Block& b = *running;
  emu_switch_context(&b.fibers[b.current].sp, b.scheduler_sp);
}

[[noreturn]] void fiber_main() {
  (*running->thread_main)();
  Block& b = *running;
  b.fibers[b.current].done = true;
  ++b.exited;
  // A barrier waiting only for this thread may now be complete.
  if (b.block_arrived > 0 && b.block_arrived == b.size - b.exited) {
    b.block_arrived = 0;
    ++b.block_generation;
  }
  const int warp = b.current / 32;
  const unsigned bit = 1u << (b.current % 32);
  for (WarpBarrier& w : b.warp_barriers[warp]) {
    if (w.arrived == 0 || !(w.mask & bit)) continue;
    unsigned live = 0;
    for (int l = 0; l < 32; ++l) {
      const int t = warp * 32 + l;
      if ((w.mask >> l & 1u) && t < b.size && !b.fibers[t].done) live |= 1u << l;
    }
    if ((w.arrived & live) == live) {
      w.arrived = 0;
      ++w.generation;
      ++b.warp_generation[warp];
    }
  }
  emu_switch_context(&b.fibers[b.current].sp, b.scheduler_sp);
  std::abort();  // a finished fiber is never resumed
}

// A new fiber's stack as emu_switch_context leaves a switched-out one: its
// saved registers (zero), control words, and fiber_main as the return
// address, placed so that fiber_main starts with the ABI's stack alignment.
void* initial_stack(unsigned char* stack_base) {
  auto top = reinterpret_cast<uintptr_t>(stack_base + kStackBytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top - 16);  // 16-aligned: fiber_main's return-address slot is above
  slot[1] = 0;
  slot[0] = reinterpret_cast<uint64_t>(&fiber_main);
  uint64_t* regs = slot - 6;
  for (int i = 0; i < 6; ++i) regs[i] = 0;
  auto* control = reinterpret_cast<uint32_t*>(regs - 1);
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  return regs - 1;
}

bool runnable(const Block& b, const Fiber& f, int rank) {
  if (f.done) return false;
  switch (f.wait) {
    case Wait::kNone: return true;
    case Wait::kBlock: return b.block_generation != f.wait_generation;
    case Wait::kWarp: return b.warp_barriers[rank / 32][f.wait_barrier].generation != f.wait_generation;
  }
  return false;
}

std::string describe_deadlock(const Block& b) {
  int at_block = 0, at_warp = 0;
  for (const Fiber& f : b.fibers) {
    if (f.done) continue;
    (f.wait == Wait::kBlock ? at_block : at_warp) += 1;
  }
  return "deadlock: " + std::to_string(at_block) + " thread(s) wait at __syncthreads, " + std::to_string(at_warp) +
         " at a warp barrier (__syncwarp, shuffle or vote), " + std::to_string(b.exited) + " of " +
         std::to_string(b.size) + " have exited: a barrier inside a branch that not every thread takes";
}

}  // namespace

int thread_rank() { return running->current; }
int block_size() { return running->size; }
unsigned char* dynamic_shared() { return running->dynamic_shared; }

void sync_block(const char* site) {
  Block& b = *running;
  Fiber& f = b.fibers[b.current];
  if (b.block_arrived > 0 && std::strcmp(site, b.block_site) != 0) {
    b.error = "threads wait at two different __syncthreads at once (" + std::string(b.block_site) + " and " + site +
              "): a barrier in a branch that not every thread takes";
    for (;;) yield_to_scheduler();  // never resumed: the scheduler stops the block
  }
  b.block_site = site;
  f.wait = Wait::kBlock;
  f.wait_generation = b.block_generation;  // runnable once the generation moves on
  if (++b.block_arrived == b.size - b.exited) {
    b.block_arrived = 0;
    ++b.block_generation;
  }
  // Even the last to arrive yields, so that the others resume before it goes on
  // (the order threads pass a barrier in is not defined on a device either).
  yield_to_scheduler();
  f.wait = Wait::kNone;
}

void sync_warp(unsigned mask) {
  Block& b = *running;
  const int warp = b.current / 32;
  const unsigned bit = 1u << (b.current % 32);
  if (!(mask & bit)) {
    std::fprintf(stderr, "cuda_emu: thread %d calls a warp collective with a mask (0x%08x) that leaves it out\n",
                 b.current, mask);
    std::abort();
  }
  std::vector<WarpBarrier>& barriers = b.warp_barriers[warp];
  int index = -1;
  for (size_t i = 0; i < barriers.size(); ++i)
    if (barriers[i].mask == mask) index = static_cast<int>(i);
  if (index < 0) {
    barriers.push_back(WarpBarrier{mask, 0, 0});
    index = static_cast<int>(barriers.size()) - 1;
  }
  WarpBarrier& w = barriers[index];
  Fiber& f = b.fibers[b.current];
  f.wait = Wait::kWarp;
  f.wait_barrier = index;
  f.wait_generation = w.generation;  // runnable once the generation moves on
  w.arrived |= bit;
  unsigned live = 0;
  for (int l = 0; l < 32; ++l) {
    const int t = warp * 32 + l;
    if ((mask >> l & 1u) && t < b.size && !b.fibers[t].done) live |= 1u << l;
  }
  if ((w.arrived & live) == live) {
    w.arrived = 0;
    ++w.generation;
    ++b.warp_generation[warp];
  }
  yield_to_scheduler();
  f.wait = Wait::kNone;
}

const uint64_t* warp_exchange(unsigned mask, uint64_t mine) {
  Block& b = *running;
  Fiber& f = b.fibers[b.current];
  // Double buffering: exchange k+2 reuses exchange k's slots only after the
  // barrier of exchange k+1, which every lane passes after reading exchange k.
  std::vector<uint64_t>& slots = b.warp_slots[f.exchanges++ & 1];
  slots[b.current] = mine;
  sync_warp(mask);
  return slots.data() + (b.current & ~31);
}

const uint64_t* block_exchange(uint64_t mine) {
  Block& b = *running;
  b.block_slots[b.current] = mine;
  sync_block("block exchange (__syncthreads_or/and/count, cub)");
  return b.block_slots.data();
}

std::string run_block(dim3 block_idx, dim3 grid, dim3 block, unsigned char* dynamic_shared,
                      const std::function<void()>& thread_main) {
  Block b;
  b.size = static_cast<int>(block.x * block.y * block.z);
  b.block = block;
  b.fibers.resize(b.size);
  b.thread_main = &thread_main;
  b.dynamic_shared = dynamic_shared;
  const int warps = (b.size + 31) / 32;
  b.warp_barriers.resize(warps);
  b.warp_generation.assign(warps, 0);
  b.warp_slots[0].assign(warps * 32, 0);
  b.warp_slots[1].assign(warps * 32, 0);
  b.block_slots.assign(b.size, 0);
  if (__start_cuda_emu_shared != nullptr) {
    std::memset(__start_cuda_emu_shared, 0xFF, static_cast<size_t>(__stop_cuda_emu_shared - __start_cuda_emu_shared));
  }
  blockIdx = block_idx;
  gridDim = grid;
  blockDim = block;

  std::vector<unsigned char*>& pool = stacks(b.size);
  for (int i = 0; i < b.size; ++i) b.fibers[i].sp = initial_stack(pool[i]);

  Block* outer = running;
  running = &b;
  const bool descending = (block_idx.x + block_idx.y + block_idx.z) % 2 == 1;
  std::string error;
  while (b.exited < b.size) {
    bool resumed = false;
    for (int k = 0; k < b.size; ++k) {
      const int i = descending ? b.size - 1 - k : k;
      if (!runnable(b, b.fibers[i], i)) continue;
      resumed = true;
      b.current = i;
      set_builtins(b, i);
      emu_switch_context(&b.scheduler_sp, b.fibers[i].sp);
      if (!b.error.empty()) break;
    }
    if (!b.error.empty()) {
      error = b.error;
      break;
    }
    if (!resumed) {
      error = describe_deadlock(b);
      break;
    }
  }
  running = outer;
  return error;
}

}  // namespace emu
