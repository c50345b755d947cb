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
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  bool done = false;
  Wait wait = Wait::kNone;
  uint64_t exchanges = 0;  // this lane's warp exchanges so far (double-buffer parity)
};

struct Block {
  int size = 0;
  std::vector<Fiber> fibers;
  std::vector<dim3> thread_index;  // threadIdx of each rank
  // A fiber runs when its flag is set: at the start, and when the barrier it
  // waits at completes. The scheduler clears it before resuming the fiber.
  std::vector<char> ready;
  void* scheduler_sp = nullptr;
  int current = -1;
  const std::function<void()>* thread_main = nullptr;
  unsigned char* dynamic_shared = nullptr;

  std::vector<int> block_waiters;
  const char* block_site = nullptr;  // the barrier the current arrivals wait at
  int exited = 0;
  std::vector<std::vector<WarpBarrier>> warp_barriers;  // per warp, one per mask in use
  std::vector<unsigned> warp_exited;                    // per warp: lanes that have exited
  std::vector<unsigned> warp_lanes;                     // per warp: lanes that exist
  std::vector<uint64_t> warp_slots[2];                  // one per thread, double-buffered
  std::vector<uint64_t> block_slots;
  std::string error;  // set by a fiber: the block stops
};

Block* running = nullptr;

// Stacks are reused from launch to launch; each has a guard page below it, so
// an overflow faults instead of corrupting a neighbour.
std::vector<unsigned char*>& stacks(int count) {
  static std::vector<unsigned char*> pool;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  while (static_cast<int>(pool.size()) < count) {
    void* p =
        mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(p, page, PROT_NONE);
    pool.push_back(static_cast<unsigned char*>(p) + page);
  }
  return pool;
}

void yield_to_scheduler() {
  Block& b = *running;
  emu_switch_context(&b.fibers[b.current].sp, b.scheduler_sp);
}

// Releases the block barrier once every thread that has not exited is there.
void try_release_block(Block& b) {
  if (b.block_waiters.empty() || static_cast<int>(b.block_waiters.size()) < b.size - b.exited) return;
  for (int t : b.block_waiters) b.ready[t] = 1;
  b.block_waiters.clear();
}

// Releases a warp barrier once every lane of its mask that has not exited is there.
void try_release_warp(Block& b, int warp, WarpBarrier& w) {
  const unsigned live = w.mask & b.warp_lanes[warp] & ~b.warp_exited[warp];
  if (w.arrived == 0 || (w.arrived & live) != live) return;
  for (unsigned bits = w.arrived; bits != 0; bits &= bits - 1) b.ready[warp * 32 + __builtin_ctz(bits)] = 1;
  w.arrived = 0;
}

[[noreturn]] void fiber_main() {
  (*running->thread_main)();
  Block& b = *running;
  b.fibers[b.current].done = true;
  ++b.exited;
  // A barrier waiting only for this thread may now be complete.
  try_release_block(b);
  const int warp = b.current / 32;
  b.warp_exited[warp] |= 1u << (b.current % 32);
  for (WarpBarrier& w : b.warp_barriers[warp]) try_release_warp(b, warp, w);
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

void fail_block(const char* why) {
  Block& b = *running;
  b.error = why;
  for (;;) yield_to_scheduler();  // never resumed: the scheduler stops the block
}

void sync_block(const char* site) {
  Block& b = *running;
  Fiber& f = b.fibers[b.current];
  if (!b.block_waiters.empty() && std::strcmp(site, b.block_site) != 0) {
    b.error = "threads wait at two different __syncthreads at once (" + std::string(b.block_site) + " and " + site +
              "): a barrier in a branch that not every thread takes";
    for (;;) yield_to_scheduler();  // never resumed: the scheduler stops the block
  }
  b.block_site = site;
  b.block_waiters.push_back(b.current);
  f.wait = Wait::kBlock;
  try_release_block(b);
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
  WarpBarrier* w = nullptr;
  for (WarpBarrier& candidate : barriers) {
    if (candidate.mask == mask) w = &candidate;
  }
  if (w == nullptr) {
    barriers.push_back(WarpBarrier{mask, 0});
    w = &barriers.back();
  }
  w->arrived |= bit;
  Fiber& f = b.fibers[b.current];
  f.wait = Wait::kWarp;
  try_release_warp(b, warp, *w);
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
  b.fibers.resize(b.size);
  b.ready.assign(b.size, 1);
  b.thread_index.resize(b.size);
  for (int i = 0; i < b.size; ++i) {
    const unsigned r = static_cast<unsigned>(i);
    b.thread_index[i] = dim3(r % block.x, r / block.x % block.y, r / (block.x * block.y));
  }
  b.thread_main = &thread_main;
  b.dynamic_shared = dynamic_shared;
  const int warps = (b.size + 31) / 32;
  b.warp_barriers.resize(warps);
  b.warp_exited.assign(warps, 0);
  b.warp_lanes.assign(warps, 0xffffffffu);
  if (b.size % 32 != 0) b.warp_lanes[warps - 1] = (1u << (b.size % 32)) - 1;
  b.warp_slots[0].assign(warps * 32, 0);
  b.warp_slots[1].assign(warps * 32, 0);
  b.block_slots.assign(b.size, 0);
  b.block_waiters.reserve(b.size);
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
      if (!b.ready[i]) continue;
      b.ready[i] = 0;
      resumed = true;
      b.current = i;
      threadIdx = b.thread_index[i];
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
