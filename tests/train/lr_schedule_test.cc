// Learning-rate and router-bias schedules against hand-computed values.
#include <catch2/catch.hpp>

#include <cmath>

#include "src/train/lr_schedule.h"

namespace {

moe::SchedulerConfig sched(const std::string& name, int64_t warmup, double min = 0.1) {
  moe::SchedulerConfig s;
  s.name = name;
  s.warmup_steps = warmup;
  s.min_lr_ratio = min;
  return s;
}

}  // namespace

TEST_CASE("linear warm-up from 0 to 1") {
  const auto s = sched("cosine", 10);
  CHECK(moe::lr_factor(s, 110, 1) == Approx(0.1));
  CHECK(moe::lr_factor(s, 110, 5) == Approx(0.5));
  CHECK(moe::lr_factor(s, 110, 10) == Approx(1.0));
}

TEST_CASE("cosine decays from 1 to min_lr_ratio over the steps after warm-up") {
  const auto s = sched("cosine", 10);
  CHECK(moe::lr_factor(s, 110, 10) == Approx(1.0));
  CHECK(moe::lr_factor(s, 110, 60) == Approx(0.1 + 0.5 * 0.9 * (1 + std::cos(M_PI * 0.5))));  // p = 0.5: 0.55
  CHECK(moe::lr_factor(s, 110, 110) == Approx(0.1));
  CHECK(moe::lr_factor(s, 110, 500) == Approx(0.1));  // past the end: stays at the floor
  auto d = s;
  d.decay_steps = 20;
  CHECK(moe::lr_factor(d, 110, 20) == Approx(0.55));
  CHECK(moe::lr_factor(d, 110, 40) == Approx(0.1));
}

TEST_CASE("linear, wsd and constant") {
  CHECK(moe::lr_factor(sched("linear", 0), 100, 50) == Approx(1.0 - 0.9 * 0.5));
  CHECK(moe::lr_factor(sched("constant", 5), 100, 80) == 1.0);
  // wsd defaults: 100 steps after warm-up, decay over the last 10, stable before.
  const auto w = sched("wsd", 0, 0.0);
  CHECK(moe::lr_factor(w, 100, 90) == 1.0);
  CHECK(moe::lr_factor(w, 100, 95) == Approx(0.5));
  CHECK(moe::lr_factor(w, 100, 100) == Approx(0.0).margin(1e-12));
  auto w2 = w;
  w2.stable_steps = 20;
  w2.decay_steps = 40;
  CHECK(moe::lr_factor(w2, 100, 20) == 1.0);
  CHECK(moe::lr_factor(w2, 100, 40) == Approx(0.5));
}

TEST_CASE("router bias schedules") {
  moe::ModelConfig m;
  m.moe_bias_update_rate = 0.01;
  CHECK(moe::bias_update_rate(m, 100, 30) == Approx(0.01));
  m.moe_bias_schedule = "cosine_decay";
  CHECK(moe::bias_update_rate(m, 100, 50) == Approx(0.005));
  CHECK(moe::bias_update_rate(m, 100, 100) == Approx(0.0).margin(1e-12));
  m.moe_bias_schedule = "linear_warmup";
  CHECK(moe::bias_update_rate(m, 100, 5) == Approx(0.005));
  CHECK(moe::bias_update_rate(m, 100, 50) == Approx(0.01));
}
