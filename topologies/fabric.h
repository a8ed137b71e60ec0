#pragma once
// The wiring of one topology kind: the links it creates and the routes over them. One
// implementation per kind (torus.h, switched_fabric.h); the Cluster holds one behind this interface.
#include <memory>
#include <vector>

#include "cluster.h"

namespace glam {

class Fabric {
 public:
  virtual ~Fabric() = default;
  // Appends the directed link ids from src to dst (chips), in order; nothing when src == dst.
  virtual void append_route(int src_chip, int dst_chip, std::vector<int>& out) const = 0;
  virtual int hops(int src_chip, int dst_chip) const = 0;
};

// The figures every link of one kind shares.
struct LinkSpec {
  LinkKind kind = LinkKind::kIci;
  double bandwidth_Bps = 0;
  double latency_s = 0;
  double idle_W = 0, busy_W = 0;
};

// What a wiring builder produces: vertices (chips first), links, and the router.
struct FabricBuild {
  std::shared_ptr<const Fabric> fabric;
  std::vector<VertexKind> vertices;
  std::vector<Link> links;
};

// Appends a link (giving it the next id) and returns that id.
int add_link(FabricBuild& b, int from, int to, const LinkSpec& spec, double extra_latency_s = 0);

}  // namespace glam
