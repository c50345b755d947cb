// Which files a dataset path names: a file, a Megatron prefix, or a directory
// read through a file pattern in name order; and what is said when none fit.
#include <catch2/catch.hpp>

#include <filesystem>

#include "src/data/token_dataset.h"
#include "tests/data/test_files.h"

using Catch::Matchers::Contains;
using moe::TokenDataset;
using namespace moe::test;

namespace {

std::string u2_npy(const std::vector<int32_t>& ids) {
  return npy_bytes(npy_dict("<u2", "(" + std::to_string(ids.size()) + ",)"),
                   le_array(std::vector<uint16_t>(ids.begin(), ids.end())));
}

}  // namespace

TEST_CASE("a directory's matching shards are concatenated in name order") {
  const std::string dir = fresh_dir("shards");
  // Written out of order; names sort as shard_0, shard_1, shard_2.
  write_file(dir + "/shard_2.npy", u2_npy({7, 8, 9}));
  write_file(dir + "/shard_0.npy", u2_npy({1, 2}));
  write_file(dir + "/shard_1.npy", u2_npy({3, 4, 5, 6}));
  write_file(dir + "/.shard_3.npy", u2_npy({99}));      // hidden: a temporary or editor file
  write_file(dir + "/notes.txt", "not tokens");         // does not match
  std::filesystem::create_directory(dir + "/sub.npy");  // a directory, not a file
  const TokenDataset dataset = TokenDataset::open(dir, "*.npy", 100);
  CHECK(read_all(dataset) == iota_ids(9, 1));
  CHECK_THAT(dataset.describe(), Contains(dir + " (*.npy): 3 files (npy uint16 x3), 9 tokens"));

  std::vector<int32_t> across(4);
  dataset.read(1, 4, across.data());  // shard_0's last token to shard_1's third
  CHECK(across == std::vector<int32_t>{2, 3, 4, 5});
}

TEST_CASE("a file pattern picks its files out of a mixed directory") {
  const std::string dir = fresh_dir("pattern");
  write_file(dir + "/tokenized_b.bin", le_array(std::vector<uint16_t>{3, 4}));
  write_file(dir + "/tokenized_a.bin", llmc_bytes(1, 2, le_array(std::vector<uint16_t>{1, 2})));
  write_file(dir + "/other.bin", le_array(std::vector<uint16_t>{99}));
  write_file(dir + "/tokenized_c.npy", u2_npy({5}));
  const TokenDataset bins = TokenDataset::open(dir, "tokenized_*.bin", 100);
  CHECK(read_all(bins) == std::vector<int32_t>{1, 2, 3, 4});
  CHECK_THAT(bins.describe(), Contains("2 files (llm.c uint16 x1, raw uint16 x1)"));
  CHECK(read_all(TokenDataset::open(dir, "tokenized_*", 100)) == std::vector<int32_t>{1, 2, 3, 4, 5});
}

TEST_CASE("a directory of Megatron-LM pairs is matched by its .bin files") {
  const std::string dir = fresh_dir("megatron_dir");
  write_file(dir + "/part_0.bin", le_array(std::vector<int32_t>{1, 2}));
  write_file(dir + "/part_0.idx", megatron_idx_bytes(4, {2}, {0}, {0, 1}));
  write_file(dir + "/part_1.bin", le_array(std::vector<int32_t>{3}));
  write_file(dir + "/part_1.idx", megatron_idx_bytes(4, {1}, {0}, {0, 1}));
  CHECK(read_all(TokenDataset::open(dir, "*.bin", 10)) == std::vector<int32_t>{1, 2, 3});
  CHECK(read_all(TokenDataset::open(dir, "*", 10)) == std::vector<int32_t>{1, 2, 3});  // .idx are not shards

  write_file(dir + "/part_2.bin", le_array(std::vector<int32_t>{4}));  // its .idx is missing
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir, "*.bin", 10); }),
             Contains(dir + "/part_2.bin has no " + dir + "/part_2.idx beside it"));
}

TEST_CASE("paths that name no token files are rejected with the key to fix") {
  const std::string dir = fresh_dir("missing");
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir + "/nope", "*.npy", 10); }),
             Contains("data.dataset_path = " + dir + "/nope: does not exist"));
  CHECK_THAT(user_error_of([&] { TokenDataset::open("", "*.npy", 10); }), Contains("data.dataset_path = : is empty"));
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir, "*.npy", 10, "eval"); }),
             Contains("eval.dataset_path = " + dir + ": no file matches eval.file_pattern \"*.npy\"") &&
                 Contains("set eval.file_pattern"));
  write_file(dir + "/tokens.bin", le_array(std::vector<uint16_t>{1}));
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir, "*.npy", 10); }), Contains("no file matches"));

  write_file(dir + "/lonely.bin", le_array(std::vector<int32_t>{1}));
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir + "/lonely", "", 10); }),
             Contains("Megatron-LM pair is missing " + dir + "/lonely.idx"));
  write_file(dir + "/orphan.idx", megatron_idx_bytes(4, {1}, {0}, {0, 1}));
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir + "/orphan.idx", "", 10); }),
             Contains("Megatron-LM pair is missing " + dir + "/orphan.bin"));

  write_file(dir + "/tokens.txt", "hello");
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir + "/tokens.txt", "", 10); }),
             Contains("tokens.txt: has no known token-file extension"));
}
