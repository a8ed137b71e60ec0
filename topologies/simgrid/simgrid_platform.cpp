#include "simgrid/simgrid_platform.h"

#include <sstream>
#include <stdexcept>

#include <simgrid/kernel/routing/NetPoint.hpp>
#include <simgrid/kernel/routing/NetZoneImpl.hpp>

namespace glam {
namespace {

namespace sg4 = simgrid::s4u;
namespace kr = simgrid::kernel::routing;

std::string watts(double w) {
  std::ostringstream o;
  o.precision(17);
  o << w;
  return o.str();
}

// A netzone whose routes come from the Cluster: SimGrid asks get_local_route() for each pair it
// needs, and the answer is the cluster's own route mapped onto the SimGrid links of the same ids.
class ClusterZone final : public kr::NetZoneImpl {
 public:
  ClusterZone(const std::string& name, Cluster cluster) : NetZoneImpl(name), cluster_(std::move(cluster)) {}

  void set_links(std::vector<sg4::Link*> links) { links_ = std::move(links); }

  void get_local_route(const kr::NetPoint* src, const kr::NetPoint* dst, kr::Route* into, double* latency) override {
    const auto s = static_cast<int>(src->id()), d = static_cast<int>(dst->id());
    if (s >= cluster_.num_chips() || d >= cluster_.num_chips())
      throw std::invalid_argument("cluster " + cluster_.id() + ": routes are defined between chips only (" +
                                  src->get_name() + " -> " + dst->get_name() + ")");
    route_.clear();
    cluster_.append_route(s, d, route_);
    for (int l : route_) {
      into->link_list_.push_back(links_[l]->get_impl());
      if (latency) *latency += cluster_.links()[l].latency_s;
    }
  }

 private:
  const Cluster cluster_;  // a cheap shared copy, so the zone never outlives its routes
  std::vector<sg4::Link*> links_;
  std::vector<int> route_;  // reused: SimGrid's maestro thread asks one route at a time
};

}  // namespace

void configure_simgrid_network() {
  sg4::Engine::set_config("network/model:CM02");
  sg4::Engine::set_config("network/crosstraffic:0");
  sg4::Engine::set_config("network/TCP-gamma:0");
}

SimgridPlatform build_simgrid_platform(const Cluster& cluster, const SimgridPlatformOptions& options) {
  if (!options.parent) configure_simgrid_network();
  const std::string& pre = options.name_prefix;
  auto* impl = new ClusterZone(pre + cluster.id(), cluster);  // owned by the engine
  if (options.parent) impl->set_parent(options.parent->get_impl());
  SimgridPlatform p;
  p.zone = impl->get_iface();
  // Netpoint ids follow creation order, so creating chips first and switches next makes a
  // netpoint's id its vertex id, which get_local_route relies on.
  const ChipSpec& chip = cluster.chip();
  for (int c = 0; c < cluster.num_chips(); ++c) {
    sg4::Host* h = p.zone->create_host(pre + "chip" + std::to_string(c), chip.peak_flops_bf16);
    if (options.energy_properties) {
      // Idle : Epsilon (0% load, not idle) : AllCores; host power is accounted separately.
      h->set_property("wattage_per_state", watts(chip.idle_W) + ":" + watts(chip.idle_W) + ":" + watts(chip.busy_W));
      h->set_property("wattage_off", "0");
    }
    h->seal();
    p.hosts.push_back(h);
    if (static_cast<int>(h->get_netpoint()->id()) != c) throw std::logic_error("SimGrid netpoint ids out of order");
  }
  for (int v = cluster.num_chips(); v < cluster.num_vertices(); ++v) {
    kr::NetPoint* r = impl->create_router(pre + "switch" + std::to_string(v));
    if (static_cast<int>(r->id()) != v) throw std::logic_error("SimGrid netpoint ids out of order");
  }
  for (const Link& l : cluster.links()) {
    sg4::Link* sl = p.zone->create_link(pre + "link" + std::to_string(l.id), l.bandwidth_Bps);
    sl->set_latency(l.latency_s);
    if (options.energy_properties) sl->set_property("wattage_range", watts(l.idle_W) + ":" + watts(l.busy_W));
    sl->seal();
    p.links.push_back(sl);
  }
  impl->set_links(p.links);
  p.zone->seal();
  return p;
}

}  // namespace glam
