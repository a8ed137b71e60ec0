#include "train/checkpoint.h"

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/atomic_output.h"
#include "common/errors.h"

namespace glam::exec {
namespace {

constexpr char kMagic[8] = {'G', 'L', 'A', 'M', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;

uint64_t fnv1a64(const char* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 1099511628211ull;
  return h;
}

template <class V>
void put(std::string& out, const V& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(V));
}

std::string tensor_name(const std::string& kind, const ParamInfo& p, int64_t global_expert) {
  return kind + ":" + p.name + (p.expert() ? "#" + std::to_string(global_expert) : "");
}

// Visits every (tensor name, local pointer, elements) of this rank's params and optimizer state.
template <class T, class F>
void for_each_local_tensor(Transformer<T>& model, AdafactorOptimizer<float>& opt, F f) {
  const auto& params = model.layout().params;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    for (int64_t e = 0; e < p.count; ++e) {
      int64_t g = p.expert() ? p.first_expert + e : -1;
      f(tensor_name("param", p, g), model.params() + p.offset + e * p.matrix_elements(), p.matrix_elements());
      f(tensor_name("state", p, g), opt.state() + opt.state_offset(i, e), opt.state_size(i));
    }
  }
}

}  // namespace

template <class T>
void save_checkpoint(const std::filesystem::path& path, Transformer<T>& model, AdafactorOptimizer<float>& opt,
                     const CheckpointState& state, Communicator& comm) {
  // Every rank's local tensors by name, gathered: ranks hold equal-sized shares.
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  std::vector<float> local;
  std::vector<bool> replicated;
  for_each_local_tensor(model, opt, [&](const std::string& name, float* data, int64_t n) {
    names.push_back(name);
    sizes.push_back(n);
    replicated.push_back(name.find('#') == std::string::npos);
    local.insert(local.end(), data, data + n);
  });
  const int ranks = comm.size();
  std::vector<float> all(local.size() * static_cast<size_t>(ranks));
  comm.allgather(local.data(), all.data(), static_cast<int64_t>(local.size() * sizeof(float)));
  if (comm.rank() != 0) {
    comm.barrier();
    return;
  }
  // Tensor table in a rank-independent order: replicated tensors, then experts by global index.
  std::map<std::string, std::pair<const float*, int64_t>> tensors;
  for (int r = 0; r < ranks; ++r) {
    const float* base = all.data() + local.size() * static_cast<size_t>(r);
    int64_t off = 0;
    const ModelLayout& lay = model.layout();
    for (size_t i = 0; i < names.size(); ++i) {
      std::string name = names[i];
      if (!replicated[i]) {
        // rename local expert index to rank r's global expert
        size_t hash = name.find('#');
        int64_t local_e = std::stoll(name.substr(hash + 1)) - lay.first_expert;
        name = name.substr(0, hash + 1) + std::to_string(r * lay.local_experts + local_e);
      }
      if (replicated[i] && r > 0) {
        off += sizes[i];
        continue;
      }
      tensors[name] = {base + off, sizes[i]};
      off += sizes[i];
    }
  }
  nlohmann::json header;
  header["format"] = "glam-checkpoint/1";
  header["model_config"] = model_to_json(model.config());
  header["step"] = state.step;
  header["seed"] = state.seed;
  nlohmann::json table = nlohmann::json::array();
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    table.push_back({{"name", name}, {"offset", offset}, {"elements", t.second}});
    offset += t.second;
  }
  header["tensors"] = table;
  std::string head = header.dump();
  std::string out(kMagic, 8);
  put(out, kVersion);
  put(out, uint32_t{0});
  put(out, static_cast<uint64_t>(head.size()));
  out += head;
  for (const auto& [name, t] : tensors) out.append(reinterpret_cast<const char*>(t.first), static_cast<size_t>(t.second) * sizeof(float));
  put(out, fnv1a64(out.data(), out.size()));
  write_file_atomically(path, out);
  comm.barrier();
}

template <class T>
CheckpointState load_checkpoint(const std::filesystem::path& path, Transformer<T>& model,
                                AdafactorOptimizer<float>& opt) {
  const std::string where = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(where + ": cannot read the checkpoint");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  auto corrupt = [&](const std::string& why) { return UsageError(where + ": corrupt checkpoint (" + why + ")"); };
  const size_t fixed = 8 + 4 + 4 + 8;
  if (data.size() < fixed + 8 || std::memcmp(data.data(), kMagic, 8) != 0) throw corrupt("not a glam checkpoint");
  uint64_t stored = 0;
  std::memcpy(&stored, data.data() + data.size() - 8, 8);
  if (stored != fnv1a64(data.data(), data.size() - 8)) throw corrupt("checksum mismatch: truncated or altered");
  uint32_t version = 0;
  std::memcpy(&version, data.data() + 8, 4);
  if (version != kVersion) throw corrupt("format version " + std::to_string(version));
  uint64_t head_len = 0;
  std::memcpy(&head_len, data.data() + 16, 8);
  if (fixed + head_len + 8 > data.size()) throw corrupt("header length");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.substr(fixed, head_len));
  } catch (const nlohmann::json::exception&) {
    throw corrupt("header is not JSON");
  }
  if (header.value("model_config", nlohmann::json()) != model_to_json(model.config()))
    throw UsageError(where + ": checkpoint was written for a different model configuration (" +
                     header["model_config"].value("id", std::string("?")) + "); expected " + model.config().id);
  const char* payload = data.data() + fixed + head_len;
  const int64_t payload_floats = static_cast<int64_t>((data.size() - 8 - fixed - head_len) / sizeof(float));
  std::map<std::string, std::pair<int64_t, int64_t>> table;
  for (const auto& t : header["tensors"]) table[t["name"].get<std::string>()] = {t["offset"].get<int64_t>(), t["elements"].get<int64_t>()};
  for_each_local_tensor(model, opt, [&](const std::string& name, float* dst, int64_t n) {
    auto it = table.find(name);
    if (it == table.end()) throw corrupt("tensor " + name + " missing");
    if (it->second.second != n || it->second.first + n > payload_floats) throw corrupt("tensor " + name + " has the wrong size");
    std::memcpy(dst, payload + it->second.first * static_cast<int64_t>(sizeof(float)), static_cast<size_t>(n) * sizeof(float));
  });
  CheckpointState s;
  s.step = header["step"].get<int64_t>();
  s.seed = header["seed"].get<uint64_t>();
  return s;
}

#define GLAM_INSTANTIATE(T)                                                                                      \
  template void save_checkpoint<T>(const std::filesystem::path&, Transformer<T>&, AdafactorOptimizer<float>&,     \
                                   const CheckpointState&, Communicator&);                                        \
  template CheckpointState load_checkpoint<T>(const std::filesystem::path&, Transformer<T>&,                      \
                                              AdafactorOptimizer<float>&);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(kernels::bf16)

}  // namespace glam::exec
