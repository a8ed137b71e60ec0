// The emulator's GPU threads: each thread of a block is a fiber (its own stack, switched by a few
// instructions of assembly rather than swapcontext, whose signal-mask system calls would make a
// launch of a million threads take seconds). A scheduler runs the block's fibers in turn; a fiber
// runs until it finishes or waits at a barrier, and a barrier opens when every thread it waits for
// has arrived. Warps are groups of 32 consecutive threads with a barrier and an exchange area of
// their own, which the shuffles and votes use.
#include "emulator.h"
#include "device_memory.h"

#include <sys/mman.h>

#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

namespace glam_emu {
void set_launch_error(cudaError_t e);  // runtime.cpp: what cudaGetLastError reports next
}

// Saves the callee-saved registers on the current stack, stores the stack pointer in *save, and
// continues the fiber whose stack pointer is `next`. The SSE and x87 control words are not switched:
// no kernel changes them (and saving them made a switch several times slower).
extern "C" void glam_emu_switch(void** save, void* next);
// A new fiber's first frame: calls glam_emu_fiber_main, which never returns.
extern "C" void glam_emu_fiber_start();
extern "C" [[noreturn]] void glam_emu_fiber_main();
asm(R"(
  .text
  .globl glam_emu_switch
  .type glam_emu_switch, @function
glam_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size glam_emu_switch, .-glam_emu_switch

  .globl glam_emu_fiber_start
  .type glam_emu_fiber_start, @function
glam_emu_fiber_start:
  call glam_emu_fiber_main
  ud2
  .size glam_emu_fiber_start, .-glam_emu_fiber_start
)");

namespace glam_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;  // below each stack, unmapped: an overflow faults
constexpr unsigned kMaxThreads = 1024;

enum class Wait { kNone, kBlock, kWarp };

struct Fiber {
  void* sp = nullptr;
  ThreadCoordinates where{};
  int linear = 0;
  bool done = false;
  Wait wait = Wait::kNone;
  uint64_t wait_generation = 0;
};

struct Warp {
  unsigned existing = 0;  // lanes the block has
  unsigned live = 0;      // lanes that have not finished
  unsigned arrived = 0;
  unsigned mask = 0;      // of the operation being gathered
  uint64_t generation = 0;
  alignas(16) unsigned char slots[2][32][16] = {};
};

struct BlockState {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0, arrived = 0;
  uint64_t generation = 0;
  std::string error;
};

std::mutex g_launch_mutex;  // one launch at a time, process-wide (the __shared__ statics are shared)
BlockState g_block;
Fiber* g_current = nullptr;
void* g_scheduler_sp = nullptr;
const std::function<void()>* g_body = nullptr;
std::vector<char*> g_stacks;  // reused from launch to launch
std::vector<unsigned char> g_dynamic_shared;

char* stack_for(size_t i) {
  while (g_stacks.size() <= i) {
    void* m = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("CUDA emulator: no memory for a thread's stack");
    mprotect(m, kGuardBytes, PROT_NONE);
    g_stacks.push_back(static_cast<char*>(m));
  }
  return g_stacks[i];
}

// A fresh fiber's stack: glam_emu_switch pops six registers and then returns into
// glam_emu_fiber_start with the stack 16-byte aligned, as a call expects.
void* initial_stack(char* mapping) {
  uintptr_t top = reinterpret_cast<uintptr_t>(mapping + kGuardBytes + kStackBytes);
  top &= ~uintptr_t{15};
  top -= 16;  // the aligned stack pointer after the return
  auto* slot = reinterpret_cast<uint64_t*>(top);
  slot[-1] = reinterpret_cast<uint64_t>(&glam_emu_fiber_start);
  for (int r = 2; r <= 7; ++r) slot[-r] = 0;  // rbp, rbx, r12-r15
  return &slot[-7];
}

void yield() { glam_emu_switch(&g_current->sp, g_scheduler_sp); }

std::string where(const Fiber& f) {
  const auto& w = f.where;
  return "block (" + std::to_string(w.block_idx.x) + "," + std::to_string(w.block_idx.y) + "," +
         std::to_string(w.block_idx.z) + ") thread (" + std::to_string(w.thread_idx.x) + "," +
         std::to_string(w.thread_idx.y) + "," + std::to_string(w.thread_idx.z) + ")";
}

