#include "network/simgrid_flows.h"

#include <memory>

#include <simgrid/s4u/Comm.hpp>
#include <simgrid/s4u/Engine.hpp>

#include "common/errors.h"
#include "simgrid/simgrid_platform.h"

namespace glam {
namespace sg4 = simgrid::s4u;

namespace {

// SimGrid has one engine per process and a platform cannot be rebuilt, so the first cluster
// simulated at flow fidelity is the only one this process can simulate that way.
struct SimgridState {
  std::unique_ptr<Cluster> cluster;  // must outlive the engine
  SimgridPlatform platform;
};

SimgridState& state_for(const Cluster& cluster) {
  static SimgridState state;
  if (!state.cluster) {
    static int argc = 2;
    static char arg0[] = "glamsim";
    static char arg1[] = "--log=root.thres:critical";
    static char* argv[] = {arg0, arg1, nullptr};
    static sg4::Engine* engine = new sg4::Engine(&argc, argv);  // lives until exit
    (void)engine;
    state.cluster = std::make_unique<Cluster>(cluster);
    SimgridPlatformOptions options;
    options.energy_properties = false;
    state.platform = build_simgrid_platform(*state.cluster, options);
  } else if (state.cluster->id() != cluster.id()) {
    throw UsageError("flow fidelity simulates one cluster per process (" + state.cluster->id() + " already loaded, " +
                     cluster.id() + " requested): run the clusters separately or use analytical fidelity");
  }
  return state;
}

}  // namespace

double simulate_flows(const Cluster& cluster, const std::vector<SimgridFlow>& flows, double /*latency_factor*/) {
  SimgridState& st = state_for(cluster);
  std::vector<sg4::CommPtr> comms;
  comms.reserve(flows.size());
  for (const auto& f : flows) {
    if (f.src == f.dst || f.bytes <= 0) continue;
    sg4::CommPtr c = sg4::Comm::sendto_init(st.platform.hosts[static_cast<size_t>(f.src)],
                                            st.platform.hosts[static_cast<size_t>(f.dst)]);
    c->set_payload_size(static_cast<uint64_t>(f.bytes));
    c->start();
    comms.push_back(std::move(c));
  }
  if (comms.empty()) return 0;
  sg4::Engine* e = sg4::Engine::get_instance();
  const double start = sg4::Engine::get_clock();
  e->run();
  return sg4::Engine::get_clock() - start;
}

}  // namespace glam
