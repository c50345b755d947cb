// check-gpu's fallback decision, without a GPU: which op families' vendor
// kernels a table of results replaces with the builtin ones, which a failed
// whole-model row replaces when it is run again without them, that a
// replaced row does not fail the check while any builtin row does, and that a
// passed check remembers its fallbacks for the next run.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "src/train/gpu_check.h"
#include "src/train/gpu_check_cache.h"

namespace {

moe::GpuCheckRow row(const std::string& op, bool vendor, bool passed, const std::string& detail = "") {
  moe::GpuCheckRow r;
  r.op = op;
  r.shape = "q [2, 32, 4, 16], kv [2, 32, 2, 16]";
  r.dtype = "bf16";
  r.vendor = vendor;
  r.implementation = vendor ? "cuDNN 9.19.0 fused SDPA" : "";
  r.passed = passed;
  r.detail = detail;
  return r;
}

}  // namespace

TEST_CASE("a vendor kernel that fails its rows is replaced; a builtin one that fails fails the check") {
  std::vector<moe::GpuCheckRow> rows = {
      row("attention_forward", true, true),
      row("attention_backward", true, false, "dq[3] = 0.5, the CPU gives 0.25"),
      row("attention_backward", true, false, "dk[0] = 1, the CPU gives 2"),
      row("rmsnorm_forward", false, true),
  };
  const auto failed = moe::vendor_failures(rows);
  REQUIRE(failed.size() == 1);
  CHECK(failed.at("attention").find("attention_backward") == 0);
  CHECK(failed.at("attention").find("dq[3] = 0.5") != std::string::npos);  // the first failure

  // Each family on its own.
  rows.push_back(row("grouped_matmul_backward", true, false, "dw[2] = 3, the CPU gives 1"));
  CHECK(moe::vendor_failures(rows).at("expert GEMMs").find("dw[2] = 3") != std::string::npos);
  rows.pop_back();

  // A builtin kernel's failure is never a vendor failure.
  rows.push_back(row("rmsnorm_backward", false, false, "dx[1] = 7"));
  CHECK(moe::vendor_failures(rows).size() == 1);

  moe::GpuCheckReport report;
  report.rows = {rows[0], rows[1], rows[3]};
  CHECK_FALSE(report.passed());
  report.rows[1].replaced = true;  // what check_gpu does once the builtin kernel is checked in its place
  report.rows.push_back(row("attention_backward", false, true));
  CHECK(report.passed());
  report.rows.push_back(rows[4]);
  CHECK_FALSE(report.passed());
  CHECK(report.first_failure()->op == "rmsnorm_backward");
}

TEST_CASE("a passed check remembers the vendor kernels it replaced") {
  const std::string cache = std::filesystem::temp_directory_path().string() + "/gpu_fallback_test_cache";
  std::filesystem::remove_all(cache);
  setenv("MOE_TRAIN_CACHE", cache.c_str(), 1);
  moe::GpuCheckReport report;
  report.rows = {row("attention_forward", false, true)};
  CHECK(moe::remembered_fallbacks(0).empty());  // no file yet
  report.fallbacks["attention"] = "attention_backward q [2, 32, 4, 16] bf16: dq[3] = 0.5, the CPU gives 0.25";
  report.fallbacks["expert GEMMs"] = "grouped_matmul_forward [256, 64] bf16: out[7] = nan, the CPU gives 1.5";
  moe::remember_gpu_check(report);
  REQUIRE(moe::gpu_check_passed_before(0));
  const auto remembered = moe::remembered_fallbacks(0);
  REQUIRE(remembered.size() == 2);
  CHECK(remembered.at("attention") == report.fallbacks.at("attention"));
  CHECK(remembered.at("expert GEMMs") == report.fallbacks.at("expert GEMMs"));
  CHECK(moe::gpu_check_summary(report).find("the builtin kernel replaces the vendor's for attention, expert GEMMs") !=
        std::string::npos);
  std::filesystem::remove_all(cache);
}

TEST_CASE("a whole-model row that fails with vendor kernels runs again without them, family by family") {
  const std::vector<std::string> on = {"attention", "expert GEMMs"};
  // rerun(off): passes once every family in `culprits` is off.
  const auto rerun_passing_without = [](std::vector<std::string> culprits) {
    return [culprits](const std::vector<std::string>& off) {
      moe::GpuCheckRow r = row("CUDA graph replay vs eager (builtin)", false, true);
      for (const std::string& c : culprits)
        if (std::find(off.begin(), off.end(), c) == off.end()) r.passed = false;
      return r;
    };
  };
  std::vector<std::string> replaced;

  SECTION("the first family was the cause: one rerun, the second family stays") {
    const auto reruns = moe::rerun_without_vendors(on, rerun_passing_without({"attention"}), replaced);
    CHECK(reruns.size() == 1);
    CHECK(reruns.back().passed);
    CHECK(replaced == std::vector<std::string>{"attention"});
  }
  SECTION("the second family was the cause: both go, since the first was switched off on the way") {
    const auto reruns = moe::rerun_without_vendors(on, rerun_passing_without({"expert GEMMs"}), replaced);
    CHECK(reruns.size() == 2);
    CHECK(reruns.back().passed);
    CHECK(replaced == on);
  }
  SECTION("the builtin kernels fail too: nothing is replaced and the row stands") {
    const auto reruns =
        moe::rerun_without_vendors(on, rerun_passing_without({"attention", "no such family"}), replaced);
    CHECK(reruns.size() == 2);
    CHECK_FALSE(reruns.back().passed);
    CHECK(replaced.empty());
  }
  SECTION("no vendor kernel ran: no rerun") {
    const auto reruns = moe::rerun_without_vendors({}, rerun_passing_without({}), replaced);
    CHECK(reruns.empty());
    CHECK(replaced.empty());
  }
}
