#include "huge_pages.h"

#include <cstddef>

#ifdef PENSIEVE_WRAP_GGML_ALLOC
// Decode on the CPU reads every weight once per step. With 4 KiB pages, a 1 GB model spans 250,000 pages,
// far beyond the TLB, so the weight reads keep missing it; on 2 MiB pages they rarely do. Linux gives huge
// pages to anonymous memory that asks for them (MADV_HUGEPAGE), not to a file's mmap, so with this on the
// model is read into ggml's buffers (llama.cpp's use_mmap off).
//
// ggml allocates its CPU buffers (weights, KV cache, compute) with ggml_aligned_malloc; the addon is
// linked with --wrap for it and ggml_aligned_free, so those calls come here.
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

extern "C" void* __real_ggml_aligned_malloc(size_t size);
extern "C" void __real_ggml_aligned_free(void* ptr, size_t size);

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
std::atomic<bool> enabled{false};
std::mutex mappedMutex;
std::unordered_map<void*, size_t> mapped;  // our mappings: start -> length

// An anonymous mapping of at least size bytes starting on a huge-page boundary, or nullptr.
void* mapAligned(size_t size) {
  const size_t length = (size + kHugePage - 1) & ~(kHugePage - 1);
  void* raw = mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(raw) + kHugePage - 1) & ~(kHugePage - 1);
  const size_t head = start - reinterpret_cast<uintptr_t>(raw);
  if (head > 0) munmap(raw, head);
  munmap(reinterpret_cast<void*>(start + length), kHugePage - head);
  void* p = reinterpret_cast<void*>(start);
  madvise(p, length, MADV_HUGEPAGE);  // a hint: without THP the mapping still works, on small pages
  std::lock_guard<std::mutex> lock(mappedMutex);
  mapped.emplace(p, length);
  return p;
}
}  // namespace

extern "C" void* __wrap_ggml_aligned_malloc(size_t size) {
  if (enabled.load(std::memory_order_relaxed) && size >= kHugePage) {
    if (void* p = mapAligned(size)) return p;
  }
  return __real_ggml_aligned_malloc(size);
}

extern "C" void __wrap_ggml_aligned_free(void* ptr, size_t size) {
  if (ptr && (reinterpret_cast<uintptr_t>(ptr) & (kHugePage - 1)) == 0) {
    size_t length = 0;
    {
      std::lock_guard<std::mutex> lock(mappedMutex);
      auto it = mapped.find(ptr);
      if (it != mapped.end()) {
        length = it->second;
        mapped.erase(it);
      }
    }
    if (length > 0) {
      munmap(ptr, length);
      return;
    }
  }
  __real_ggml_aligned_free(ptr, size);
}

bool useHugePages(bool on) {
  enabled.store(on);
  return on;
}
#else
bool useHugePages(bool) { return false; }
#endif
