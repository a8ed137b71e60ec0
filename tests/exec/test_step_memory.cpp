// The step's memory, counted without allocating (train/step_memory.h): it must be what constructing
// the step really takes from the heap, grow with the batch as the buffers do, and leave allocation
// working once the count ends.
#include <gtest/gtest.h>

#include <malloc.h>

#include <memory>

#include "comm/communicator.h"
#include "core/device_buffer.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"
#include "tiny_models.h"
#include "train/step_memory.h"

namespace glam::exec {
namespace {

// A small MoE model whose buffers are large enough (tens of MB) for the heap's own overhead to be small.
ModelConfig small_moe() { return glam::testing::small_moe(128, 4096, 128); }

ExecShape shape_of(int64_t seqs, int64_t seq_len) {
  ExecShape s;
  s.seqs = seqs;
  s.seq_len = seq_len;
  return s;
}

int64_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);  // arena blocks in use and mmapped blocks
}

template <class T>
void expect_count_matches_heap(const ModelConfig& m, const ExecShape& shape) {
  const StepMemory counted = step_memory(m, shape, std::is_same_v<T, kernels::bf16>);
  auto comm = make_single_communicator();
  const kernels::KernelContext ctx;
  const int64_t before = heap_in_use();
  {
    Transformer<T> model(m, shape, *comm, ctx);
    AdafactorOptimizer<float> optimizer(model.layout());
    const int64_t grown = heap_in_use() - before;
    // The count has the buffers alone; the heap also holds the op ids, the layout, page rounding.
    EXPECT_GE(grown, counted.total());
    EXPECT_LT(grown, counted.total() + counted.total() / 100 + (1 << 20)) << "counted " << counted.total();
    EXPECT_GT(counted.optimizer_bytes, 0);
  }
}

TEST(StepMemory, CountIsWhatTheStepTakesFromTheHeap) {
  const ModelConfig m = small_moe();
  expect_count_matches_heap<float>(m, shape_of(8, m.seq_len));
  expect_count_matches_heap<kernels::bf16>(m, shape_of(8, m.seq_len));
}

// A tensor-parallel slice (counted, as the trainer counts it, without its communicators) holds half the
// sliced matrices, their state and the activations of half the heads, hidden units and vocabulary;
// the residual stream and the whole tensors stay. The count is still what the slice allocates.
TEST(StepMemory, TensorSlicesHoldTheirShare) {
  const ModelConfig m = small_moe();
  ExecShape sliced = shape_of(8, m.seq_len);
  sliced.tp = 2, sliced.tp_rank = 1;
  expect_count_matches_heap<float>(m, sliced);
  const StepMemory whole = step_memory(m, shape_of(8, m.seq_len), false), half = step_memory(m, sliced, false);
  EXPECT_LT(4 * half.model_bytes, 3 * whole.model_bytes);
  EXPECT_GT(2 * half.model_bytes, whole.model_bytes);
  EXPECT_LT(half.optimizer_bytes, whole.optimizer_bytes);
  sliced.tp_rank = 0;
  EXPECT_EQ(step_memory(m, sliced, false).total(), half.total()) << "the slices are the same size";
}

TEST(StepMemory, GrowsWithTheBatchAndBf16HalvesTheActivations) {
  const ModelConfig m = small_moe();
  const StepMemory s1 = step_memory(m, shape_of(1, m.seq_len), false), s2 = step_memory(m, shape_of(2, m.seq_len), false),
                   s4 = step_memory(m, shape_of(4, m.seq_len), false);
  EXPECT_GT(s2.total(), s1.total());
  EXPECT_EQ(s4.total() - s2.total(), 2 * (s2.total() - s1.total()));  // affine in the sequences
  EXPECT_EQ(s1.optimizer_bytes, s4.optimizer_bytes);                  // the optimizer's state is the weights'
  // bf16: the same weights, gradients and float32 logits, plus the bf16 copies of the weights and the
  // logits' gradient, and activations at half the bytes: per sequence it must cost less.
  const StepMemory b1 = step_memory(m, shape_of(1, m.seq_len), true), b2 = step_memory(m, shape_of(2, m.seq_len), true);
  EXPECT_LT(b2.total() - b1.total(), s2.total() - s1.total());
}