// Ends the block: the scheduler throws with this message, and the failing fiber never runs again.
[[noreturn]] void fail(const std::string& what) {
  if (g_block.error.empty()) g_block.error = where(*g_current) + ": " + what;
  g_current->done = true;
  for (;;) yield();
}

Warp& my_warp() { return g_block.warps[static_cast<size_t>(g_current->linear / 32)]; }
unsigned my_bit() { return 1u << (g_current->linear % 32); }

// Whether a thread can run on: not finished, and not waiting for a barrier or warp exchange that has
// not completed since it arrived.
bool runnable(const Fiber& f) {
  if (f.done) return false;
  if (f.wait == Wait::kBlock) return g_block.generation != f.wait_generation;
  if (f.wait == Wait::kWarp) return g_block.warps[static_cast<size_t>(f.linear / 32)].generation != f.wait_generation;
  return true;
}

// Suspends the current thread, which waits at a barrier or warp exchange: runs the next thread that
// can run among the `group` threads of its warp (32) or block (all) directly, one switch instead of
// two through the scheduler and its pass over the block; the scheduler when none can. Whoever
// resumes this thread has set g_current to it.
void wait_for_group(int group) {
  Fiber* me = g_current;
  const int n = static_cast<int>(g_block.fibers.size());
  const int size = group < n ? group : n, base = me->linear / size * size;
  for (int d = 1; d < size; ++d) {
    const int l = base + (me->linear - base + d) % size;
    if (l >= n) continue;
    Fiber& next = g_block.fibers[static_cast<size_t>(l)];
    if (!runnable(next)) continue;
    g_current = &next;
    glam_emu_switch(&me->sp, next.sp);
    return;
  }
  yield();
}

void open_block_barrier_if_complete() {
  if (g_block.arrived > 0 && g_block.arrived == g_block.live) {
    ++g_block.generation;
    g_block.arrived = 0;
  }
}

// The order a launch runs its blocks in: a GPU promises none, so a kernel whose blocks depend on each
// other's order (a block that reads what a later one writes, a "first block zeroes" pattern) is a race
// there. Here each launch takes its own permutation, k -> (k * stride + offset) mod blocks with a stride
// prime to the count, from a counter of launches: reproducible, and different from launch to launch.
class BlockOrder {
 public:
  BlockOrder(uint64_t blocks, uint64_t launch) : blocks_(blocks) {
    std::mt19937_64 pick(launch);
    offset_ = pick() % blocks;
    stride_ = blocks > 2 ? 1 + pick() % (blocks - 1) : 1;
    while (std::gcd(stride_, blocks) != 1) ++stride_;
  }
  uint64_t at(uint64_t k) const {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(k) * stride_ + offset_) % blocks_);
  }

 private:
  uint64_t blocks_, stride_ = 1, offset_ = 0;
};
uint64_t g_launches = 0;

}  // namespace

extern "C" [[noreturn]] void glam_emu_fiber_main() {
  (*g_body)();
  Fiber& f = *g_current;
  f.done = true;
  --g_block.live;
  Warp& w = my_warp();
  w.live &= ~my_bit();
  if (w.arrived != 0 && (w.mask & my_bit()))
    fail("finished while lanes of its warp wait for it in a shuffle, vote or __syncwarp (mask " +
         std::to_string(w.mask) + ")");
  open_block_barrier_if_complete();
  for (;;) yield();
}

const ThreadCoordinates& coordinates() { return g_current->where; }
void* dynamic_shared() { return g_dynamic_shared.data(); }
int lane() { return g_current->linear % 32; }

void sync_block() {
  Fiber& f = *g_current;
  const uint64_t generation = g_block.generation;
  ++g_block.arrived;
  open_block_barrier_if_complete();
  if (g_block.generation != generation) return;
  f.wait = Wait::kBlock;
  f.wait_generation = generation;
  wait_for_group(kMaxThreads);
  f.wait = Wait::kNone;
}

