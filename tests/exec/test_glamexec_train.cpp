// End-to-end tests of `glamexec train` (single process): the run record, --layers, --format json,
// checkpoints (bit-for-bit continuation, atomic writes) and bad input (exit 2, nothing overwritten).
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "accounting.h"
#include "support/run_command.h"

namespace glam::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class Train : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("glamexec-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }
  static CommandResult train(const std::string& args) {
    return run_command("glamexec train --cache-dir " + path("cache") + " --quiet " + args);
  }
  static void write(const std::string& name, const std::string& text) { std::ofstream(path(name)) << text; }
  static inline fs::path dir_;
};

const std::regex kOpId(
    R"(^(L[0-9]+\.(attn_norm|attn_qkv|attn_scores|attn_softmax|attn_context|attn_out|ffn_norm|ffn_in|ffn_act|ffn_out|)"
    R"(moe_router|moe_dispatch_a2a|moe_expert_in|moe_expert_act|moe_expert_out|moe_combine_a2a|moe_permute|moe_unpermute)\.(fwd|bwd)|)"
    R"(embed\.fwd|embed\.bwd|final_norm\.fwd|final_norm\.bwd|logits\.fwd|logits\.bwd|loss\.fwd|grad_allreduce|optimizer)$)");

TEST_F(Train, RunRecordFollowsTheSchema) {
  auto r = train("--model glam-tiny-8e --steps 4 --batch-tokens 256 --record " + path("rec.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(read_whole_file(path("rec.json")));
  EXPECT_EQ(j["schema"], "glam-run-record/1");
  EXPECT_EQ(j["model"]["id"], "glam-tiny-8e");
  EXPECT_EQ(j["model"]["layers_run"], 4);
  EXPECT_EQ(j["model_config"]["moe"]["experts"], 8);
  EXPECT_EQ(j["plan"]["ranks"], 1);
  EXPECT_EQ(j["plan"]["tp"], 1);
  EXPECT_EQ(j["device"]["kind"], "cpu");
  EXPECT_EQ(j["batch_tokens"], 256);
  EXPECT_EQ(j["global_batch_tokens"], 256);
  EXPECT_EQ(j["seq_len"], 128);
  EXPECT_EQ(j["steps"], 4);
  EXPECT_EQ(j["warmup_steps"], 2);
  EXPECT_EQ(j["step_time_s"]["all"].size(), 2u);
  EXPECT_GT(j["step_time_s"]["median"].get<double>(), 0);
  EXPECT_EQ(j["op_timing"], "all");  // the CPU's default: every timed step times its ops
  // The step's buffers, counted before they were allocated: glam-tiny-8e's 3.28M float32 weights and
  // their gradients alone are 26.2 MB; with 256 tokens of activations the whole is about 50 MiB.
  const int64_t buffers = j["device"]["memory"]["step_buffers_bytes"].get<int64_t>();
  EXPECT_GT(buffers, 26'200'000);
  EXPECT_LT(buffers, 100'000'000);
  EXPECT_GT(j["device"]["memory"]["free_bytes_before"].get<int64_t>(), buffers);
  EXPECT_FALSE(j["device"]["memory"].contains("total_bytes"));  // a GPU's alone: the runtime's share of it
  EXPECT_FALSE(j.contains("op_timed_step_time_s"));
  EXPECT_EQ(j["losses"].size(), 4u);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["achieved_flops_per_s"].get<double>(), 0);
  std::set<std::string> ids;
  for (const auto& op : j["ops"]) {
    std::string id = op["id"];
    EXPECT_TRUE(std::regex_match(id, kOpId)) << id;
    EXPECT_GE(op["p90_s"].get<double>(), op["p10_s"].get<double>());
    ids.insert(id);
  }
  for (const char* id : {"embed.fwd", "embed.bwd", "L0.attn_qkv.fwd", "L0.attn_scores.bwd", "L0.ffn_in.fwd",
                         "L1.moe_router.fwd", "L1.moe_router.bwd", "L1.moe_expert_in.fwd", "L1.moe_expert_out.bwd",
                         "L1.moe_permute.fwd", "L1.moe_unpermute.bwd", "L3.attn_out.bwd", "logits.fwd", "logits.bwd",
                         "loss.fwd", "final_norm.fwd", "optimizer"})
    EXPECT_TRUE(ids.count(id)) << id;
  EXPECT_FALSE(ids.count("L0.moe_router.fwd"));  // layer 0 is dense
  ASSERT_EQ(j["moe_layers"].size(), 2u);
  for (const auto& l : j["moe_layers"]) {
    ASSERT_EQ(l["expert_load"].size(), 8u);
    ASSERT_EQ(l["expert_dropped"].size(), 8u);
    int64_t kept = 0, dropped = 0;
    for (const auto& v : l["expert_load"]) kept += v.get<int64_t>();
    for (const auto& v : l["expert_dropped"]) dropped += v.get<int64_t>();
    EXPECT_EQ(dropped, l["dropped_tokens"].get<int64_t>());  // each expert's drops, as counted in all
    EXPECT_EQ(kept + dropped, l["routed_tokens"].get<int64_t>());
    EXPECT_EQ(l["routed_tokens"], 2 * 256 * 2);  // 2 timed steps x 256 tokens x top-2
  }
}

// Gradient accumulation: the record names its micro-batches, holds the ops of every micro-batch under
// the StepGraph's ids ("mb1." for the second), counts the routing of both, and its losses are those
// of the same batch in one pass (float32 sums in another order: to 1e-5).
TEST_F(Train, MicroBatchesRecordEveryPassAndTrainAsOne) {
  auto one = train("--model glam-tiny-8e --steps 3 --batch-tokens 512 --random-tokens --format json");
  auto two = train("--model glam-tiny-8e --steps 3 --batch-tokens 512 --random-tokens --format json --microbatches 2");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(two.exit_code, 0) << two.err;
  const json a = json::parse(one.out), b = json::parse(two.out);
  EXPECT_EQ(b["plan"]["microbatches"], 2);
  EXPECT_EQ(b["batch_tokens"], 512);
  EXPECT_EQ(b["global_batch_tokens"], 512);
  ASSERT_EQ(b["losses"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(b["losses"][i].get<double>(), a["losses"][i].get<double>(), 1e-5) << i;
  std::set<std::string> ids;
  for (const auto& op : b["ops"]) {
    std::string id = op["id"];
    const bool second = id.rfind("mb1.", 0) == 0;
    EXPECT_TRUE(std::regex_match(second ? id.substr(4) : id, kOpId)) << id;
    ids.insert(id);
  }
  for (const char* id : {"L1.moe_router.fwd", "mb1.L1.moe_router.fwd", "mb1.embed.bwd", "mb1.logits.bwd", "optimizer"})
    EXPECT_TRUE(ids.count(id)) << id;
  // The optimizer runs once per step, not per micro-batch (the 2-rank gradient all-reduce: check_loop.sh).
  EXPECT_FALSE(ids.count("mb1.optimizer"));
  EXPECT_EQ(b["ops"].size(), 2 * a["ops"].size() - 1);  // every op twice but the optimizer
  for (const auto& l : b["moe_layers"]) EXPECT_EQ(l["routed_tokens"], 1 * 512 * 2);  // 1 timed step x 512 x top-2
  // In bf16 the first pass also writes the weights' bf16 copy (timed as the optimizer's): once.
  auto bf16 = train("--model glam-tiny-8e --steps 3 --batch-tokens 512 --random-tokens --format json --microbatches 2 "
                    "--precision bf16");
  ASSERT_EQ(bf16.exit_code, 0) << bf16.err;
  const json bf16_record = json::parse(bf16.out);
  std::set<std::string> bf16_ids;
  for (const auto& op : bf16_record["ops"]) bf16_ids.insert(op["id"].get<std::string>());
  EXPECT_TRUE(bf16_ids.count("optimizer"));
  EXPECT_FALSE(bf16_ids.count("mb1.optimizer"));
}

// Alternate op timing (the CUDA default): ops from every other timed step, the step time from the
// others, both in the record.
TEST_F(Train, AlternateOpTiming) {
  auto r = train("--model glam-tiny --steps 7 --warmup 2 --batch-tokens 256 --op-timing alternate --record " +
                 path("alt.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(read_whole_file(path("alt.json")));
  EXPECT_EQ(j["op_timing"], "alternate");
  EXPECT_EQ(j["step_time_s"]["all"].size(), 2u);          // timed steps 2 and 4
  EXPECT_EQ(j["op_timed_step_time_s"]["all"].size(), 3u);  // timed steps 1, 3 and 5
  ASSERT_FALSE(j["ops"].empty());
  for (const auto& op : j["ops"]) EXPECT_GT(op["median_s"].get<double>(), 0) << op["id"];
  EXPECT_EQ(j["losses"].size(), 7u);
  r = train("--model glam-tiny --steps 3 --warmup 2 --batch-tokens 256 --op-timing alternate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--op-timing alternate: 1 timed step(s), expected at least 2"), std::string::npos) << r.err;
  r = train("--model glam-tiny --steps 3 --batch-tokens 256 --op-timing sometimes");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--op-timing sometimes: expected all or alternate"), std::string::npos) << r.err;
}

// --precision bf16: bf16 activations and products, float32 master weights; the record says so, and
// the losses follow the float32 run's (the same weights, data and routing seed).
TEST_F(Train, Bf16PrecisionTracksFloat32) {
  auto r = train("--model glam-tiny-8e --steps 6 --batch-tokens 256 --seed 5 --precision bf16 --record " +
                 path("bf16.json") + " --save " + path("bf16.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(train("--model glam-tiny-8e --steps 6 --batch-tokens 256 --seed 5 --record " + path("fp32.json")).exit_code, 0);
  json b = json::parse(read_whole_file(path("bf16.json"))), f = json::parse(read_whole_file(path("fp32.json")));
  EXPECT_EQ(b["device"]["activation_precision"], "bfloat16");
  EXPECT_EQ(b["device"]["gemm_precision"], "bf16");
  EXPECT_EQ(f["device"]["activation_precision"], "float32");
  ASSERT_EQ(b["losses"].size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_NEAR(b["losses"][i].get<double>(), f["losses"][i].get<double>(), 0.01 * f["losses"][i].get<double>())
        << "step " << i + 1;
  // the checkpoint holds the float32 master weights: a float32 run continues from it
  EXPECT_EQ(train("--model glam-tiny-8e --steps 1 --batch-tokens 256 --resume " + path("bf16.ckpt")).exit_code, 0);
}

TEST_F(Train, LayersAndJsonFormat) {
  auto r = train("--model glam-tiny-8e --layers 2 --steps 2 --batch-tokens 128 --format json --random-tokens");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["model"]["layers_run"], 2);
  EXPECT_EQ(j["moe_layers"].size(), 1u);
  EXPECT_EQ(j["data"]["text"], "random tokens");
  for (const auto& op : j["ops"]) EXPECT_EQ(op["id"].get<std::string>().rfind("L2.", 0), std::string::npos);
}

TEST_F(Train, CheckpointContinuationIsBitForBit) {
  ASSERT_EQ(train("--model glam-tiny-8e --steps 4 --batch-tokens 256 --seed 5 --save " + path("a4.ckpt")).exit_code, 0);
  ASSERT_EQ(train("--model glam-tiny-8e --steps 2 --batch-tokens 256 --seed 5 --save " + path("b2.ckpt")).exit_code, 0);
  auto r = train("--model glam-tiny-8e --steps 2 --batch-tokens 256 --resume " + path("b2.ckpt") + " --save " +
                 path("b4.ckpt") + " --record " + path("b4.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string a = read_whole_file(path("a4.ckpt")), b = read_whole_file(path("b4.ckpt"));
  ASSERT_GT(a.size(), 1000000u);
  EXPECT_TRUE(a == b) << "the continued run differs from the uninterrupted one";
  EXPECT_EQ(json::parse(std::ifstream(path("b4.json")))["data"]["first_sequence"], 4);  // 2 steps x 2 sequences
  // Another batch reads on from where the saved run stopped (step 2 x 1 sequence would go back to 2),
  // and another text is said.
  r = train("--model glam-tiny-8e --steps 1 --batch-tokens 128 --resume " + path("b2.ckpt") + " --record " +
            path("b3.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(std::ifstream(path("b3.json")))["data"]["first_sequence"], 4);
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  r = train("--model glam-tiny-8e --steps 1 --batch-tokens 256 --random-tokens --resume " + path("b2.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("was trained on "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; this run reads random tokens, a stream of 8 sequences, from its sequence 4"), std::string::npos)
      << r.err;
  // Random tokens come in a stream as long as 4 batches: another batch is other data, and is said.
  ASSERT_EQ(train("--model glam-tiny-8e --steps 2 --batch-tokens 256 --random-tokens --save " + path("r2.ckpt")).exit_code, 0);
  r = train("--model glam-tiny-8e --steps 1 --batch-tokens 256 --random-tokens --resume " + path("r2.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  r = train("--model glam-tiny-8e --steps 1 --batch-tokens 128 --random-tokens --resume " + path("r2.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("was trained on random tokens, a stream of 8 sequences; this run reads random tokens, a stream "
                       "of 4 sequences"),
            std::string::npos)
      << r.err;
}

// The file's tensors are what the accounting counts as a checkpoint (the planner's checkpoint writes):
// float32 weights and Adafactor's state, every tensor once.
TEST_F(Train, CheckpointPayloadIsTheAccountingsCheckpointBytes) {
  for (const std::string model : {"glam-tiny", "glam-tiny-8e"}) {
    const std::string file = path(model + ".ckpt");
    ASSERT_EQ(train("--model " + model + " --steps 1 --batch-tokens 256 --save " + file).exit_code, 0);
    const std::string bytes = read_whole_file(file);
    ASSERT_EQ(bytes.compare(0, 8, "GLAMCKPT"), 0);
    uint64_t header = 0;  // "GLAMCKPT" | u32 version | u32 0 | u64 header bytes | header | payload | u64 checksum
    std::memcpy(&header, bytes.data() + 16, sizeof header);
    const double payload = static_cast<double>(bytes.size() - 24 - header - 8);
    EXPECT_EQ(payload, checkpoint_bytes(load_model(model))) << model;
  }
}

TEST_F(Train, AStepThatCannotFitIsRefusedBeforeAllocating) {
  // glam-8b-64e, whole: about a TiB of buffers at the smallest batch; no batch fits any host.
  write("keep.json", "old record");
  auto r = train("--model glam-8b-64e --steps 1 --batch-tokens 1024 --random-tokens --record " + path("keep.json"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("glam-8b-64e (32 layers) at 1024 tokens per rank, --precision fp32, needs "), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("no batch fits: try fewer --layers"), std::string::npos) << r.err;
  EXPECT_EQ(read_whole_file(path("keep.json")), "old record");
  // glam-0.1b at a million tokens (TiBs of logits): the largest batch that fits is named (about 2 GiB
  // of buffers at the smallest, 1,024 tokens; a host with less available is told that none fits).
  r = train("--model glam-0.1b --layers 1 --steps 1 --batch-tokens 1048576 --random-tokens");
  EXPECT_EQ(r.exit_code, 2);
  std::smatch fit;
  if (r.err.find("no batch fits") == std::string::npos) {
    ASSERT_TRUE(std::regex_search(r.err, fit, std::regex("at most --batch-tokens ([0-9]+) fits"))) << r.err;
    const int64_t tokens = std::stoll(fit[1]);
    EXPECT_EQ(tokens % 1024, 0);
    EXPECT_LT(tokens, 1048576);
    // ... or the same batch in micro-batches no larger than that: the fewest that fit.
    ASSERT_TRUE(std::regex_search(r.err, fit, std::regex("or this batch with --microbatches ([0-9]+)"))) << r.err;
    const int64_t microbatches = std::stoll(fit[1]), sequences = 1048576 / 1024;
    EXPECT_EQ(sequences % microbatches, 0);
    EXPECT_LE(1048576 / microbatches, tokens);
    for (int64_t fewer = 1; fewer < microbatches; ++fewer)
      if (sequences % fewer == 0) {
        EXPECT_GT(1048576 / fewer, tokens) << fewer;
      }
  }
}

TEST_F(Train, BadInputExitsTwoAndOverwritesNothing) {
  write("keep.json", "old record");
  write("keep.ckpt", "old checkpoint");
  const std::string outs = " --record " + path("keep.json") + " --save " + path("keep.ckpt");
  auto untouched = [&] {
    EXPECT_EQ(read_whole_file(path("keep.json")), "old record");
    EXPECT_EQ(read_whole_file(path("keep.ckpt")), "old checkpoint");
  };
  auto r = train("--model no-such-model --steps 1" + outs);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no-such-model"), std::string::npos) << r.err;
  untouched();
  const auto trained = run_command("glamexec tokenizer --vocab 1000 --out " + path("v1000.model"));
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_NE(trained.out.find("wrote " + path("v1000.model") + ": a SentencePiece BPE model of 1000 pieces"),
            std::string::npos)
      << trained.out;
  // fewer pieces than SentencePiece's 3 control pieces: refused by the option, not by SentencePiece's internals
  const auto too_few = run_command("glamexec tokenizer --vocab 2 --out " + path("v2.model"));
  EXPECT_EQ(too_few.exit_code, 2);
  EXPECT_NE(too_few.err.find("--vocab: got '2', expected a whole number from 3"), std::string::npos) << too_few.err;
  r = train("--model glam-tiny --steps 1 --tokenizer " + path("v1000.model") + outs);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("does not match vocab_size = 4096"), std::string::npos) << r.err;
  untouched();
  r = train("--model glam-tiny --steps 1 --resume " + path("keep.ckpt") + outs);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("corrupt checkpoint"), std::string::npos) << r.err;
  untouched();
  ASSERT_EQ(run_command("glamexec tokenizer --vocab 4096 --out " + path("v4096.model")).exit_code, 0);
  write("short.txt", "Far too short for one batch of 128-token sequences.\n");
  r = train("--model glam-tiny --steps 1 --text " + path("short.txt") + " --tokenizer " + path("v4096.model") + outs);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("text too short for one batch"), std::string::npos) << r.err;
  untouched();
  r = train("--model glam-tiny --steps 1 --device cuda" + outs);
  EXPECT_EQ(r.exit_code, 2);
  r = train("--model glam-tiny --steps 1 --batch-tokens 100" + outs);
  EXPECT_EQ(r.exit_code, 2);
  untouched();
  // The record over the checkpoint it saves or resumes from would replace it.
  for (const char* flag : {" --save ", " --resume "}) {
    r = train("--model glam-tiny --steps 1 --batch-tokens 128 --record " + path("keep.ckpt") + flag + path("keep.ckpt"));
    EXPECT_EQ(r.exit_code, 2) << flag;
    EXPECT_NE(r.err.find("the record would replace the checkpoint"), std::string::npos) << r.err;
  }
  untouched();
  // Settings the executor does not implement are refused, naming the model's file, not run as others.
  const std::string tiny = read_whole_file(fs::path(GLAM_SOURCE_DIR) / "models/glam-tiny-8e.toml");
  for (const auto& [from, to, key] :
       {std::tuple{"[moe]", "[moe]\ndispatch = \"kept\"", "moe.dispatch"},
        std::tuple{"weight_precision = \"float32\"", "weight_precision = \"bfloat16\"", "training.weight_precision"}}) {
    std::string edited = tiny;
    edited.replace(edited.find(from), std::strlen(from), to);
    write("unsupported.toml", edited);
    r = train("--model " + path("unsupported.toml") + " --steps 1 --batch-tokens 128" + outs);
    EXPECT_EQ(r.exit_code, 2) << key;
    EXPECT_NE(r.err.find(path("unsupported.toml") + ": key '" + key + "'"), std::string::npos) << r.err;
  }
  untouched();
}

TEST_F(Train, CorruptOrForeignCheckpointsAreRefused) {
  ASSERT_EQ(train("--model glam-tiny --steps 1 --batch-tokens 128 --save " + path("t.ckpt")).exit_code, 0);
  std::string good = read_whole_file(path("t.ckpt"));
  write("trunc.ckpt", good.substr(0, good.size() / 2));
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  write("flip.ckpt", flipped);
  for (const char* f : {"trunc.ckpt", "flip.ckpt"}) {
    auto r = train(std::string("--model glam-tiny --steps 1 --batch-tokens 128 --resume ") + path(f));
    EXPECT_EQ(r.exit_code, 2) << f;
    EXPECT_NE(r.err.find("corrupt checkpoint"), std::string::npos) << r.err;
  }
  auto r = train("--model glam-tiny-8e --steps 1 --batch-tokens 128 --resume " + path("t.ckpt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("different model"), std::string::npos) << r.err;
  // Refused before a tokenizer is trained and cached for the run.
  r = run_command("glamexec train --quiet --cache-dir " + path("untouched-cache") +
                  " --model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("flip.ckpt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("corrupt checkpoint"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("untouched-cache")) && !fs::is_empty(path("untouched-cache")));
  r = train("--model glam-tiny --steps 1 --resume " + dir_.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("is a folder (expected a checkpoint file)"), std::string::npos) << r.err;
}

// `body` (a checkpoint less its last 8 bytes) with its checksum appended (FNV-1a, 64 bits).
std::string with_checksum(std::string body) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : body) hash = (hash ^ c) * 1099511628211ull;
  body.append(reinterpret_cast<const char*>(&hash), 8);
  return body;
}

// A checkpoint whose header was edited by hand, with its length and checksum made to match: what the
// header check must refuse on its own, since the checksum passes.
std::string with_header(const std::string& checkpoint, const std::function<void(json&)>& edit) {
  uint64_t length = 0;
  std::memcpy(&length, checkpoint.data() + 16, 8);
  json header = json::parse(checkpoint.substr(24, length));
  edit(header);
  const std::string head = header.dump();
  std::string out = checkpoint.substr(0, 16);
  const uint64_t new_length = head.size();
  out.append(reinterpret_cast<const char*>(&new_length), 8);
  out += head + checkpoint.substr(24 + length, checkpoint.size() - 24 - length - 8);
  return with_checksum(out);
}

TEST_F(Train, HandEditedCheckpointHeadersAreRefused) {
  ASSERT_EQ(train("--model glam-tiny --steps 1 --batch-tokens 128 --seed 7 --save " + path("h.ckpt")).exit_code, 0);
  const std::string good = read_whole_file(path("h.ckpt"));
  write("same.ckpt", with_header(good, [](json&) {}));
  std::string other_version = good.substr(0, good.size() - 8);
  other_version[8] = 7;  // the u32 format version after the magic
  write("version.ckpt", with_checksum(other_version));
  auto v = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("version.ckpt"));
  EXPECT_EQ(v.exit_code, 2);
  EXPECT_NE(v.err.find("corrupt checkpoint (format version 7)"), std::string::npos) << v.err;
  ASSERT_EQ(train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("same.ckpt")).exit_code, 0)
      << "the re-encoding itself must be valid";
  // A checkpoint from before a key existed (here moe.dispatch) resumes when the run has its default,
  // and is refused when the run sets another value.
  write("older.ckpt", with_header(good, [](json& h) { h["model_config"]["moe"].erase("dispatch"); }));
  auto older = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("older.ckpt"));
  EXPECT_EQ(older.exit_code, 0) << older.err;
  // what the model is called or how it is described does not change what it computes
  write("described.ckpt", with_header(good, [](json& h) { h["model_config"]["description"] = "my copy"; }));
  older = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("described.ckpt"));
  EXPECT_EQ(older.exit_code, 0) << older.err;
  write("other-dispatch.ckpt", with_header(good, [](json& h) { h["model_config"]["moe"]["dispatch"] = "kept"; }));
  older = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("other-dispatch.ckpt"));
  EXPECT_EQ(older.exit_code, 2);
  EXPECT_NE(older.err.find("moe.dispatch = \"kept\" in the checkpoint, \"padded\" in this run"), std::string::npos)
      << older.err;
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& h) { h["tensors"][0]["offset"] = -5; }, "outside the payload"},
      {[](json& h) { h["tensors"][1]["elements"] = int64_t{1} << 40; }, "outside the payload"},
      {[](json& h) { h["step"] = -5; }, "'step' must be a non-negative integer"},
      {[](json& h) { h["step"] = "one"; }, "'step' must be a non-negative integer"},
      {[](json& h) { h.erase("seed"); }, "'seed'"},
      {[](json& h) { h["tensors"] = 5; }, "'tensors' must be an array"},
      {[](json& h) { h["model_config"] = json::array({1}); }, "different model configuration"},
  };
  for (const auto& [edit, expected] : cases) {
    write("edited.ckpt", with_header(good, edit));
    auto r = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("edited.ckpt"));
    EXPECT_EQ(r.exit_code, 2) << expected << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
  }
  // Another configuration: the message names the keys that differ.
  auto r = train("--model glam-tiny --layers 2 --steps 1 --batch-tokens 128 --resume " + path("h.ckpt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("architecture.layers = 4 in the checkpoint, 2 in this run"), std::string::npos) << r.err;
  // The seed comes from the checkpoint; another --seed is refused, the same one accepted.
  r = train("--model glam-tiny --steps 1 --batch-tokens 128 --seed 9 --resume " + path("h.ckpt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("continues a run of seed 7"), std::string::npos) << r.err;
  r = train("--model glam-tiny --steps 1 --batch-tokens 128 --seed 7 --resume " + path("h.ckpt") + " --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json record = json::parse(r.out);
  EXPECT_EQ(record["seed"], 7);
  EXPECT_EQ(record["first_step"], 2);
}

// Option values are checked before anything runs or is written: one line naming the option, the value
// and what was expected.
TEST_F(Train, OptionValuesAreCheckedBeforeAnyWork) {
  fs::create_directories(path("afolder"));
  std::ofstream(path("afile")) << "a file\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--steps 0", "--steps: got '0', expected a whole number of at least 1"},
      {"--batch-tokens -128", "--batch-tokens: got '-128'"},
      {"--threads 0", "--threads: got '0', expected a whole number from 1 to 4096"},
      {"--seed -1", "--seed: got '-1'"},
      {"--seed 18446744073709551616", "--seed: got '18446744073709551616'"},
      {"--steps 2 --warmup 2", "--warmup 2: expected fewer than --steps 2"},
      {"--save " + path("missing/x.ckpt"), "--save " + path("missing/x.ckpt") + ": folder"},
      {"--record " + path("afolder"), "is a folder (expected a file name)"},
      {"--record " + path("afile/r.json"), path("afile") + " is a file, not a folder"},
      {"--record ''", "--record: got '', expected a file name"},
      {"--batch-tokens 140737488355328 --random-tokens", "tokens per rank, expected at most 2147483647"},
      {"--tokenizer " + path("none.model"), "none.model: no such SentencePiece model"},
      {"--text " + path("afolder"), "afolder: is a folder, expected a text file"},
      {"--microbatches 0", "--microbatches: got '0', expected a whole number of at least 1"},
      {"--batch-tokens 256 --microbatches 4",
       "--batch-tokens 256: must be a multiple of seq_len x ranks x --microbatches = 128 x 1 x 4"},
      {"--stages 2", "--stages 2: expected a divisor of the 1 ranks (each stage is a group of ranks / stages ranks); start several with mpirun -np N"},
      {"--stages 0", "--stages: got '0', expected a whole number from 1 to 4096"},
      {"--virtual-stages 2", "--virtual-stages 2 needs pipeline stages (--stages 2 or more)"},
      {"--layers 3 --virtual-stages 2", "--virtual-stages 2 needs pipeline stages"},
  };
  for (const auto& [args, expected] : cases) {
    auto r = train("--model glam-tiny " + std::string(args.find("--batch-tokens") == std::string::npos ? "--batch-tokens 128 " : "") + args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << ": " << r.out;
  }
  EXPECT_FALSE(fs::exists(path("missing")));
  auto r = run_command("glamexec tokenizer --vocab 500 --out " + path("missing/t.model"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  // A vocabulary that does not suit the text says which way it is off, in pieces.
  {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + "\n";
    std::ofstream(path("small.txt")) << text;
  }
  r = run_command("glamexec tokenizer --vocab 20 --out " + path("t20.model") + " --text " + path("small.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a vocabulary of 20 pieces is too small for this text"), std::string::npos) << r.err;
  // 26 letters, 10 digits and the word boundary, and 3 control pieces
  EXPECT_NE(r.err.find("need at least 40"), std::string::npos) << r.err;
  r = run_command("glamexec tokenizer --vocab 100000 --out " + path("t1e5.model") + " --text " + path("small.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("BPE pieces, not 100000: a smaller vocabulary, or more text"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("t20.model")) || fs::exists(path("t1e5.model")));
  // train says the ways round it: GLaM's own vocabulary asks for more text than a small corpus has.
  r = run_command("glamexec train --model glam-0.1b-64e --layers 1 --steps 1 --batch-tokens 1024 --text " +
                  path("small.txt") + " --cache-dir " + path("cache"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("BPE pieces, not 262144"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("or --random-tokens to time the model's 262144-piece vocabulary"), std::string::npos) << r.err;
  // ... and only then: more distinct characters than pieces want fewer characters, not more text.
  {
    std::string text;
    for (char32_t c = 0x4E00; c < 0x4E00 + 5000; ++c) {  // 5,000 CJK ideographs, three UTF-8 bytes each
      text += static_cast<char>(0xE0 | (c >> 12));
      text += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (c & 0x3F));
      if (c % 50 == 0) text += "\n";
    }
    std::ofstream(path("cjk.txt")) << text << "\n";
  }
  r = run_command("glamexec train --model glam-tiny --steps 1 --batch-tokens 1024 --text " + path("cjk.txt") +
                  " --cache-dir " + path("cache"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a vocabulary of 4096 pieces is too small for this text"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("--random-tokens"), std::string::npos) << r.err;
  // Counts are decimal: CLI11 alone would read "0128" as octal (and "09" not at all).
  r = run_command("glamexec describe --model glam-tiny --batch-tokens 0128");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("one rank, 128 tokens"), std::string::npos) << r.out;
  // Past 32-bit token indices, as train (2^56 tokens printed -1790 PiB of buffers).
  r = run_command("glamexec describe --model glam-tiny-8e --batch-tokens 72057594037927936");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("expected a whole number from 1 to 2147483647"), std::string::npos) << r.err;
  // Output that standard output does not take (a full disk) is an error, not a silent success.
  if (std::filesystem::exists("/dev/full")) {
    r = run_command("sh -c 'glamexec describe --model glam-tiny >/dev/full'");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("glamexec: error: could not write the output to standard output"), std::string::npos) << r.err;
  }
  r = run_command("glamexec frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate': expected one of describe train tokenizer calibrate"),
            std::string::npos)
      << r.err;
}

// describe: by default the batch train runs, as text or JSON with the same figures.
TEST_F(Train, DescribeTakesTrainsBatchAndGivesJson) {
  // Without --batch-tokens, the batch train runs by default: 8 sequences (glam-0.1b: 8 x 1,024).
  auto r = run_command("glamexec describe --model glam-0.1b --layers 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("glamexec train, one rank, 8192 tokens"), std::string::npos) << r.out;
  // Counts as the executor holds them, saying that the embedding (262,144 x 768) is in them.
  EXPECT_NE(r.out.find(" activated (the embedding's 201M included)"), std::string::npos) << r.out;
  // JSON, with the same figures.
  r = run_command("glamexec describe --model glam-0.1b --layers 1 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto described = nlohmann::json::parse(r.out);
  EXPECT_EQ(described["batch_tokens"], 8192);
  EXPECT_EQ(described["layers"], 1);
  EXPECT_EQ(described["model_layers"], 12);
  EXPECT_GT(described["train_buffers_bytes"]["fp32"].get<double>(), described["train_buffers_bytes"]["bf16"].get<double>());
  EXPECT_DOUBLE_EQ(described["one_chip_memory_bytes"]["total"].get<double>(),
                   described["one_chip_memory_bytes"]["weights"].get<double>() +
                       described["one_chip_memory_bytes"]["gradients"].get<double>() +
                       described["one_chip_memory_bytes"]["optimizer"].get<double>() +
                       described["one_chip_memory_bytes"]["activations"].get<double>() +
                       described["one_chip_memory_bytes"]["working"].get<double>());
  r = run_command("glamexec describe --model glam-0.1b --batch-tokens 100 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(nlohmann::json::parse(r.out)["train_refuses"].get<std::string>().find("multiple of seq_len 1024"),
            std::string::npos);
  EXPECT_EQ(run_command("glamexec describe --model glam-0.1b --format yaml").exit_code, 2);
}

// glamexec-bench takes the programs' option rules: exit 2 and a line naming the option and value.
TEST_F(Train, BenchChecksItsOptions) {
  const std::string bench = "glamexec-bench --model glam-tiny --threads 1 ";
  for (const auto& [args, message] :
       {std::pair{"--steps 0", "--steps: got '0', expected a whole number of at least 1"},
        std::pair{"--warmup -1", "--warmup: got '-1'"},
        std::pair{"--threads 0", "--threads: got '0'"},
        std::pair{"--batch-tokens 100", "--batch-tokens 100: expected a multiple of glam-tiny's seq_len 128"},
        std::pair{"--format xml", "--format"},
        std::pair{"--bogus", "--bogus"}}) {
    auto r = run_command(bench + args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << ": " << r.err;
  }
  auto r = run_command(bench + "--batch-tokens 128 --steps 1 --warmup 0 --format json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["batch_tokens"].get<int64_t>(), 128);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["matmul_share_of_step"].get<double>(), 0);
  EXPECT_LE(j["matmul_share_of_step"].get<double>(), 1);
}

// A run killed at any moment leaves the previous checkpoint or a complete new one, never a partial file.
TEST_F(Train, KilledRunNeverLeavesAPartialCheckpoint) {
  ASSERT_EQ(train("--model glam-tiny --steps 1 --batch-tokens 128 --save " + path("k.ckpt")).exit_code, 0);
  for (int delay_ms : {150, 300, 450, 600}) {
    std::string cmd = "PATH=\"" GLAM_BIN_DIR ":$PATH\" glamexec train --quiet --cache-dir " + path("cache") +
                      " --model glam-tiny --steps 2 --batch-tokens 128 --save " + path("k.ckpt") +
                      " >/dev/null 2>&1 & pid=$!; sleep " + std::to_string(delay_ms / 1000.0) +
                      "; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; true";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    auto r = train("--model glam-tiny --steps 1 --batch-tokens 128 --resume " + path("k.ckpt"));
    EXPECT_EQ(r.exit_code, 0) << "after a kill at " << delay_ms << " ms: " << r.err;
  }
}

}  // namespace
}  // namespace glam::testing
