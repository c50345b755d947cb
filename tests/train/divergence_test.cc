// DivergenceWatch: non-finite steps and loss spikes are unhealthy, spikes are
// judged only once 10 healthy losses are known and never enter the running
// mean, and more than max_unhealthy unhealthy steps in a row is a divergence.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "src/train/divergence.h"

TEST_CASE("non-finite loss or gradient norm is unhealthy from the first step") {
  moe::DivergenceWatch watch(3.0, 5, {});
  CHECK_THAT(watch.judge(1, std::nan(""), 1.0), Catch::Contains("step 1: non-finite loss"));
  CHECK_THAT(watch.judge(2, 2.0, std::numeric_limits<double>::infinity()), Catch::Contains("gradient norm inf"));
  CHECK(watch.history().count == 0);
  CHECK(watch.unhealthy_in_a_row() == 2);
  CHECK(watch.judge(3, 2.0, 1.0).empty());
  CHECK(watch.unhealthy_in_a_row() == 0);
  CHECK(watch.history().count == 1);
}

TEST_CASE("spikes are judged after 10 healthy losses and stay out of the mean") {
  moe::DivergenceWatch watch(3.0, 5, {});
  CHECK(watch.judge(1, 100.0, 1.0).empty());  // too early to call a spike
  for (int s = 2; s <= 10; ++s) CHECK(watch.judge(s, 1.0, 1.0).empty());
  const double mean = watch.history().mean;
  CHECK(mean == Approx(10.9));  // (100 + 9) / 10
  CHECK(watch.judge(11, 3.0 * mean * 0.99, 1.0).empty());
  const double mean_after = watch.history().mean;
  CHECK_THAT(watch.judge(12, 3.0 * mean_after * 1.01, 1.0), Catch::Contains("step 12: loss spike"));
  CHECK(watch.history().mean == mean_after);
}

TEST_CASE("a loss that stays high after a blow-up keeps being unhealthy, and diverges after the limit") {
  moe::DivergenceWatch watch(3.0, 2, {6.0, 50});
  CHECK(watch.judge(51, 40.0, 1.0) != "");
  CHECK(!watch.diverged());
  CHECK(watch.judge(52, 40.0, 1.0) != "");
  CHECK(!watch.diverged());
  CHECK(watch.judge(53, std::nan(""), 1.0) != "");  // spikes and skips count together
  CHECK(watch.diverged());
}

TEST_CASE("spike_factor = 0 judges non-finite steps only") {
  moe::DivergenceWatch watch(0.0, 5, {1.0, 50});
  CHECK(watch.judge(51, 1e6, 1.0).empty());
}
