#include "device_memory.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

// AddressSanitizer's poisoning, present when the program is linked with it (the kernel tests' ASan
// variant, tests/cuda_emulator/CMakeLists.txt); null otherwise. Guards and freed blocks are poisoned, so
// an instrumented kernel's read of them is reported too, not only a write the guard check sees.
extern "C" void __asan_poison_memory_region(void const volatile* p, size_t bytes) __attribute__((weak));
extern "C" void __asan_unpoison_memory_region(void const volatile* p, size_t bytes) __attribute__((weak));

namespace glam_emu {

void poison(const void* p, size_t bytes) {
  if (__asan_poison_memory_region && bytes) __asan_poison_memory_region(p, bytes);
}
void unpoison(const void* p, size_t bytes) {
  if (__asan_unpoison_memory_region && bytes) __asan_unpoison_memory_region(p, bytes);
}

namespace {

// 1 TiB of address space, reserved without memory: pages become memory when first written.
constexpr size_t kArenaBytes = size_t{1} << 40;
constexpr size_t kAlign = 256;
// Every allocation sits between guard bytes: 256 before it, and after it up to the next 256-byte
// boundary plus 256 more, all holding kGuardByte; check_guards looks at them after every launch.
constexpr size_t kGuardBytes = 256;
constexpr unsigned char kGuardByte = 0x5a;

std::mutex g_mutex;
char* g_arena = nullptr;
size_t g_used = 0;                    // the arena's prefix ever handed out
std::map<size_t, size_t> g_free;      // offset -> bytes, below g_used
std::map<uintptr_t, size_t> g_live;   // user pointer -> requested bytes
int g_open = 0;                       // DeviceAccess objects alive
struct sigaction g_previous_segv {};

// Protection changes cover whole 2 MiB huge pages (the arena's start is aligned to one): a change that
// ended inside one split it into 512 small pages for good, and as the used prefix grew through the
// huge pages, every launch's two changes came to touch a page-table entry per 4 KiB.
constexpr size_t kHugePage = size_t{2} << 20;
size_t huge_rounded(size_t n) { return (n + kHugePage - 1) / kHugePage * kHugePage; }
size_t padded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign + kGuardBytes; }
size_t block_bytes(size_t bytes) { return kGuardBytes + padded(bytes); }

void protect(int prot, size_t from, size_t to) {
  if (to > from) mprotect(g_arena + from, to - from, prot);
}

// A fault inside the arena is host code touching device memory: say so, then die of the signal.
void on_segv(int sig, siginfo_t* info, void* context) {
  const auto* a = static_cast<const char*>(info->si_addr);
  if (g_arena && a >= g_arena && a < g_arena + kArenaBytes) {
    static const char msg[] =
        "CUDA emulator: host code read or wrote device memory (a device pointer dereferenced outside a kernel "
        "or a copy: on a GPU, a crash or garbage)\n";
    (void)!write(2, msg, sizeof msg - 1);
    signal(SIGSEGV, SIG_DFL);
    return;  // the access faults again, now fatally
  }
  if (g_previous_segv.sa_flags & SA_SIGINFO) return g_previous_segv.sa_sigaction(sig, info, context);
  if (g_previous_segv.sa_handler != SIG_DFL && g_previous_segv.sa_handler != SIG_IGN) return g_previous_segv.sa_handler(sig);
  signal(SIGSEGV, SIG_DFL);
}

void reserve_arena() {
  if (g_arena) return;
  // One huge page more than the arena, so that it can start on a huge page's boundary.
  void* m = mmap(nullptr, kArenaBytes + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) throw std::runtime_error("CUDA emulator: cannot reserve the device memory's address range");
  g_arena = reinterpret_cast<char*>(huge_rounded(reinterpret_cast<uintptr_t>(m)));
  // Huge pages where the kernel offers them: switching the protection of the arena's pages at every
  // launch then touches 512 times fewer page-table entries.
  madvise(g_arena, kArenaBytes, MADV_HUGEPAGE);
  struct sigaction sa {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_previous_segv);
}

// First fit among the freed blocks, else the end of the arena's used prefix.
size_t take_block(size_t bytes) {
  for (auto it = g_free.begin(); it != g_free.end(); ++it) {
    if (it->second < bytes) continue;
    const size_t at = it->first, left = it->second - bytes;
    g_free.erase(it);
    if (left > 0) g_free[at + bytes] = left;
    return at;
  }
  if (g_used + bytes > kArenaBytes) return SIZE_MAX;
  const size_t at = g_used;
  g_used += bytes;
  if (g_open > 0) protect(PROT_READ | PROT_WRITE, huge_rounded(at), huge_rounded(g_used));
  return at;
}

void give_back(size_t at, size_t bytes) {
  auto next = g_free.lower_bound(at);
  if (next != g_free.end() && next->first == at + bytes) {
    bytes += next->second;
    next = g_free.erase(next);
  }
  if (next != g_free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {
      prev->second += bytes;
      return;
    }
  }
  g_free[at] = bytes;
}

// The guard bytes on both sides of an allocation, written afresh and poisoned; the allocation itself
// is left usable (a freed block's bytes were poisoned).
void write_guards(unsigned char* user, size_t bytes) {
  unpoison(user - kGuardBytes, block_bytes(bytes));
  std::memset(user - kGuardBytes, kGuardByte, kGuardBytes);
  std::memset(user + bytes, kGuardByte, padded(bytes) - bytes);
  poison(user - kGuardBytes, kGuardBytes);
  poison(user + bytes, padded(bytes) - bytes);
}

long first_changed(const unsigned char* from, const unsigned char* to) {
  for (const unsigned char* q = from; q < to; ++q)
    if (*q != kGuardByte) return q - from;
  return -1;
}

}  // namespace

