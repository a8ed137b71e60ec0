#include "core/op_timer.h"

#include <algorithm>
#include <cmath>

namespace glam::exec {

OpTimer::Scope::Scope(OpTimer* t, const std::string* id, double flops, double bytes)
    : timer_(t && t->recording_ ? t : nullptr), id_(id), flops_(flops), bytes_(bytes) {
  if (timer_) {
    timer_->wait_for_device();
    start_ = std::chrono::steady_clock::now();
  }
}

OpTimer::Scope::~Scope() {
  if (!timer_) return;
  timer_->wait_for_device();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  timer_->add(*id_, s, flops_, bytes_);
}

void OpTimer::wait_for_device() const {
  if (ctx_) kernels::synchronize(*ctx_);
  if (comm_) comm_->synchronize();
}

void OpTimer::begin_step() {
  current_seconds_.clear();
  current_flops_.clear();
  current_bytes_.clear();
}

void OpTimer::add(const std::string& id, double seconds, double flops, double bytes) {
  if (!prefix_.empty()) return add_under(prefix_ + id, seconds, flops, bytes);
  add_under(id, seconds, flops, bytes);
}

void OpTimer::add_under(const std::string& key, double seconds, double flops, double bytes) {
  current_seconds_[key] += seconds;
  current_flops_[key] += flops;
  current_bytes_[key] += bytes;
}

void OpTimer::end_step() {
  if (!recording_) return;
  for (auto& [id, s] : current_seconds_) {
    OpStats& st = ops_[id];
    st.seconds.resize(static_cast<size_t>(steps_), 0.0);
    st.seconds.push_back(s);
    st.flops = current_flops_[id];
    st.bytes = current_bytes_[id];
  }
  ++steps_;
  for (auto& [id, st] : ops_) st.seconds.resize(static_cast<size_t>(steps_), 0.0);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = p * static_cast<double>(v.size() - 1);
  auto lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, v.size() - 1);
  double f = pos - static_cast<double>(lo);
  // lo + f x (hi - lo), not lo (1 - f) + hi f: only this form never decreases with p under rounding
  // (two nearly equal samples gave a p90 one ulp below the p10)
  return v[lo] + f * (v[hi] - v[lo]);
}

}  // namespace glam::exec
