#pragma once
// The CUDA implementations behind the kernel entry points of kernels/*.h: the same signatures in
// namespace glam::kernels::cuda (no CUDA types here). kernels/cpu/*.cpp call them when
// ctx.backend == Backend::kCuda (kernels/cpu/dispatch.h). Built only with GLAM_KERNELS_CUDA.
#include <cstddef>
#include <cstdint>
#include <string>

#include "activation.h"
#include "adafactor.h"
#include "attention.h"
#include "device.h"
#include "embedding.h"
#include "kernel_context.h"
#include "loss.h"
#include "router.h"

namespace glam::kernels::cuda {

// context.cu
void synchronize(const KernelContext& ctx);
void* alloc(size_t bytes);
void free(void* p);
void copy_bytes(void* dst, const void* src, size_t bytes);
bool used();  // whether any CUDA memory was allocated in this process
int device_count();
std::string no_device_reason();
DeviceMemory memory();
std::string device_name(int device);
std::string device_pci_bus_id(int device);
int current_device();
void set_device(int device);
void init_context(KernelContext& ctx);
void release_context(KernelContext& ctx);

// gemm.cu
template <class T, class C>
void gemm(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, acc_t<T> alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, acc_t<T> beta, C* c, int64_t ldc);
template <class T, class C>
void gemm_strided_batched(const KernelContext& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          acc_t<T> alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, acc_t<T> beta, C* c, int64_t ldc, int64_t stride_c, int64_t batch);

// elementwise.cu
template <class T> void fill(const KernelContext& ctx, T* x, T value, int64_t n);
template <class T> void copy(const KernelContext& ctx, const T* src, T* dst, int64_t n);
template <class T> void axpy(const KernelContext& ctx, T alpha, const T* x, T* y, int64_t n);
template <class T> void add(const KernelContext& ctx, const T* a, const T* b, T* out, int64_t n);
template <class S, class T> void convert(const KernelContext& ctx, const S* in, T* out, int64_t n);

// norm.cu
template <class T>
void rmsnorm_forward(const KernelContext& ctx, const T* x, const T* scale, T* y, acc_t<T>* inv_rms, int64_t rows, int64_t dim);
template <class T, class G>
void rmsnorm_backward(const KernelContext& ctx, const T* dy, const T* x, const T* scale, const acc_t<T>* inv_rms, T* dx,
                      G* dscale, int64_t rows, int64_t dim);

// activation.cu
template <class T>
void activation_forward(const KernelContext& ctx, Activation act, const T* h0, const T* h1, T* y, int64_t n);
template <class T>
void activation_backward(const KernelContext& ctx, Activation act, const T* dy, const T* h0, const T* h1, T* dh0,
                         T* dh1, int64_t n);

// embedding.cu
template <class T>
void embedding_forward(const KernelContext& ctx, const int32_t* ids, const T* table, T* out, int64_t tokens, int64_t dim,
                       EmbeddingRows held);
template <class T, class G>
void embedding_backward(const KernelContext& ctx, const int32_t* ids, const T* dout, G* dtable, int64_t tokens,
                        int64_t dim, EmbeddingRows held);

// attention.cu
template <class T, class G>
void attention_bias_backward(const KernelContext& ctx, const T* dscores, const int32_t* bucket, G* dbias,
                             int64_t batch, int64_t heads, int64_t seq_len);
template <class T>
void causal_softmax_forward(const KernelContext& ctx, T* scores, int64_t rows, int64_t seq_len, RelativeBias<T> bias);
template <class T>
void causal_softmax_backward(const KernelContext& ctx, const T* probs, T* dprobs, int64_t rows, int64_t seq_len,
                             RelativeBiasGrad<acc_t<T>> bias_grad);

// loss.cu
template <class T, class D>
void softmax_xent_forward_backward(const KernelContext& ctx, const T* logits, const int32_t* targets, int64_t tokens,
                                   int64_t vocab, double z_weight, double grad_scale, T* ce, T* lse, D* dlogits);
template <class T, class D>
void softmax_xent_forward_backward_sliced(const KernelContext& ctx, const T* logits, const int32_t* targets,
                                          int64_t tokens, int64_t vocab, int64_t first_id, double z_weight,
                                          double grad_scale, T* ce, T* lse, D* dlogits, const ShardReduce& reduce);

// router.cu
template <class T>
void router_forward(const KernelContext& ctx, const T* logits, const RouterShape& shape,
                    const SecondExpertPolicy& policy, T* probs, int32_t* expert, T* gate, int32_t* loc,
                    int32_t* slot_token);
template <class T>
void router_aux_loss(const KernelContext& ctx, const T* probs, const int32_t* expert, const RouterShape& shape, T* aux);
template <class T>
void router_backward(const KernelContext& ctx, const T* probs, const int32_t* expert, const int32_t* loc,
                     const T* dgate, double aux_scale, const RouterShape& shape, T* dlogits);
void router_counts(const KernelContext& ctx, const int32_t* expert, const int32_t* loc, const RouterShape& shape,
                   int32_t* counts);

// moe.cu
template <class T>
void moe_dispatch_forward(const KernelContext& ctx, const T* x, const int32_t* slot_token, T* buf, int64_t slots,
                          int64_t dim);
template <class T>
void moe_dispatch_backward(const KernelContext& ctx, const T* dbuf, const int32_t* loc, T* dx, int64_t tokens,
                           int64_t top_k, int64_t dim);
template <class T, class G>
void moe_combine_forward(const KernelContext& ctx, const T* buf, const int32_t* loc, const G* gate, T* y,
                         int64_t tokens, int64_t top_k, int64_t dim);
template <class T, class G>
void moe_combine_backward(const KernelContext& ctx, const T* dy, const T* buf, const int32_t* loc,
                          const int32_t* slot_token, const G* gate, T* dbuf, G* dgate, int64_t tokens, int64_t top_k,
                          int64_t slots, int64_t dim);
template <class T>
void swap_leading_axes(const KernelContext& ctx, const T* in, T* out, int64_t outer, int64_t inner, int64_t block);

// adafactor.cu
template <class T>
void adafactor_update(const KernelContext& ctx, T* param, const T* grad, T* row_state, T* col_state, T* full_state,
                      int64_t rows, int64_t cols, int64_t step, const AdafactorHyper& h, int64_t count,
                      int64_t state_stride);
template <class T>
void adafactor_update_sliced(const KernelContext& ctx, const std::vector<SlicedWeight<T>>& weights, int64_t step,
                             const AdafactorHyper& h, const ShardReduce& reduce);

}  // namespace glam::kernels::cuda