DeviceAccess::DeviceAccess() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_open++ == 0 && g_arena) protect(PROT_READ | PROT_WRITE, 0, huge_rounded(g_used));
}
DeviceAccess::~DeviceAccess() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (--g_open == 0 && g_arena) protect(PROT_NONE, 0, huge_rounded(g_used));
}

void* device_allocate(size_t bytes) {
  DeviceAccess open;
  unsigned char* user = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    reserve_arena();
    const size_t at = take_block(block_bytes(bytes));
    if (at == SIZE_MAX) return nullptr;
    user = reinterpret_cast<unsigned char*>(g_arena + at + kGuardBytes);
    g_live[reinterpret_cast<uintptr_t>(user)] = bytes;
  }
  write_guards(user, bytes);
  std::memset(user, 0xff, bytes);
  return user;
}

bool device_release(void* p) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_live.end()) return false;
  const size_t at = static_cast<size_t>(static_cast<char*>(p) - g_arena) - kGuardBytes, bytes = block_bytes(it->second);
  g_live.erase(it);
  // A large block's pages go back to the system; small ones are kept for the next allocations (giving
  // them back and faulting them in again cost more system time than the emulated kernels).
  constexpr size_t kReturnedFrom = size_t{64} << 20;
  const size_t first = huge_rounded(at), last = (at + bytes) / kHugePage * kHugePage;  // whole huge pages only
  if (bytes >= kReturnedFrom && last > first) madvise(g_arena + first, last - first, MADV_DONTNEED);
  poison(g_arena + at, bytes);  // a kernel that still reads it reads freed memory
  give_back(at, bytes);
  return true;
}

bool on_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = g_live.upper_bound(a);
  if (it == g_live.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

void check_guards() {
  DeviceAccess open;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto& [start, bytes] : g_live) {
    auto* user = reinterpret_cast<unsigned char*>(start);
    const long before = first_changed(user - kGuardBytes, user);
    const long after = first_changed(user + bytes, user + padded(bytes));
    if (before < 0 && after < 0) continue;
    const std::string where = after >= 0 ? "the first at byte " + std::to_string(after) + " after its end"
                                          : "the first at byte " + std::to_string(static_cast<long>(kGuardBytes) - before) +
                                                " before its start";
    // Restored, so that the next launch reports only what it does itself.
    write_guards(user, bytes);
    throw std::runtime_error("CUDA emulator: the kernel wrote outside an allocation of " + std::to_string(bytes) +
                             " bytes, " + where);
  }
}

}  // namespace glam_emu
