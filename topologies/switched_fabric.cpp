#include "switched_fabric.h"

#include <cstdint>
#include <stdexcept>

namespace glam {
namespace {

// Level arithmetic of the XGFT. A level-i element is (U, B): U numbers the level-i subtree
// (position / M_i), B in [0, W_i) picks one of the parallel switches serving it.
struct Levels {
  int h = 0;
  std::vector<int> m, w;      // 1-based; w[1] = 1
  std::vector<long> M, W;     // M[i] = m1*..*mi, W[i] = w1*..*wi; M[0] = W[0] = 1
  std::vector<int> count;     // elements per level; count[0] = chips
  std::vector<int> link_base; // first link id of the cables between level i-1 and i

  Levels(const SwitchedShape& s) : h(static_cast<int>(s.down.size())) {
    m.assign(h + 1, 1);
    w.assign(h + 1, 1);
    M.assign(h + 1, 1);
    W.assign(h + 1, 1);
    count.assign(h + 1, s.chips);
    link_base.assign(h + 1, 0);
    for (int i = 1; i <= h; ++i) {
      m[i] = s.down[i - 1];
      w[i] = i == 1 ? 1 : s.up[i - 2];
      M[i] = M[i - 1] * m[i];
      W[i] = W[i - 1] * w[i];
      count[i] = static_cast<int>(s.chips / M[i] * W[i]);
    }
  }
  // The link between level-(i-1) element e and its b-th parent; +1 for the downward direction.
  int cable(int i, long e, int b) const { return link_base[i] + static_cast<int>(2 * (e * w[i] + b)); }
};

class SwitchedFabric final : public Fabric {
 public:
  SwitchedFabric(Levels lv, std::vector<int> pos, int cpn) : lv_(std::move(lv)), pos_(std::move(pos)), cpn_(cpn) {}

  void append_route(int src, int dst, std::vector<int>& out) const override {
    if (src == dst) return;
    if (cpn_ > 1 && src / cpn_ == dst / cpn_) {  // same node: through its NVSwitch
      out.push_back(2 * src);
      out.push_back(2 * dst + 1);
      return;
    }
    const long ps = pos_[src], pd = pos_[dst];
    const int top = top_level(ps, pd);
    // Up: at level i the parent is chosen by D-mod-k (destination digits), a deterministic ECMP
    // spread under which each top-down path serves few destinations.
    long B = 0;
    for (int i = 1; i <= top; ++i) {
      const int b = static_cast<int>((pd / lv_.W[i - 1]) % lv_.w[i]);
      out.push_back(lv_.cable(i, (ps / lv_.M[i - 1]) * lv_.W[i - 1] + B, b));
      B += lv_.W[i - 1] * b;
    }
    // Down: from the common ancestor the path to a destination is unique.
    for (int i = top; i >= 1; --i) {
      const int b = static_cast<int>((B / lv_.W[i - 1]) % lv_.w[i]);
      B %= lv_.W[i - 1];
      out.push_back(lv_.cable(i, (pd / lv_.M[i - 1]) * lv_.W[i - 1] + B, b) + 1);
    }
  }

  int hops(int src, int dst) const override {
    if (src == dst) return 0;
    if (cpn_ > 1 && src / cpn_ == dst / cpn_) return 2;
    return 2 * top_level(pos_[src], pos_[dst]);
  }

 private:
  int top_level(long ps, long pd) const {
    for (int i = 1; i <= lv_.h; ++i)
      if (ps / lv_.M[i] == pd / lv_.M[i]) return i;
    throw std::logic_error("fat-tree without a common root");  // shapes are validated on load
  }

  Levels lv_;
  std::vector<int> pos_;  // chip -> position among the fat-tree's NICs
  int cpn_;
};

// Where each chip's NIC sits among the leaves' ports: position = leaf * m1 + port.
std::vector<int> nic_positions(const SwitchedShape& s) {
  std::vector<int> pos(s.chips);
  const int cpn = s.chips_per_node;
  const int m1 = s.down.empty() ? 1 : s.down[0];
  for (int c = 0; c < s.chips; ++c) {
    if (!s.rail_optimised || cpn == 1) {
      pos[c] = c;
      continue;
    }
    const int node = c / cpn, rail = c % cpn, group = node / m1;
    pos[c] = (group * cpn + rail) * m1 + node % m1;
  }
  return pos;
}

}  // namespace

std::vector<int> fat_tree_switches_per_level(const SwitchedShape& shape) {
  Levels lv(shape);
  return std::vector<int>(lv.count.begin() + 1, lv.count.end());
}

int64_t fat_tree_physical_switches(const SwitchedShape& shape, int64_t ports) {
  const std::vector<int> vertices = fat_tree_switches_per_level(shape);
  int64_t physical = 0;
  for (size_t i = 0; i < vertices.size(); ++i) {
    const int64_t in_use = shape.down[i] + (i < shape.up.size() ? shape.up[i] : 0);
    physical += (vertices[i] * in_use + ports - 1) / ports;
  }
  return physical;
}

FabricBuild build_switched_fabric(const SwitchedShape& s, const SwitchedLinks& spec) {
  FabricBuild b;
  const int chips = s.chips, cpn = s.chips_per_node, nodes = chips / cpn;
  b.vertices.assign(chips, VertexKind::kChip);
  // Node switches: links 2c (chip up) and 2c+1 (down to chip), so same-node routes need no table.
  if (cpn > 1) {
    b.vertices.insert(b.vertices.end(), nodes, VertexKind::kNodeSwitch);
    for (int c = 0; c < chips; ++c) {
      const int sw = chips + c / cpn;
      add_link(b, c, sw, spec.nvlink, spec.nvswitch_latency_s);
      add_link(b, sw, c, spec.nvlink);
    }
  }
  Levels lv(s);
  std::vector<int> pos = nic_positions(s);
  std::vector<int> chip_at(chips);
  for (int c = 0; c < chips; ++c) chip_at[pos[c]] = c;
  // Fat-tree switch vertices, level by level.
  std::vector<int> vertex_base(lv.h + 1, 0);
  for (int i = 1; i <= lv.h; ++i) {
    vertex_base[i] = static_cast<int>(b.vertices.size());
    b.vertices.insert(b.vertices.end(), lv.count[i], VertexKind::kFabricSwitch);
  }
  auto vertex = [&](int level, long e) { return level == 0 ? chip_at[e] : vertex_base[level] + static_cast<int>(e); };
  for (int i = 1; i <= lv.h; ++i) {
    lv.link_base[i] = static_cast<int>(b.links.size());
    for (long e = 0; e < lv.count[i - 1]; ++e) {
      const long U = e / lv.W[i - 1], B = e % lv.W[i - 1];
      for (int bi = 0; bi < lv.w[i]; ++bi) {
        const long parent = (U / lv.m[i]) * lv.W[i] + B + lv.W[i - 1] * bi;
        add_link(b, vertex(i - 1, e), vertex(i, parent), spec.infiniband, spec.ib_switch_latency_s);
        add_link(b, vertex(i, parent), vertex(i - 1, e), spec.infiniband, i > 1 ? spec.ib_switch_latency_s : 0.0);
      }
    }
  }
  b.fabric = std::make_shared<SwitchedFabric>(std::move(lv), std::move(pos), cpn);
  return b;
}

}  // namespace glam
