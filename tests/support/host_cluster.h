#pragma once
// A single-node host of CPU "chips" behind one switch, as `glamsim validate` builds it for executor
// records: 10 GB/s links with 1 us latency.
#include "cluster.h"

namespace glam::testing {

inline Cluster host_cluster(int chips) {
  return parse_cluster("id = \"host\"\n[chip]\nkind = \"cpu\"\n[topology]\nkind = \"single-node\"\nchips = " +
                           std::to_string(chips) + "\n[links.nvlink]\nbandwidth_Bps = 1e10\nlatency_s = 1e-6\n",
                       "host.toml");
}

}  // namespace glam::testing
