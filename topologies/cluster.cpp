#include "cluster.h"

#include <stdexcept>
#include <string>

#include "cluster_parts.h"
#include "torus.h"

namespace glam {

const char* link_kind_name(LinkKind kind) {
  switch (kind) {
    case LinkKind::kIci: return "ici";
    case LinkKind::kNvlink: return "nvlink";
    case LinkKind::kInfiniband: return "infiniband";
    case LinkKind::kPcie: return "pcie";
  }
  return "?";
}

const char* topology_kind_name(TopologyKind kind) {
  switch (kind) {
    case TopologyKind::kTorus: return "torus";
    case TopologyKind::kFatTree: return "fat-tree";
    case TopologyKind::kSingleNode: return "single-node";
  }
  return "?";
}

Cluster::Cluster(Parts parts) : p_(std::make_shared<const Parts>(std::move(parts))) {}

const std::string& Cluster::id() const { return p_->id; }
TopologyKind Cluster::kind() const { return p_->kind; }
const ChipSpec& Cluster::chip() const { return p_->chip; }
int Cluster::num_chips() const { return p_->num_chips; }
int Cluster::num_vertices() const { return static_cast<int>(p_->vertices.size()); }
VertexKind Cluster::vertex_kind(int vertex) const { return p_->vertices.at(vertex); }
const std::vector<Link>& Cluster::links() const { return p_->links; }
const std::vector<int>& Cluster::out_links(int vertex) const { return p_->out_links.at(vertex); }

namespace {
void check_chip(const Cluster& c, int chip) {
  if (chip < 0 || chip >= c.num_chips())
    throw std::out_of_range("chip " + std::to_string(chip) + " outside 0.." + std::to_string(c.num_chips() - 1) +
                            " of cluster " + c.id());
}
}  // namespace

std::vector<int> Cluster::route(int src_chip, int dst_chip) const {
  std::vector<int> out;
  append_route(src_chip, dst_chip, out);
  return out;
}

void Cluster::append_route(int src_chip, int dst_chip, std::vector<int>& out) const {
  check_chip(*this, src_chip);
  check_chip(*this, dst_chip);
  p_->fabric->append_route(src_chip, dst_chip, out);
}

int Cluster::route_hops(int src_chip, int dst_chip) const {
  check_chip(*this, src_chip);
  check_chip(*this, dst_chip);
  return p_->fabric->hops(src_chip, dst_chip);
}

double Cluster::route_latency_s(int src_chip, int dst_chip) const {
  double t = 0;
  for (int l : route(src_chip, dst_chip)) t += p_->links[l].latency_s;
  return t;
}

const std::vector<int>& Cluster::torus_dims() const { return p_->torus_dims; }

std::vector<int> Cluster::torus_coords(int chip) const {
  check_chip(*this, chip);
  return torus_coords_of(p_->torus_dims, chip);
}

int Cluster::chips_per_node() const { return p_->chips_per_node; }
bool Cluster::nvswitch_reduces() const { return p_->nvswitch_nvls; }
double Cluster::pue() const { return p_->pue; }
double Cluster::carbon_kg_per_kWh() const { return p_->carbon_kg_per_kWh; }
std::optional<double> Cluster::price_per_kWh() const { return p_->price_per_kWh; }
double Cluster::switch_W() const { return p_->switch_W; }
int64_t Cluster::powered_fabric_switches() const { return p_->powered_fabric_switches; }
const nlohmann::json& Cluster::resolved_config() const { return p_->resolved; }
const TopologyGraph& Cluster::graph() const { return *p_->graph; }

}  // namespace glam
