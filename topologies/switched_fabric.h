#pragma once
// GPU clusters: nodes of chips joined by one NVSwitch each, and the nodes joined by an InfiniBand
// fat-tree. A single node is the same with no fat-tree.
//
// The fat-tree is an extended generalised fat-tree XGFT(h; m1..mh; w1..wh) over the chips' NICs
// (one NIC per chip, so w1 = 1): a level-i switch has m_i children and every level-(i-1) element
// has w_i parents. Rail-optimised: leaf switches hold one rail each, so the m1 NICs under a leaf
// are the same local GPU of m1 different nodes (as in NVIDIA's DGX SuperPOD designs).
#include <cstdint>
#include <vector>

#include "fabric.h"

namespace glam {

struct SwitchedShape {
  int chips = 1;
  int chips_per_node = 1;
  std::vector<int> down;  // m1..mh: children per switch, leaf level first; empty: no fat-tree
  std::vector<int> up;    // w2..wh: parents per element of the level below, for levels 2..h
  bool rail_optimised = true;
};

struct SwitchedLinks {
  LinkSpec nvlink;      // chip <-> its node's NVSwitch, per direction
  LinkSpec infiniband;  // NIC <-> leaf and switch <-> switch, per direction
  double nvswitch_latency_s = 0;
  double ib_switch_latency_s = 0;
};

FabricBuild build_switched_fabric(const SwitchedShape& shape, const SwitchedLinks& links);

// Fat-tree switches per level (leaf first): the switch vertices of the XGFT.
std::vector<int> fat_tree_switches_per_level(const SwitchedShape& shape);

// The physical switches of `ports` ports that the fat-tree needs, all levels together: per level,
// its ports in use (children and parents of every switch vertex) over `ports`, rounded up. An XGFT
// has one link between a switch and each parent, so a small tree has switch vertices using a
// fraction of their ports (64 GPUs in [8, 8]: 16 vertices of 16 or 8 ports); a real one bundles
// those links onto fewer, fuller switches, and it is those that draw power.
int64_t fat_tree_physical_switches(const SwitchedShape& shape, int64_t ports);

}  // namespace glam
