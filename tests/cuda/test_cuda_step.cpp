// The training step on the GPU against the CPU: one full step's loss and every gradient tensor (CUDA
// float32 vs the CPU's float64 model), ten steps of losses with Adafactor (CUDA vs CPU, float32 both),
// and glamexec train --device cuda end to end. Skipped without a CUDA device, except the check that
// --device cuda fails cleanly where there is none.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <filesystem>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "core/gpu_energy_meter.h"
#include "cuda_test_support.h"
#include "elementwise.h"
#include "model/transformer.h"
#include "model_config.h"
#include "optim/adafactor_optimizer.h"
#include "support/random_batch.h"
#include "support/run_command.h"
#include "ten_steps.h"

namespace glam::testing {
namespace {

using exec::ExecShape;
using exec::StepLoss;
using exec::Transformer;


ExecShape shape_of(const ModelConfig& m, int64_t seqs) {
  ExecShape s;
  s.seqs = seqs;
  s.seq_len = m.seq_len;
  return s;
}

TEST(CudaStep, LossAndGradientsMatchTheCpuStep) {
  GLAM_REQUIRE_CUDA_DEVICE();
  for (const char* id : {"glam-tiny", "glam-tiny-8e"}) {
    ModelConfig m = load_model(id);
    ExecShape s = shape_of(m, 4);
    auto comm = exec::make_single_communicator();
    kernels::KernelContext cpu;
    Transformer<double> ref(m, s, *comm, cpu);
    ref.init_params(11);
    CudaContext gpu;
    Transformer<float> model(m, s, *comm, gpu.ctx);
    model.init_params(11);
    auto b = random_batch(s.tokens(), m.vocab_size, 5);
    DeviceVec<int32_t> in(b.inputs), tg(b.targets);
    StepLoss lr = ref.run(b.inputs.data(), b.targets.data(), 1, true);
    StepLoss lg = model.run(in.get(), tg.get(), 1, true);
    EXPECT_NEAR(lg.total, lr.total, 1e-5 * std::abs(lr.total)) << id;
    EXPECT_NEAR(lg.ce, lr.ce, 1e-5 * std::abs(lr.ce)) << id;
    EXPECT_NEAR(lg.z, lr.z, 1e-4 * std::abs(lr.z)) << id;
    EXPECT_NEAR(lg.aux, lr.aux, 1e-5 * std::abs(lr.aux) + 1e-9) << id;
    // Routing: the same choices, but for a router-logit near-tie that float32 and float64 break
    // differently (at most one copy in a thousand, at least one, moved). A moved layer's own gradients
    // are held to 50% (finite, of the right size), the others to 2e-4.
    const std::vector<int64_t> moved = layers_routed_differently(model.moe_stats(), ref.moe_stats(), 0.001, id);
    const int64_t total = model.layout().total_elements;
    std::vector<float> g(static_cast<size_t>(total));
    exec::copy_to_host(model.grads(), g.data(), total);
    for (const exec::ParamInfo& p : model.layout().params) {
      std::vector<float> got(g.begin() + p.offset, g.begin() + p.offset + p.elements());
      std::vector<double> want(ref.grads() + p.offset, ref.grads() + p.offset + p.elements());
      expect_close(got, want, routed_by(p.name, moved) ? 0.5 : 2e-4, std::string(id) + " gradient " + p.name, 1e-10);
    }
  }
}

TEST(CudaStep, TenStepsOfLossesMatchTheCpuRun) {
  GLAM_REQUIRE_CUDA_DEVICE();
  const double worst = ten_steps_against_the_cpu<float>(&StepLoss::total, 1e-3);
  std::cout << "largest relative loss difference over 10 steps: " << worst << "\n";
  RecordProperty("largest_relative_loss_difference", std::to_string(worst));
}

// The GPU's energy counter: a reading that grows while the GPU works, or, without a GPU or NVML, a
// reason and no reading.
TEST(GpuEnergy, CounterReadsOrSaysWhyNot) {
  exec::GpuEnergyMeter meter(0);
  if (!have_cuda_device()) {
    EXPECT_FALSE(meter.available());
    EXPECT_FALSE(meter.why_not().empty());
    EXPECT_LT(meter.read_joules(), 0);
    return;
  }
  if (!meter.available()) GTEST_SKIP() << "GPU energy counter unavailable: " << meter.why_not();
  const double e0 = meter.read_joules();
  CudaContext gpu;
  DeviceVec<float> x(size_t{1} << 26);
  for (int i = 0; i < 200; ++i) kernels::fill<float>(gpu.ctx, x.get(), static_cast<float>(i), 1 << 26);
  kernels::synchronize(gpu.ctx);
  // The counter updates every 20-100 ms on recent GPUs; waited for up to 2 s.
  double e1 = meter.read_joules();
  for (int i = 0; i < 40 && e1 <= e0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    e1 = meter.read_joules();
  }
  EXPECT_GE(e0, 0);
  EXPECT_GT(e1, e0);
}

class CudaTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("glamexec-cuda-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static inline std::filesystem::path dir_;
};

TEST_F(CudaTrain, GlamexecTrainRunsOnTheGpu) {
  GLAM_REQUIRE_CUDA_DEVICE();
  for (const char* precision : {"fp32", "bf16"}) {
    const std::string rec = path(std::string("rec-") + precision + ".json");
    auto r = run_command("glamexec train --quiet --device cuda --precision " + std::string(precision) +
                         " --model glam-tiny-8e --steps 4 --batch-tokens 512 --random-tokens --record " + rec);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(read_whole_file(rec));
    EXPECT_EQ(j["device"]["kind"], "cuda");
    EXPECT_EQ(j["device"]["gemm_precision"], precision);
    EXPECT_FALSE(j["device"]["name"].get<std::string>().empty());
    ASSERT_EQ(j["losses"].size(), 4u);
    for (const auto& l : j["losses"]) EXPECT_TRUE(std::isfinite(l.get<double>()));
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(j["ops"].size(), 20u);
    // the step's buffers, counted before allocation, against the GPU's free memory (cudaMemGetInfo)
    EXPECT_GT(j["device"]["memory"]["step_buffers_bytes"].get<int64_t>(), 0);
    EXPECT_GT(j["device"]["memory"]["free_bytes_before"].get<int64_t>(),
              j["device"]["memory"]["step_buffers_bytes"].get<int64_t>());
    // and the device's memory in all: what the runtime holds is the difference
    EXPECT_GT(j["device"]["memory"]["total_bytes"].get<int64_t>(),
              j["device"]["memory"]["free_bytes_before"].get<int64_t>());
  }
  // A batch far beyond the GPU's memory is refused before anything is allocated, naming one that fits.
  // (--op-timing all: CUDA's default, alternate, needs two timed steps and would refuse one first.)
  auto r = run_command("glamexec train --quiet --device cuda --model glam-0.1b --steps 1 --op-timing all "
                       "--batch-tokens 4194304 --random-tokens");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("free: at most --batch-tokens"), std::string::npos) << r.err;
}

// Two GPUs, one process each (NCCL refuses two ranks on one GPU): two expert- and data-parallel ranks,
// two tensor-parallel slices of one rank, and two pipeline stages give the one-GPU run's losses
// (float32 products; the ranks, slices and stages only change the order of some sums).
TEST_F(CudaTrain, TwoGpusGiveTheOneGpuLosses) {
  GLAM_REQUIRE_CUDA_DEVICE();
  if (kernels::cuda_device_count() < 2) GTEST_SKIP() << "needs 2 GPUs (" << kernels::cuda_device_count() << " visible)";
  if (!std::filesystem::exists(GLAM_MPIEXEC)) GTEST_SKIP() << "no " << GLAM_MPIEXEC << " on this machine";
  const std::string common = " glamexec train --quiet --device cuda --precision fp32 --op-timing all"
                             " --model glam-tiny-8e --steps 4 --batch-tokens 512 --seed 3 --random-tokens --record ";
  const std::string mpirun = std::string(GLAM_MPIEXEC) + " --allow-run-as-root -np 2";
  auto losses = [&](const std::string& launch, const std::string& extra, const std::string& name) {
    const std::string rec = path(name);
    auto r = run_command(launch + common + rec + extra);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    std::vector<double> v;
    // The record held in a variable: a range-for over a member of a temporary reads freed memory.
    const auto record = nlohmann::json::parse(read_whole_file(rec));
    for (const auto& l : record["losses"]) v.push_back(l.get<double>());
    return v;
  };
  struct Layout {
    std::string both, two_gpus, name;  // arguments of both runs, of the two-GPU run only
  };
  for (const Layout& l : {Layout{"", "", "two-ranks"}, Layout{"", " --tensor-parallel 2", "two-slices"},
                          Layout{" --microbatches 4", " --stages 2", "two-stages"}}) {
    const auto one = losses("", l.both, l.name + "-one-gpu.json");
    const auto two = losses(mpirun, l.both + l.two_gpus, l.name + ".json");
    ASSERT_EQ(one.size(), 4u) << l.name;
    ASSERT_EQ(two.size(), one.size()) << l.name;
    for (size_t i = 0; i < one.size(); ++i)
      EXPECT_NEAR(two[i], one[i], 1e-4 * std::abs(one[i])) << l.name << ", step " << i + 1;
  }
}

// Checkpoints of GPU runs: a GPU run continued from its checkpoint gives the uninterrupted run's
// losses, and the same checkpoint resumed on the CPU tracks them (float32 both ways), as does a CPU
// checkpoint resumed on the GPU.
TEST_F(CudaTrain, CheckpointsMoveBetweenTheGpuAndTheCpu) {
  GLAM_REQUIRE_CUDA_DEVICE();
  // Random tokens: what moves is the checkpoint, and the GPU machine need not have the default text.
  const std::string common =
      " --quiet --precision fp32 --op-timing all --model glam-tiny-8e --batch-tokens 512 --seed 3 --random-tokens";
  auto losses = [&](const std::string& args, const std::string& name) {
    const std::string rec = path(name);
    auto r = run_command("glamexec train" + common + args + " --record " + rec);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    std::vector<double> v;
    // The record held in a variable: a range-for over a member of a temporary reads freed memory.
    const auto record = nlohmann::json::parse(read_whole_file(rec));
    for (const auto& l : record["losses"]) v.push_back(l.get<double>());
    return v;
  };
  const auto whole = losses(" --device cuda --steps 5", "gpu-5.json");
  ASSERT_EQ(whole.size(), 5u);
  losses(" --device cuda --steps 3 --save " + path("gpu-3.ckpt"), "gpu-3.json");
  losses(" --device cpu --steps 3 --save " + path("cpu-3.ckpt"), "cpu-3.json");
  const auto gpu_gpu = losses(" --device cuda --steps 2 --resume " + path("gpu-3.ckpt"), "gpu-gpu.json");
  const auto gpu_cpu = losses(" --device cpu --steps 2 --resume " + path("gpu-3.ckpt"), "gpu-cpu.json");
  const auto cpu_gpu = losses(" --device cuda --steps 2 --resume " + path("cpu-3.ckpt"), "cpu-gpu.json");
  for (const auto* run : {&gpu_gpu, &gpu_cpu, &cpu_gpu}) ASSERT_EQ(run->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const double want = whole[3 + i];
    // Not to the bit: the GPU's float atomics (embedding and bias gradients) add in any order.
    EXPECT_NEAR(gpu_gpu[i], want, 1e-4 * want) << "GPU checkpoint resumed on the GPU, step " << 4 + i;
    EXPECT_NEAR(gpu_cpu[i], want, 1e-3 * want) << "GPU checkpoint resumed on the CPU, step " << 4 + i;
    EXPECT_NEAR(cpu_gpu[i], want, 1e-3 * want) << "CPU checkpoint resumed on the GPU, step " << 4 + i;
  }
}

TEST_F(CudaTrain, DeviceCudaWithoutADeviceIsABadInput) {
  if (have_cuda_device()) GTEST_SKIP() << "a CUDA device is present";
  auto r = run_command("glamexec train --quiet --device cuda --model glam-tiny --steps 1 --random-tokens");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
  auto p = run_command("glamexec train --quiet --precision tf32 --model glam-tiny --steps 1 --random-tokens");
  EXPECT_EQ(p.exit_code, 2) << p.err;
  EXPECT_NE(p.err.find("--precision"), std::string::npos) << p.err;
}

}  // namespace
}  // namespace glam::testing
