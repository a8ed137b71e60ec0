// bench_routes [CLUSTER...]: route queries per second and the time to load and measure each
// cluster. Not a test; a check that routing stays cheap enough for the simulator.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cluster.h"
#include "metrics.h"

int main(int argc, char** argv) {
  std::vector<std::string> ids(argv + 1, argv + argc);
  if (ids.empty()) ids = {"tpu-v4-4096", "dgx-h100-1024", "dgx-a100-1024"};
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  for (const auto& id : ids) {
    auto t0 = clock::now();
    glam::Cluster c = glam::load_cluster(id);
    auto t1 = clock::now();
    glam::ClusterMetrics m = glam::compute_metrics(c);
    auto t2 = clock::now();
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> pick(0, c.num_chips() - 1);
    std::vector<int> route;
    long hops = 0;
    const int n = 2'000'000;
    for (int i = 0; i < n; ++i) {
      route.clear();
      c.append_route(pick(rng), pick(rng), route);
      hops += static_cast<long>(route.size());
    }
    auto t3 = clock::now();
    std::printf("%-16s load %.3f s  metrics %.3f s  routes %.1f M/s (mean %.2f hops, diameter %d)\n", id.c_str(),
                seconds(t0, t1), seconds(t1, t2), n / seconds(t2, t3) / 1e6, double(hops) / n, m.diameter_hops);
  }
}
