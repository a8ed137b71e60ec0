// How glamsim validate rebuilds the simulation of a run record (the command itself is tested
// end to end in test_glamsim_validate.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "common/catalogue.h"
#include "common/errors.h"
#include "compute/compute_model.h"
#include "validate/child_process.h"
#include "validate/validation.h"
#include "support/expect_error.h"

namespace glam {
namespace {

RunRecord gpu_record(int64_t ranks, int64_t ep) {
  RunRecord r;
  r.file = "gpu-record.json";
  r.model = load_model("glam-8b-64e");
  r.layers_run = 2;
  r.ranks = r.dp = ranks;
  r.ep = ep;
  r.device_kind = "cuda";
  r.device_name = "NVIDIA H200";
  r.gemm_precision = "bf16";
  r.activation_precision = "bfloat16";
  r.global_batch_tokens = 4096 * ranks;
  return r;
}

// Without a profile that measured the links between GPUs, a record of several GPUs runs on the
// catalogue's NVLink (the DGX H200 node's); it was refused for a missing links.nvlink key.
TEST(Validation, GpuRecordsWithoutMeasuredLinksUseTheNodesNvlink) {
  const SimulationInput in = simulation_for(gpu_record(2, 2), std::nullopt, Fidelity::kAnalytical);
  const Cluster node = load_cluster("dgx-h200-8");
  ASSERT_FALSE(in.cluster.links().empty());
  for (const Link& l : in.cluster.links()) {
    EXPECT_EQ(l.kind, LinkKind::kNvlink);
    EXPECT_DOUBLE_EQ(l.bandwidth_Bps, node.links().front().bandwidth_Bps);
    EXPECT_DOUBLE_EQ(l.latency_s, node.links().front().latency_s);
  }
}

// A record runs on the chip its device's name says, over that chip's NVLink where the profile did
// not measure links; a GPU the chip catalogue has no kind of is refused, naming the key (every GPU
// record was simulated as an H200).
TEST(Validation, GpuRecordsRunOnTheChipTheirDeviceNames) {
  RunRecord h100 = gpu_record(2, 2);
  h100.device_name = "NVIDIA H100 80GB HBM3";
  const SimulationInput in = simulation_for(h100, std::nullopt, Fidelity::kAnalytical);
  EXPECT_EQ(in.cluster.chip().kind, "h100");
  EXPECT_EQ(in.profile.device, "h100");
  const Cluster node = load_cluster("dgx-h100-8");
  ASSERT_FALSE(in.cluster.links().empty());
  EXPECT_DOUBLE_EQ(in.cluster.links().front().bandwidth_Bps, node.links().front().bandwidth_Bps);
  EXPECT_EQ(gpu_chip_kind("NVIDIA A100-SXM4-80GB"), "a100-80gb");
  EXPECT_EQ(gpu_chip_kind("NVIDIA A100-SXM4-40GB"), "");
  EXPECT_EQ(gpu_chip_kind("NVIDIA H100 PCIe"), "");
  RunRecord l40s = gpu_record(1, 1);
  l40s.device_name = "NVIDIA L40S";
  const std::string msg = testing::error_message_of<ConfigError>(
      [&] { simulation_for(l40s, std::nullopt, Fidelity::kAnalytical); });
  EXPECT_NE(msg.find("gpu-record.json: key 'device.name' = \"NVIDIA L40S\": expected a GPU the chip catalogue has"),
            std::string::npos)
      << msg;
}

// A record's plan holds what the same plan holds on a catalogue cluster of that chip, NCCL's
// all-to-all channels included: one peer per other expert-parallel rank on the node.
TEST(Validation, GpuRecordsHoldTheAllToAllChannels) {
  const SimulationInput two = simulation_for(gpu_record(2, 2), std::nullopt, Fidelity::kAnalytical);
  const double per_peer = two.cluster.chip().all_to_all_peer_bytes;
  ASSERT_GT(per_peer, 0);
  EXPECT_DOUBLE_EQ(plan_memory(two.model, two.plan).communication_bytes, per_peer);
  const SimulationInput four = simulation_for(gpu_record(4, 4), std::nullopt, Fidelity::kAnalytical);
  EXPECT_DOUBLE_EQ(plan_memory(four.model, four.plan).communication_bytes, 3 * per_peer);
  const SimulationInput dense = simulation_for(gpu_record(4, 1), std::nullopt, Fidelity::kAnalytical);
  EXPECT_EQ(plan_memory(dense.model, dense.plan).communication_bytes, 0);
}

// An op timed by a curve the profile measured for it only at far other sizes is a guess (the curve is
// held at its nearest point); a validation says how many such ops a record has and what would fix it.
TEST(Validation, OpsBeyondTheMeasuredSizesAreNoted) {
  RunRecord r = gpu_record(1, 1);
  CalibrationProfile profile = default_profile("h200");
  const SimulationInput in = simulation_for(r, profile, Fidelity::kAnalytical);
  const StepGraph graph = build_step_graph(in.model_held(), in.plan.step_shape());
  const StepOp* product = nullptr;
  for (const StepOp& op : graph.ops)
    if (op.kind == OpKind::kMatmul && op.name == "ffn_in") product = &op;
  ASSERT_NE(product, nullptr);
  const double size = product->flops;
  profile.ops[op_curve_key(*product)] = {{size / 10, size / 4}, {0.5, 0.6}};  // measured on 4-10x smaller products
  EXPECT_TRUE(ComputeModel(in.cluster.chip(), profile, "bf16").beyond_measured_sizes(*product, 2));
  profile.ops[op_curve_key(*product)] = {{size / 10, size / 1.5}, {0.5, 0.6}};  // up to 1.5x smaller: within reach
  EXPECT_FALSE(ComputeModel(in.cluster.chip(), profile, "bf16").beyond_measured_sizes(*product, 2));
  profile.ops.clear();  // the kind's curve: no op was measured, nothing to be beyond
  EXPECT_FALSE(ComputeModel(in.cluster.chip(), profile, "bf16").beyond_measured_sizes(*product, 2));
  RecordValidation v;
  v.record = r;
  v.ops_beyond_measured = 3;
  bool noted = false;
  for (const std::string& note : v.notes())
    noted |= note.rfind("3 op(s) are more than 2x larger or smaller than any size the profile measured them at", 0) == 0 &&
             note.find("calibrate at this record's 4096 tokens per rank") != std::string::npos;
  EXPECT_TRUE(noted);
}

// Flow-fidelity validation of several host sizes runs each in a child process: its result, its
// usage errors and its death reach the parent as they are.
// Figures cross from a child as JSON and read back as the same doubles, non-finite ones included
// (nlohmann writes those as null, which read back as a type error).
TEST(Validation, FiguresFromAChildReadBackExactly) {
  const double inf = std::numeric_limits<double>::infinity();
  for (double v : {0.1, -2.5e-300, 1e300, 0.0, inf, -inf}) {
    const nlohmann::json sent = nlohmann::json::parse(nlohmann::json::array({json_figure(v)}).dump());
    EXPECT_EQ(figure_of(sent.at(0)), v);
  }
  EXPECT_TRUE(std::isnan(figure_of(nlohmann::json::parse(nlohmann::json(json_figure(std::nan(""))).dump()))));
  EXPECT_THROW(figure_of(nlohmann::json("fast")), nlohmann::json::type_error);
  EXPECT_THROW(figure_of(nlohmann::json(nullptr)), nlohmann::json::type_error);
}

TEST(Validation, ChildProcessesReturnTheirResultOrTheirError) {
  EXPECT_EQ(run_in_child_process([] { return std::string(100000, 'x') + "end"; }), std::string(100000, 'x') + "end");
  EXPECT_EQ(testing::error_message_of<UsageError>(
                [] { run_in_child_process([]() -> std::string { throw UsageError("record r.json: no such op"); }); }),
            "record r.json: no such op");
  try {
    run_in_child_process([]() -> std::string { throw std::logic_error("bug"); });
    ADD_FAILURE() << "no error";
  } catch (const UsageError&) {
    ADD_FAILURE() << "another error is not a usage error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "bug");
  }
  try {
    run_in_child_process([]() -> std::string { std::abort(); });
    ADD_FAILURE() << "no error";
  } catch (const UsageError&) {
    ADD_FAILURE() << "a crash is not a usage error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("died (signal 6)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace glam
