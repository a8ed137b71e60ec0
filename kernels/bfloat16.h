#pragma once
// bfloat16 storage for activations (GLaM trained with bfloat16 activations, float32 accumulation
// and float32 master weights). `bf16` is the upper half of a float32, rounded to nearest even; the
// same bits as CUDA's __nv_bfloat16, so cuBLAS reads bf16 buffers as CUDA_R_16BF. It converts to and
// from float implicitly, so a kernel written for T reads and writes bf16 elements unchanged; its
// arithmetic happens in acc_t<T> (float for bf16), never in bf16 itself. One header for the host
// compiler and nvcc, with the same rounding on both, so the CPU reference and the GPU agree bit for
// bit on every conversion.
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef __CUDACC__
#define GLAM_HOST_DEVICE __host__ __device__
#else
#define GLAM_HOST_DEVICE
#endif

namespace glam::kernels {

struct bf16 {
  uint16_t bits;  // no initializer: trivial, so it can live in CUDA shared memory and zeroed buffers

  bf16() = default;
  GLAM_HOST_DEVICE bf16(float f) : bits(round_to_bits(f)) {}  // NOLINT: implicit on purpose
  GLAM_HOST_DEVICE operator float() const { return from_bits(bits); }

  GLAM_HOST_DEVICE bf16& operator+=(float v) { return *this = bf16(float(*this) + v); }
  GLAM_HOST_DEVICE bf16& operator-=(float v) { return *this = bf16(float(*this) - v); }
  GLAM_HOST_DEVICE bf16& operator*=(float v) { return *this = bf16(float(*this) * v); }

  static GLAM_HOST_DEVICE uint16_t round_to_bits(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<uint16_t>(u >> 16);
  }
  static GLAM_HOST_DEVICE float from_bits(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

 private:
  static GLAM_HOST_DEVICE uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
  }
  static GLAM_HOST_DEVICE float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
  }
};
static_assert(sizeof(bf16) == 2 && std::is_trivial_v<bf16>, "bf16 must be a plain 16-bit value");

// The type a kernel computes in for elements of type T: float for bf16, T itself otherwise.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, bf16>, float, T>;

// The type of master weights, their gradients and optimizer state when activations are stored as T:
// float32 for bf16 activations, T itself otherwise.
template <class T>
using master_t = acc_t<T>;

}  // namespace glam::kernels
