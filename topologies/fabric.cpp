#include "fabric.h"

namespace glam {

int add_link(FabricBuild& b, int from, int to, const LinkSpec& spec, double extra_latency_s) {
  const int id = static_cast<int>(b.links.size());
  b.links.push_back(Link{id, from, to, spec.kind, spec.bandwidth_Bps, spec.latency_s + extra_latency_s, spec.idle_W,
                         spec.busy_W});
  return id;
}

}  // namespace glam