// A pipeline stage holds its blocks' weights and, for each micro-batch in flight in its 1F1B program
// (min(stages - stage, micro-batches)), one set of their activations.
TEST(StepMemory, PipelineStagesHoldTheirBlocksAndTheirMicroBatchesInFlight) {
  ModelConfig m = small_moe();
  m.layers = 4;
  auto stage = [&](int st, int64_t microbatches, int stages = 2) {
    ExecShape s = shape_of(1, m.seq_len);
    s.stages = stages, s.stage = st, s.microbatches = microbatches;
    return step_memory(m, s, false);
  };
  const StepMemory whole = step_memory(m, shape_of(1, m.seq_len), false);
  // Each stage holds half the blocks: with untied embeddings the two optimizer states are the whole's,
  // with tied ones the last stage's copy of the embedding adds its state.
  EXPECT_LT(stage(0, 1).total(), whole.total());
  EXPECT_LT(stage(1, 1).total(), whole.total());
  EXPECT_GT(stage(0, 1).optimizer_bytes + stage(1, 1).optimizer_bytes, whole.optimizer_bytes);
  const ModelConfig tied = m;
  m.tied_embeddings = false;
  EXPECT_EQ(stage(0, 1).optimizer_bytes + stage(1, 1).optimizer_bytes,
            step_memory(m, shape_of(1, m.seq_len), false).optimizer_bytes);
  m = tied;
  // Stage 0 of 2 keeps 2 micro-batches' activations once there are 2 or more; the last stage keeps 1.
  EXPECT_GT(stage(0, 2).total(), stage(0, 1).total());
  EXPECT_EQ(stage(0, 8).total(), stage(0, 2).total());
  EXPECT_EQ(stage(1, 8).total(), stage(1, 1).total());
  // Four stages: stage s keeps min(4 - s, micro-batches), one block's each.
  const int64_t one_set = stage(0, 2, 4).total() - stage(0, 1, 4).total();
  EXPECT_GT(one_set, 0);
  EXPECT_EQ(stage(0, 8, 4).total() - stage(0, 1, 4).total(), 3 * one_set);
  EXPECT_EQ(stage(2, 8, 4).total() - stage(2, 1, 4).total(), one_set);
}

TEST(StepMemory, MaxSequencesIsTheLargestThatFits) {
  const ModelConfig m = small_moe();
  const ExecShape base = shape_of(1, m.seq_len);
  const int64_t three = step_memory(m, shape_of(3, m.seq_len), false).total();
  EXPECT_EQ(max_sequences_within(m, base, false, three), 3);
  EXPECT_EQ(max_sequences_within(m, base, false, three - 1), 2);
  EXPECT_EQ(max_sequences_within(m, base, false, step_memory(m, base, false).total() - 1), 0);
  // Routing groups of two sequences: only even counts can run.
  ModelConfig grouped = m;
  grouped.group_tokens = 2 * m.seq_len;
  const int64_t two = step_memory(grouped, shape_of(2, m.seq_len), false).total();
  EXPECT_EQ(max_sequences_within(grouped, base, false, two), 2);
  EXPECT_EQ(max_sequences_within(grouped, base, false, step_memory(grouped, shape_of(4, m.seq_len), false).total() - 1), 2);
  // bf16 with a 2^20 vocabulary: the float32 logits stop at their chunk of 256 rows (two sequences),
  // so the memory is not affine in the sequences; the answer must still be exact.
  ModelConfig wide = m;
  wide.vocab_size = int64_t{1} << 20;
  for (int64_t seqs : {1, 5, 9}) {
    const int64_t need = step_memory(wide, shape_of(seqs, m.seq_len), true).total();
    EXPECT_EQ(max_sequences_within(wide, base, true, need), seqs);
    EXPECT_EQ(max_sequences_within(wide, base, true, need - 1), seqs - 1);
  }
}

TEST(StepMemory, AllocationWorksAgainAfterTheCount) {
  {
    kernels::AllocationCount count;
    DeviceBuffer<float> counted(1000);
    EXPECT_EQ(count.bytes(), 4000);
    {
      kernels::AllocationCount inner;  // the innermost count takes the bytes
      DeviceBuffer<double> more(10);
      EXPECT_EQ(inner.bytes(), 80);
    }
    EXPECT_EQ(count.bytes(), 4000);
  }
  DeviceBuffer<float> real(1000);
  real.data()[999] = 3.f;
  EXPECT_EQ(real.data()[0], 0.f);  // real, zeroed memory
  EXPECT_EQ(real.data()[999], 3.f);
}

// A count past 8 EiB says "too much" rather than wrapping to a small or negative size.
TEST(StepMemory, CountsSaturate) {
  kernels::AllocationCount count;
  count.add(static_cast<size_t>(INT64_MAX) - 10);
  EXPECT_EQ(count.bytes(), INT64_MAX - 10);
  count.add(100);
  EXPECT_EQ(count.bytes(), INT64_MAX);
  count.add(SIZE_MAX);
  EXPECT_EQ(count.bytes(), INT64_MAX);
}

}  // namespace
}  // namespace glam::exec
