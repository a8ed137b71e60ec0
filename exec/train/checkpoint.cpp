#include "train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/atomic_output.h"
#include "common/errors.h"
#include "core/device_buffer.h"

namespace glam::exec {
namespace {

constexpr char kMagic[8] = {'G', 'L', 'A', 'M', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 1;

constexpr uint64_t kFnvBasis = 1469598103934665603ull;

// FNV-1a (64-bit) of `n` more bytes, continuing from the hash `h` of the bytes before them.
uint64_t fnv1a64(const char* data, size_t n, uint64_t h = kFnvBasis) {
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

// One tensor of this rank: a weight matrix or its optimizer state, whole or the rank's slice.
struct LocalTensor {
  std::string name;
  float* data = nullptr;
  int64_t elements = 0;
  const ParamInfo* param = nullptr;
  bool state = false;  // Adafactor's state of `param` (sliced: the factors of the slice's rows and columns)
  int64_t whole_elements() const {
    if (!param->sliced()) return elements;
    return state ? param->full_rows() + param->full_cols() : param->full_rows() * param->full_cols();
  }
};

// The weights and Adafactor's state in host memory, where the checkpoint code reads and writes them:
// each buffer itself where it is host memory; a host copy of it where it is a GPU's (written back by
// store()).
template <class T>
class HostTensors {
 public:
  HostTensors(Transformer<T>& model, AdafactorOptimizer<float>& opt)
      : params_(model.params(), model.param_elements(), model.memory_backend()),
        state_(opt.state(), opt.state_elements(), opt.state_backend()) {}
  float* params() const { return params_.host; }
  float* state() const { return state_.host; }
  void store() {
    params_.store();
    state_.store();
  }

 private:
  struct Staged {
    Staged(float* data, int64_t n, kernels::Backend backend) : device(data), elements(n) {
      if (backend == kernels::Backend::kCpu) {
        host = data;
        return;
      }
      copy.resize(static_cast<size_t>(n));
      copy_to_host(data, copy.data(), n);
      host = copy.data();
    }
    void store() {
      if (host != device) copy_to_device(copy.data(), device, elements);
    }
    float* device;
    int64_t elements;
    float* host = nullptr;
    std::vector<float> copy;
  };
  Staged params_, state_;
};

// Visits every tensor of this rank's params and optimizer state (in `host`).
template <class T, class F>
void for_each_local_tensor(Transformer<T>& model, AdafactorOptimizer<float>& opt, const HostTensors<T>& host, F f) {
  const auto& params = model.layout().params;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    for (int64_t e = 0; e < p.count; ++e) {
      int64_t g = p.expert() ? p.first_expert + e : -1;
      f(LocalTensor{tensor_name("param", p, g), host.params() + p.offset + e * p.matrix_elements(), p.matrix_elements(),
                    &p, false});
      f(LocalTensor{tensor_name("state", p, g), host.state() + opt.state_offset(i, e), opt.state_size(i), &p, true});
    }
  }
}

// A sliced matrix's factored state: the row factors of the slice's rows, then the column factors of its
// columns. The dimension that is not split is whole on every slice (the slices keep the same values).
// `f(slice_offset, whole_offset, count)` visits its two parts.
template <class F>
void for_each_state_part(const ParamInfo& p, F f) {
  const bool rows = p.slice_axis == SliceAxis::kRows;
  f(0, rows ? p.slice * p.rows : 0, p.rows);
  f(p.rows, p.full_rows() + (rows ? 0 : p.slice * p.cols), p.cols);
}

// Appends the whole tensor of a local one to `out` as float32 bytes (null: only take part). A sliced
// tensor's slices are gathered over `tensor` (the tensor-parallel ranks: collective) and assembled.
void append_whole_tensor(const LocalTensor& t, Communicator* tensor, std::string* out) {
  auto append = [&](const float* values, int64_t n) {
    out->append(reinterpret_cast<const char*>(values), static_cast<size_t>(n) * sizeof(float));
  };
  if (!t.param->sliced()) {
    if (out) append(t.data, t.elements);
    return;
  }
  if (!tensor || tensor->size() != t.param->slices)
    throw std::logic_error("save_checkpoint: sliced tensor " + t.name + " needs the tensor-parallel communicator");
  std::vector<float> parts(static_cast<size_t>(t.elements * t.param->slices));
  tensor->allgather(t.data, parts.data(), t.elements * static_cast<int64_t>(sizeof(float)));
  if (!out) return;
  std::vector<float> whole(static_cast<size_t>(t.whole_elements()));
  for (int64_t s = 0; s < t.param->slices; ++s) {
    ParamInfo p = *t.param;
    p.slice = s;
    const float* part = parts.data() + s * t.elements;
    if (!t.state) put_slice(p, part, whole.data());
    else for_each_state_part(p, [&](int64_t from, int64_t to, int64_t n) { std::copy_n(part + from, n, whole.data() + to); });
  }
  append(whole.data(), t.whole_elements());
}

// The rank's share of a whole tensor, read from `in` at the tensor's first byte: straight into place
// when it is not sliced, else the whole tensor, then the share taken from it.
void take_share(const LocalTensor& t, std::istream& in) {
  auto read = [&](float* values, int64_t n) {
    in.read(reinterpret_cast<char*>(values), static_cast<std::streamsize>(n * static_cast<int64_t>(sizeof(float))));
    return static_cast<bool>(in);
  };
  if (!t.param->sliced()) {
    if (!read(t.data, t.elements)) throw std::runtime_error("cannot read tensor " + t.name);
    return;
  }
  std::vector<float> whole(static_cast<size_t>(t.whole_elements()));
  if (!read(whole.data(), t.whole_elements())) throw std::runtime_error("cannot read tensor " + t.name);
  if (!t.state) take_slice(*t.param, whole.data(), t.data);
  else for_each_state_part(*t.param, [&](int64_t to, int64_t from, int64_t n) { std::copy_n(whole.data() + from, n, t.data + to); });
}

// The whole tensors being saved, by name: views of their float32 bytes in `buffers`, which hold every
// rank's share as it arrived (a deque: adding a buffer moves none of the others).
struct SavedTensors {
  std::deque<std::string> buffers;
  std::map<std::string, std::string_view> views;
};

// This stage's tensors, on its rank 0 (empty elsewhere): every rank's tensors (sliced ones made whole
// over `tensor` first) gathered over `comm` (the ranks of a stage hold equal-sized shares), experts
// renamed by their global index. Only rank 0 holds the stage's tensors, once.
template <class T>
SavedTensors gather_stage_tensors(Transformer<T>& model, AdafactorOptimizer<float>& opt, Communicator& comm,
                                  Communicator* tensor) {
  std::vector<std::string> names;
  std::vector<size_t> sizes;  // bytes
  std::string local;
  const bool first_slice = !tensor || tensor->rank() == 0;
  {
    const HostTensors<T> host(model, opt);
    if (first_slice) {  // one allocation: growing by doubling would hold up to 1.5 shares at once
      size_t bytes = 0;
      for_each_local_tensor(model, opt, host, [&](const LocalTensor& t) { bytes += static_cast<size_t>(t.whole_elements()); });
      local.reserve(bytes * sizeof(float));
    }
    for_each_local_tensor(model, opt, host, [&](const LocalTensor& t) {
      const size_t before = local.size();
      append_whole_tensor(t, tensor, first_slice ? &local : nullptr);
      if (!first_slice) return;
      names.push_back(t.name);
      sizes.push_back(local.size() - before);
    });
  }
  // The other slices' stage groups hold the same tensors: only slice 0's gathers them.
  SavedTensors saved;
  if (!first_slice) return saved;
  const size_t share = local.size();
  for (std::string& part : comm.gather_at_root(std::move(local))) saved.buffers.push_back(std::move(part));
  if (comm.rank() != 0) return saved;
  const ModelLayout& lay = model.layout();
  for (size_t r = 0; r < saved.buffers.size(); ++r) {
    const std::string& part = saved.buffers[r];
    if (part.size() != share) throw std::logic_error("save_checkpoint: the ranks of a stage hold shares of different sizes");
    size_t off = 0;
    for (size_t i = 0; i < names.size(); off += sizes[i], ++i) {
      std::string name = names[i];
      const size_t hash = name.find('#');
      if (hash == std::string::npos && r > 0) continue;  // replicated: rank 0's copy
      if (hash != std::string::npos) {  // rank r's local expert, by its global index
        const int64_t local_e = std::stoll(name.substr(hash + 1)) - lay.first_expert;
        name = name.substr(0, hash + 1) + std::to_string(static_cast<int64_t>(r) * lay.local_experts + local_e);
      }
      saved.views[name] = std::string_view(part.data() + off, sizes[i]);
    }
  }
  return saved;
}

// Pipeline stages: rank 0 of every later stage (`sends`) sends its stage's tensors to world rank 0 (a
// table of names and sizes, then their floats), which adds them to its own (the tied embedding's
// second copy, equal to the first, is kept once).
void gather_stages(SavedTensors& saved, bool sends, Communicator& world) {
  std::string packed;
  if (world.rank() != 0 && sends) {
    nlohmann::json table = nlohmann::json::array();
    for (const auto& [name, bytes] : saved.views) table.push_back({{"name", name}, {"elements", bytes.size() / sizeof(float)}});
    const std::string head = table.dump();
    put(packed, static_cast<uint64_t>(head.size()));
    packed += head;
    for (const auto& [name, bytes] : saved.views) packed.append(bytes);
    saved = {};  // sent: the stage's copy is no longer needed here
  }
  for (std::string& p : world.gather_at_root(std::move(packed))) {
    if (world.rank() != 0 || p.empty()) continue;  // (rank 0's own, and ranks that are not a stage's rank 0)
    const std::string& stage = saved.buffers.emplace_back(std::move(p));
    uint64_t head_bytes = 0;
    std::memcpy(&head_bytes, stage.data(), sizeof head_bytes);
    const char* data = stage.data() + sizeof head_bytes + head_bytes;
    for (const auto& t : nlohmann::json::parse(stage.substr(sizeof head_bytes, head_bytes))) {
      const size_t bytes = t["elements"].get<size_t>() * sizeof(float);
      saved.views.emplace(t["name"].get<std::string>(), std::string_view(data, bytes));
      data += bytes;
    }
  }
}

// The file: header and tensors in a rank-independent order (by name), streamed to the file with its
// checksum computed on the way (no second copy of the tensors).
void write_checkpoint(const std::filesystem::path& path, const SavedTensors& saved, const ModelConfig& m,
                      const CheckpointState& state) {
  nlohmann::json header;
  header["format"] = "glam-checkpoint/1";
  header["model_config"] = model_to_json(m);
  header["step"] = state.step;
  header["seed"] = state.seed;
  header["sequences"] = state.sequences;
  header["data"] = state.data;
  nlohmann::json table = nlohmann::json::array();
  int64_t offset = 0;
  for (const auto& [name, bytes] : saved.views) {
    const int64_t n = static_cast<int64_t>(bytes.size() / sizeof(float));
    table.push_back({{"name", name}, {"offset", offset}, {"elements", n}});
    offset += n;
  }
  header["tensors"] = table;
  const std::string head = header.dump();
  std::string prefix(kMagic, 8);
  put(prefix, kVersion);
  put(prefix, uint32_t{0});
  put(prefix, static_cast<uint64_t>(head.size()));
  prefix += head;
  write_file_atomically(path, [&](const ByteSink& write) {
    uint64_t hash = kFnvBasis;
    auto out = [&](std::string_view bytes) {
      hash = fnv1a64(bytes.data(), bytes.size(), hash);
      write(bytes.data(), bytes.size());
    };
    out(prefix);
    for (const auto& [name, bytes] : saved.views) out(bytes);
    write(&hash, sizeof hash);
  });
}

}  // namespace

template <class T>
void save_checkpoint(const std::filesystem::path& path, Transformer<T>& model, AdafactorOptimizer<float>& opt,
                     const CheckpointState& state, Communicator& comm, Communicator* world, Communicator* tensor) {
  SavedTensors saved = gather_stage_tensors(model, opt, comm, tensor);
  Communicator& all = world ? *world : comm;
  // Each stage's rank 0 of slice 0 holds the stage's whole tensors.
  const bool stage_root = comm.rank() == 0 && (!tensor || tensor->rank() == 0);
  if (world && world->size() > comm.size()) gather_stages(saved, stage_root, *world);
  // World rank 0 writes; its failure (a full disk, a folder that vanished) reaches every rank rather
  // than leaving them waiting.
  std::string error;
  if (all.rank() == 0) {
    try {
      write_checkpoint(path, saved, model.config(), state);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (all.any(!error.empty()))
    throw std::runtime_error(all.rank() == 0 ? error : "rank 0 could not write the checkpoint " + path.string());
}

namespace {

constexpr size_t kFixedBytes = 8 + 4 + 4 + 8;  // magic, version, reserved, header length

// The first keys a run would compute differently from the checkpoint's configuration, with both
// values: "architecture.layers = 2 in the checkpoint, 4 in this run".
std::string config_differences(const std::vector<ConfigDifference>& diffs) {
  auto side = [](const std::string& value) { return value.empty() ? std::string("(missing)") : value; };
  std::string out;
  for (size_t i = 0; i < diffs.size() && i < 3; ++i)
    out += (i ? "; " : "") + diffs[i].key + " = " + side(diffs[i].saved) + " in the checkpoint, " + side(diffs[i].now) +
           " in this run";
  if (diffs.size() > 3) out += "; and " + std::to_string(diffs.size() - 3) + " more";
  return out;
}

struct ParsedHeader {
  CheckpointState state;
  std::map<std::string, std::pair<int64_t, int64_t>> tensors;  // name -> (offset, elements) in floats
};

// Checks every field the loader uses, so that a file with a valid checksum but a hand-made header is
// refused rather than read out of bounds.
ParsedHeader parse_header(const std::string& head, int64_t payload_floats, const ModelConfig& m, const std::string& where) {
  auto corrupt = [&](const std::string& why) { return UsageError(where + ": corrupt checkpoint (" + why + ")"); };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(head);
  } catch (const nlohmann::json::exception&) {
    throw corrupt("header is not JSON");
  }
  if (!header.is_object()) throw corrupt("header is not a JSON object");
  // (keys added since the checkpoint was written count as their defaults; a description, source or
  // printed figure may differ)
  const auto saved = header.find("model_config");
  if (saved == header.end() || !saved->is_object())
    throw UsageError(where + ": checkpoint was written for a different model configuration than " + m.id +
                     " as this run has it (--model, --layers): no model configuration in the checkpoint");
  if (const auto diffs = computed_differences(*saved, model_to_json(m)); !diffs.empty())
    throw UsageError(where + ": checkpoint was written for a different model configuration than " + m.id +
                     " as this run has it (--model, --layers): " + config_differences(diffs));
  ParsedHeader out;
  const auto step = header.find("step");
  if (step == header.end() || !step->is_number_integer() || step->get<int64_t>() < 0)
    throw corrupt("'step' must be a non-negative integer");
  out.state.step = step->get<int64_t>();
  const auto seed = header.find("seed");
  if (seed == header.end() || !seed->is_number_unsigned()) throw corrupt("'seed' must be a non-negative integer");
  out.state.seed = seed->get<uint64_t>();
  if (const auto sequences = header.find("sequences"); sequences != header.end()) {
    if (!sequences->is_number_integer() || sequences->get<int64_t>() < -1)
      throw corrupt("'sequences' must be an integer of at least -1");
    out.state.sequences = sequences->get<int64_t>();
  }
  if (const auto data = header.find("data"); data != header.end()) {
    if (!data->is_string()) throw corrupt("'data' must be a string");
    out.state.data = data->get<std::string>();
  }
  const auto tensors = header.find("tensors");
  if (tensors == header.end() || !tensors->is_array()) throw corrupt("'tensors' must be an array");
  for (const auto& t : *tensors) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("offset") ||
        !t["offset"].is_number_integer() || !t.contains("elements") || !t["elements"].is_number_integer())
      throw corrupt("every tensor needs a string 'name' and integer 'offset' and 'elements'");
    const int64_t offset = t["offset"].get<int64_t>(), elements = t["elements"].get<int64_t>();
    if (offset < 0 || elements < 0 || offset > payload_floats || elements > payload_floats - offset)
      throw corrupt("tensor " + t["name"].get<std::string>() + " lies outside the payload");
    out.tensors[t["name"].get<std::string>()] = {offset, elements};
  }
  return out;
}

std::string read_bytes(std::ifstream& in, size_t n) {
  std::string s(n, '\0');
  in.read(s.data(), static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

}  // namespace

namespace {

// An open checkpoint whose fixed fields and header were read and checked against the run's model.
struct OpenCheckpoint {
  std::ifstream in;
  ParsedHeader header;
  uint64_t payload_offset = 0;  // bytes from the start of the file
};

// Opens `path` and reads its fixed fields and header; with `verify`, first checks the checksum over the
// whole file, read in blocks (one block in memory, not the file). UsageError naming the file.
OpenCheckpoint open_checkpoint(const std::filesystem::path& path, const ModelConfig& m, bool verify) {
  const std::string where = path.string();
  auto corrupt = [&](const std::string& why) { return UsageError(where + ": corrupt checkpoint (" + why + ")"); };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw UsageError(where + ": is a folder (expected a checkpoint file)");
  if (!std::filesystem::is_regular_file(path, ec)) throw UsageError(where + ": no such checkpoint file");
  const uint64_t size = std::filesystem::file_size(path, ec);
  OpenCheckpoint c;
  c.in.open(path, std::ios::binary);
  if (!c.in || ec) throw UsageError(where + ": cannot read the checkpoint");
  const std::string fixed = read_bytes(c.in, kFixedBytes);
  if (fixed.size() < kFixedBytes || size < kFixedBytes + 8 || std::memcmp(fixed.data(), kMagic, 8) != 0)
    throw corrupt("not a glam checkpoint");
  if (verify) {
    uint64_t hash = fnv1a64(fixed.data(), fixed.size()), left = size - 8 - kFixedBytes;
    std::vector<char> block(std::min<uint64_t>(left, uint64_t{64} << 20));
    while (left > 0) {
      const auto n = static_cast<std::streamsize>(std::min<uint64_t>(left, block.size()));
      if (!c.in.read(block.data(), n)) throw corrupt("checksum mismatch: truncated or altered");
      hash = fnv1a64(block.data(), static_cast<size_t>(n), hash);
      left -= static_cast<uint64_t>(n);
    }
    uint64_t stored = 0;
    if (!c.in.read(reinterpret_cast<char*>(&stored), sizeof stored) || stored != hash)
      throw corrupt("checksum mismatch: truncated or altered");
    c.in.seekg(static_cast<std::streamoff>(kFixedBytes));
  }
  uint32_t version = 0;
  std::memcpy(&version, fixed.data() + 8, 4);
  if (version != kVersion) throw corrupt("format version " + std::to_string(version));
  uint64_t head_len = 0;
  std::memcpy(&head_len, fixed.data() + 16, 8);
  // A truncated payload shows here as tensors outside it (unverified: check_checkpoint's early look).
  if (head_len > size - kFixedBytes - 8) throw corrupt("header length");
  const int64_t payload_floats = static_cast<int64_t>((size - 8 - kFixedBytes - head_len) / sizeof(float));
  c.header = parse_header(read_bytes(c.in, head_len), payload_floats, m, where);
  c.payload_offset = kFixedBytes + head_len;
  return c;
}

}  // namespace

CheckpointState check_checkpoint(const std::filesystem::path& path, const ModelConfig& m, bool verify_checksum) {
  return open_checkpoint(path, m, verify_checksum).header.state;
}

template <class T>
CheckpointState load_checkpoint(const std::filesystem::path& path, Transformer<T>& model,
                                AdafactorOptimizer<float>& opt) {
  const std::string where = path.string();
  auto corrupt = [&](const std::string& why) { return UsageError(where + ": corrupt checkpoint (" + why + ")"); };
  OpenCheckpoint c = open_checkpoint(path, model.config(), true);
  HostTensors<T> host(model, opt);
  for_each_local_tensor(model, opt, host, [&](const LocalTensor& t) {
    auto it = c.header.tensors.find(t.name);
    if (it == c.header.tensors.end()) throw corrupt("tensor " + t.name + " missing");
    if (it->second.second != t.whole_elements()) throw corrupt("tensor " + t.name + " has the wrong size");
    c.in.seekg(static_cast<std::streamoff>(c.payload_offset + static_cast<uint64_t>(it->second.first) * sizeof(float)));
    try {
      take_share(t, c.in);
    } catch (const std::runtime_error& e) {
      throw UsageError(where + ": " + e.what());
    }
  });
  host.store();
  return c.header.state;
}

#define GLAM_INSTANTIATE(T)                                                                                      \
  template void save_checkpoint<T>(const std::filesystem::path&, Transformer<T>&, AdafactorOptimizer<float>&,     \
                                   const CheckpointState&, Communicator&, Communicator*, Communicator*);          \
  template CheckpointState load_checkpoint<T>(const std::filesystem::path&, Transformer<T>&,                      \
                                              AdafactorOptimizer<float>&);
GLAM_INSTANTIATE(float)
GLAM_INSTANTIATE(kernels::bf16)

}  // namespace glam::exec
