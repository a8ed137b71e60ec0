#include "torus.h"

namespace glam {
namespace {

// Dimension-order routing: dimension 0 first, each dimension the short way round. When both ways
// are equally long (half-way round an even ring) sources at even coordinates go up and odd ones go
// down, so that such traffic loads both directions of the ring equally.
class TorusFabric final : public Fabric {
 public:
  TorusFabric(std::vector<int> dims, std::vector<int> link_of) : dims_(std::move(dims)), link_of_(std::move(link_of)) {
    int s = 1;
    for (int d : dims_) {
      stride_.push_back(s);
      s *= d;
    }
  }

  void append_route(int src, int dst, std::vector<int>& out) const override {
    const int nd = static_cast<int>(dims_.size());
    int cur = src;
    for (int i = 0; i < nd; ++i) {
      const int n = dims_[i];
      const int xs = (src / stride_[i]) % n, xd = (dst / stride_[i]) % n;
      if (xs == xd) continue;
      const int up = (xd - xs + n) % n, down = n - up;
      const bool go_up = n == 2 || up < down || (up == down && xs % 2 == 0);
      const int steps = go_up ? up : down;
      int x = xs;
      for (int k = 0; k < steps; ++k) {
        out.push_back(link_of_[(cur * nd + i) * 2 + (go_up ? 0 : 1)]);
        const int nx = go_up ? (x + 1) % n : (x + n - 1) % n;
        cur += (nx - x) * stride_[i];
        x = nx;
      }
    }
  }

  int hops(int src, int dst) const override {
    int h = 0;
    for (size_t i = 0; i < dims_.size(); ++i) {
      const int n = dims_[i];
      const int up = ((dst / stride_[i]) % n - (src / stride_[i]) % n + n) % n;
      h += std::min(up, n - up);
    }
    return h;
  }

 private:
  std::vector<int> dims_, stride_;
  std::vector<int> link_of_;  // [(chip * dims + dim) * 2 + (0 up, 1 down)] -> link id, -1 when none
};

}  // namespace

std::vector<int> torus_coords_of(const std::vector<int>& dims, int chip) {
  std::vector<int> c;
  for (int d : dims) {
    c.push_back(chip % d);
    chip /= d;
  }
  return c;
}

FabricBuild build_torus(const std::vector<int>& dims, const LinkSpec& ici) {
  int chips = 1;
  for (int d : dims) chips *= d;
  const int nd = static_cast<int>(dims.size());
  FabricBuild b;
  b.vertices.assign(chips, VertexKind::kChip);
  std::vector<int> link_of(static_cast<size_t>(chips) * nd * 2, -1);
  for (int c = 0; c < chips; ++c) {
    int stride = 1;
    for (int i = 0; i < nd; ++i) {
      const int n = dims[i], x = (c / stride) % n;
      if (n >= 2) link_of[(c * nd + i) * 2] = add_link(b, c, c + ((x + 1) % n - x) * stride, ici);
      if (n >= 3) link_of[(c * nd + i) * 2 + 1] = add_link(b, c, c + ((x + n - 1) % n - x) * stride, ici);
      stride *= n;
    }
  }
  b.fabric = std::make_shared<TorusFabric>(dims, std::move(link_of));
  return b;
}

}  // namespace glam
