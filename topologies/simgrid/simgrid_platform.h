#pragma once
// The SimGrid platform of a cluster, built from the same links as the Boost.Graph graph: one
// SimGrid host per chip, one router per switch, one SimGrid link per directed link (same name
// index, bandwidth and latency), and routes answered on demand by Cluster::append_route, so a
// 4,096-chip torus needs no all-pairs route table.
//
// Only glamsim and the tests link this library: libsimgrid exports MPI symbols (see the README).
#include <string>
#include <vector>

#include <simgrid/s4u/Engine.hpp>
#include <simgrid/s4u/Host.hpp>
#include <simgrid/s4u/Link.hpp>
#include <simgrid/s4u/NetZone.hpp>

#include "cluster.h"

namespace glam {

// Accelerator fabrics are not TCP: CM02 without LV08's latency and bandwidth factors, no
// reverse cross-traffic, and no TCP window bound (SimGrid's default gamma of 4 MiB caps a
// flow at gamma / (2 x latency), below NVLink rates at microsecond latencies). Must run after
// the Engine exists and before the first netzone is created.
void configure_simgrid_network();

struct SimgridPlatformOptions {
  // Parent zone; nullptr makes the cluster's zone the root (configure_simgrid_network() is then
  // called first).
  simgrid::s4u::NetZone* parent = nullptr;
  // Prefix of every host, router and link name, so several clusters can share one engine.
  std::string name_prefix;
  // Set the energy plugin's properties (host wattage_per_state / wattage_off, link wattage_range)
  // from the cluster's power figures. The plugin itself must be initialised by the caller, before
  // this builder runs.
  bool energy_properties = true;
};

struct SimgridPlatform {
  simgrid::s4u::NetZone* zone = nullptr;
  std::vector<simgrid::s4u::Host*> hosts;  // index: chip
  std::vector<simgrid::s4u::Link*> links;  // index: Cluster link id
};

// Host "<prefix>chip<c>", router "<prefix>switch<v>", link "<prefix>link<id>". Host speed is the
// chip's bf16 peak in FLOP/s. The zone is sealed on return; it keeps its own (shared) copy of the Cluster.
SimgridPlatform build_simgrid_platform(const Cluster& cluster, const SimgridPlatformOptions& options = {});

}  // namespace glam