const unsigned char* exchange_in_warp(unsigned mask, const void* value, size_t bytes) {
  Fiber& f = *g_current;
  Warp& w = my_warp();
  const unsigned me = my_bit();
  if (!(mask & me)) fail("a warp operation whose mask " + std::to_string(mask) + " leaves out the calling lane");
  if (mask & ~w.existing)
    fail("a warp operation whose mask " + std::to_string(mask) + " names lanes the block does not have");
  if (mask & ~w.live) fail("a warp operation whose mask " + std::to_string(mask) + " names lanes that have finished");
  if (w.arrived == 0) w.mask = mask;
  else if (w.mask != mask)
    fail("lanes of one warp in warp operations of different masks (" + std::to_string(w.mask) + ", " +
         std::to_string(mask) + ")");
  const uint64_t generation = w.generation;
  unsigned char(&slots)[32][16] = w.slots[generation & 1];
  if (bytes) std::memcpy(slots[f.linear % 32], value, bytes);
  w.arrived |= me;
  if (w.arrived == mask) {
    ++w.generation;
    w.arrived = 0;
  } else {
    f.wait = Wait::kWarp;
    f.wait_generation = generation;
    wait_for_group(32);
    f.wait = Wait::kNone;
  }
  return &slots[0][0];
}

void sync_warp(unsigned mask) { exchange_in_warp(mask, nullptr, 0); }

int all_in_warp(unsigned mask, int predicate) {
  const unsigned char* all = exchange_in_warp(mask, &predicate, sizeof predicate);
  for (int l = 0; l < 32; ++l)
    if (mask & (1u << l)) {
      int p;
      std::memcpy(&p, all + 16 * l, sizeof p);
      if (!p) return 0;
    }
  return 1;
}

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
    set_launch_error(cudaErrorInvalidConfiguration);
    return;
  }
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  DeviceAccess open;  // the kernel's threads read and write device memory
  g_body = &body;
  const int n = static_cast<int>(threads);
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  const BlockOrder order(blocks, g_launches++);
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t linear_block = order.at(k);
    const auto bx = static_cast<unsigned>(linear_block % grid.x);
    const auto by = static_cast<unsigned>(linear_block / grid.x % grid.y);
    const auto bz = static_cast<unsigned>(linear_block / grid.x / grid.y);
    BlockState& b = g_block;
    b.fibers.assign(static_cast<size_t>(n), Fiber{});
    b.warps.assign(static_cast<size_t>((n + 31) / 32), Warp{});
    b.live = n, b.arrived = 0, b.generation = 0;
    b.error.clear();
    // Shared memory starts each block unwritten: 0xff bytes (NaN, -1), as a GPU leaves it. Past
    // the launch's bytes it is poisoned, for the kernels built with AddressSanitizer.
    unpoison(g_dynamic_shared.data(), g_dynamic_shared.capacity());
    g_dynamic_shared.assign(shared_bytes + 16, 0xff);
    poison(g_dynamic_shared.data() + shared_bytes, g_dynamic_shared.capacity() - shared_bytes);
    for (int i = 0; i < n; ++i) {
      Fiber& f = b.fibers[static_cast<size_t>(i)];
      f.linear = i;
      f.where.thread_idx = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
      f.where.block_idx = uint3{bx, by, bz};
      f.where.block_dim = block;
      f.where.grid_dim = grid;
      f.sp = initial_stack(stack_for(static_cast<size_t>(i)));
      Warp& w = b.warps[static_cast<size_t>(i / 32)];
      w.existing |= 1u << (i % 32);
      w.live |= 1u << (i % 32);
    }
    for (;;) {
      bool ran = false, all_done = true;
      for (Fiber& f : b.fibers) {
        if (f.done) continue;
        all_done = false;
        if (!runnable(f)) continue;
        g_current = &f;
        glam_emu_switch(&g_scheduler_sp, f.sp);
        ran = true;
        if (!b.error.empty()) throw std::runtime_error("CUDA emulator: " + b.error);
      }
      if (all_done) break;
      if (!ran) {
        // Every thread left waits: at __syncthreads that others never reach, or in a warp operation.
        for (const Fiber& f : b.fibers)
          if (!f.done)
            throw std::runtime_error("CUDA emulator: " + where(f) + " waits for ever at " +
                                     (f.wait == Wait::kBlock ? "__syncthreads (some threads of the block never reach it)"
                                                             : "a warp operation (some lanes never reach it)"));
      }
    }
  }
  g_current = nullptr;
  check_guards();
}

}  // namespace glam_emu
