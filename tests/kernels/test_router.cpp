// The router against a straightforward reference written the GShard way (one-hot masks and
// cumulative sums), on random inputs including ties, exactly full capacity and drops.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "router.h"
#include "routing_rules.h"

namespace glam::kernels {
namespace {

const KernelContext ctx;

struct Reference {
  std::vector<double> probs, gate;
  std::vector<int32_t> expert, loc;
  std::vector<double> aux;
};

Reference reference_router(const std::vector<double>& logits, const RouterShape& s, const SecondExpertPolicy& pol) {
  const int64_t n = s.tokens, e_n = s.experts, k = s.top_k, g_n = s.groups(), c = s.capacity;
  Reference r;
  r.probs.assign(n * e_n, 0), r.gate.assign(n * k, 0), r.expert.assign(n * k, 0), r.loc.assign(n * k, -1);
  std::vector<std::vector<int>> mask(k, std::vector<int>(n * e_n, 0));
  for (int64_t t = 0; t < n; ++t) {
    double mx = -1e300, z = 0;
    for (int64_t e = 0; e < e_n; ++e) mx = std::max(mx, logits[t * e_n + e]);
    for (int64_t e = 0; e < e_n; ++e) z += std::exp(logits[t * e_n + e] - mx);
    for (int64_t e = 0; e < e_n; ++e) r.probs[t * e_n + e] = std::exp(logits[t * e_n + e] - mx) / z;
    std::vector<double> p(r.probs.begin() + t * e_n, r.probs.begin() + (t + 1) * e_n);
    int64_t i1 = std::max_element(p.begin(), p.end()) - p.begin();  // first maximum
    double g1 = p[i1];
    mask[0][t * e_n + i1] = 1;
    r.expert[t * k] = static_cast<int32_t>(i1);
    if (k == 1) {
      r.gate[t] = g1;
      continue;
    }
    p[i1] = -1;
    int64_t i2 = std::max_element(p.begin(), p.end()) - p.begin();
    double g2 = p[i2];
    r.expert[t * k + 1] = static_cast<int32_t>(i2);
    r.gate[t * k] = g1 / (g1 + g2 + 1e-9);
    r.gate[t * k + 1] = g2 / (g1 + g2 + 1e-9);
    bool keep2 = !pol.random || routing_uniform(pol.seed, pol.first_token + t) < std::min(1.0, r.gate[t * k + 1] / pol.threshold);
    mask[1][t * e_n + i2] = keep2 ? 1 : 0;
  }
  r.aux.assign(g_n, 0);
  for (int64_t g = 0; g < g_n; ++g) {
    // position_in_expert_1 = cumsum(mask_1) - 1; mask_1 *= position < C
    std::vector<int64_t> cum1(e_n, 0), count1(e_n, 0), cum2(e_n, 0);
    std::vector<double> me(e_n, 0), ce(e_n, 0);
    for (int64_t t = g * s.group_tokens; t < (g + 1) * s.group_tokens; ++t)
      for (int64_t e = 0; e < e_n; ++e) {
        me[e] += r.probs[t * e_n + e] / static_cast<double>(s.group_tokens);
        ce[e] += mask[0][t * e_n + e] / static_cast<double>(s.group_tokens);
      }
    for (int64_t e = 0; e < e_n; ++e) r.aux[g] += me[e] * ce[e] * static_cast<double>(e_n);
    for (int64_t t = g * s.group_tokens; t < (g + 1) * s.group_tokens; ++t)
      for (int64_t e = 0; e < e_n; ++e)
        if (mask[0][t * e_n + e]) {
          int64_t pos = cum1[e]++;
          if (pos < c) {
            count1[e]++;
            r.loc[t * k] = static_cast<int32_t>((e * g_n + g) * c + pos);
          } else {
            r.gate[t * k] = 0;
          }
        }
    if (k == 1) continue;
    // position_in_expert_2 = cumsum(mask_2) - 1 + sum(mask_1 after drops)
    for (int64_t t = g * s.group_tokens; t < (g + 1) * s.group_tokens; ++t) {
      int64_t e = r.expert[t * k + 1];
      if (!mask[1][t * e_n + e]) {
        r.gate[t * k + 1] = 0;
        r.loc[t * k + 1] = -2;
        continue;
      }
      int64_t pos = cum2[e]++ + count1[e];
      if (pos < c) r.loc[t * k + 1] = static_cast<int32_t>((e * g_n + g) * c + pos);
      else r.gate[t * k + 1] = 0;
    }
  }
  return r;
}

void compare(const std::vector<double>& logits, const RouterShape& s, const SecondExpertPolicy& pol, int* dropped) {
  Reference r = reference_router(logits, s, pol);
  std::vector<double> probs(logits.size()), gate(s.tokens * s.top_k), aux(s.groups());
  std::vector<int32_t> ex(s.tokens * s.top_k), loc(s.tokens * s.top_k), st(s.slots());
  router_forward<double>(ctx, logits.data(), s, pol, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
  router_aux_loss<double>(ctx, probs.data(), ex.data(), s, aux.data());
  EXPECT_EQ(ex, r.expert);
  EXPECT_EQ(loc, r.loc);
  for (size_t i = 0; i < gate.size(); ++i) EXPECT_NEAR(gate[i], r.gate[i], 1e-12);
  for (size_t i = 0; i < aux.size(); ++i) EXPECT_NEAR(aux[i], r.aux[i], 1e-12);
  for (size_t i = 0; i < loc.size(); ++i) {
    if (loc[i] >= 0) {
      EXPECT_EQ(st[loc[i]], static_cast<int32_t>(i / s.top_k));
    }
    *dropped += loc[i] == -1;
  }
  // The statistics the host reads: kept per expert, dropped per expert (the copies routed to it beyond
  // its capacity), skipped, in router_count_bins(E) entries.
  const int64_t e_n = s.experts;
  std::vector<int32_t> expected(static_cast<size_t>(router_count_bins(e_n)), 0);
  for (size_t i = 0; i < loc.size(); ++i) {
    if (loc[i] >= 0) expected[static_cast<size_t>(loc[i] / (s.groups() * s.capacity))]++;
    if (loc[i] == -1) expected[static_cast<size_t>(e_n + r.expert[i])]++;
    if (loc[i] == -2) expected[static_cast<size_t>(2 * e_n)]++;
  }
  std::vector<int32_t> counts(expected.size(), 777);
  router_counts(ctx, ex.data(), loc.data(), s, counts.data());
  EXPECT_EQ(counts, expected);
  // float model path agrees on the decisions
  std::vector<float> lf(logits.begin(), logits.end()), pf(logits.size()), gf(gate.size());
  std::vector<int32_t> exf(ex.size()), locf(loc.size()), stf(st.size());
  router_forward<float>(ctx, lf.data(), s, pol, pf.data(), exf.data(), gf.data(), locf.data(), stf.data());
  EXPECT_EQ(locf, loc);
}

TEST(Router, MatchesReferenceOnRandomInputsWithDrops) {
  std::mt19937_64 gen(11);
  std::normal_distribution<double> nd(0, 1.5);
  int dropped = 0;
  for (int trial = 0; trial < 20; ++trial) {
    RouterShape s;
    s.experts = 4 + trial % 5, s.top_k = 1 + trial % 2, s.group_tokens = 16, s.tokens = 48;
    s.capacity = expert_capacity(CapacityConvention::kGlam, trial % 3 == 0 ? 0.5 : 1.0, s.top_k, s.group_tokens, s.experts);
    std::vector<double> logits(s.tokens * s.experts);
    for (auto& x : logits) x = nd(gen);
    SecondExpertPolicy pol;
    compare(logits, s, pol, &dropped);
  }
  EXPECT_GT(dropped, 0);
}

TEST(Router, TiesGoToTheLowestExpertIndex) {
  std::mt19937_64 gen(12);
  int dropped = 0;
  RouterShape s;
  s.experts = 6, s.top_k = 2, s.group_tokens = 8, s.tokens = 16, s.capacity = 4;
  std::vector<double> logits(s.tokens * s.experts);
  for (auto& x : logits) x = static_cast<double>(gen() % 2);  // many exact ties
  compare(logits, s, {}, &dropped);
  std::vector<double> flat(s.tokens * s.experts, 0.25);  // all equal: experts 0 and 1
  compare(flat, s, {}, &dropped);
  std::vector<double> probs(flat.size()), gate(s.tokens * 2);
  std::vector<int32_t> ex(s.tokens * 2), loc(s.tokens * 2), st(s.slots());
  router_forward<double>(ctx, flat.data(), s, {}, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
  EXPECT_EQ(ex[0], 0);
  EXPECT_EQ(ex[1], 1);
  // group of 8 tokens, capacity 4: expert 0 full with the first 4 first choices; second choices
  // to expert 1 take its 4 slots: tokens 4..7 lose both copies.
  EXPECT_EQ(loc[4 * 2], -1);
  EXPECT_EQ(loc[3 * 2 + 1], (1 * 2 + 0) * 4 + 3);
  EXPECT_EQ(loc[4 * 2 + 1], -1);
}

TEST(Router, ExactlyFullCapacityDropsNothing) {
  // every token of a group of 8 picks a distinct pair so that each expert gets exactly C = 4 copies
  RouterShape s;
  s.experts = 4, s.top_k = 2, s.group_tokens = 8, s.tokens = 8, s.capacity = 4;
  std::vector<double> logits(s.tokens * s.experts, 0.0);
  for (int64_t t = 0; t < 8; ++t) {
    logits[t * 4 + t % 4] = 2.0;
    logits[t * 4 + (t + 1) % 4] = 1.0;
  }
  int dropped = 0;
  compare(logits, s, {}, &dropped);
  EXPECT_EQ(dropped, 0);
  s.capacity = 3;
  compare(logits, s, {}, &dropped);
  EXPECT_GT(dropped, 0);
}

TEST(Router, RandomSecondExpertRouting) {
  std::mt19937_64 gen(13);
  std::normal_distribution<double> nd(0, 1);
  RouterShape s;
  s.experts = 8, s.top_k = 2, s.group_tokens = 32, s.tokens = 64, s.capacity = 8;
  std::vector<double> logits(s.tokens * s.experts);
  for (auto& x : logits) x = nd(gen);
  SecondExpertPolicy pol;
  pol.random = true, pol.threshold = 0.3, pol.seed = 99, pol.first_token = 640;
  int dropped = 0;
  compare(logits, s, pol, &dropped);
}

TEST(Router, AuxiliaryLossIsOneUnderUniformRouting) {
  RouterShape s;
  s.experts = 8, s.top_k = 2, s.group_tokens = 16, s.tokens = 32, s.capacity = 4;
  // equal logits: uniform probabilities (every first choice on expert 0 does not matter: P_e = 1/E)
  std::vector<double> flat(s.tokens * s.experts, 0.0), probs(flat.size()), gate(64), aux(2);
  std::vector<int32_t> ex(64), loc(64), st(s.slots());
  router_forward<double>(ctx, flat.data(), s, {}, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
  router_aux_loss<double>(ctx, probs.data(), ex.data(), s, aux.data());
  EXPECT_NEAR(aux[0], 1.0, 1e-12);
  EXPECT_NEAR(aux[1], 1.0, 1e-12);
  // balanced first choices with peaked probabilities: f_e = 1/E, sum_e P_e = 1
  std::vector<double> bal(s.tokens * s.experts, 0.0);
  for (int64_t t = 0; t < s.tokens; ++t) bal[t * s.experts + t % s.experts] = 3.0;
  router_forward<double>(ctx, bal.data(), s, {}, probs.data(), ex.data(), gate.data(), loc.data(), st.data());
  router_aux_loss<double>(ctx, probs.data(), ex.data(), s, aux.data());
  EXPECT_NEAR(aux[0], 1.0, 1e-12);
}

TEST(Router, CapacityRulesAreTheSharedOnes) {
  EXPECT_EQ(expert_capacity(CapacityConvention::kGlam, 2.0, 2, 1024, 64), 32);
  EXPECT_EQ(expert_capacity(CapacityConvention::kGlam, 2.0, 2, 128, 8), 32);
  EXPECT_EQ(expert_capacity(CapacityConvention::kGshard, 1.0, 2, 128, 8), 32);
}

}  // namespace
}  // namespace glam::kernels
