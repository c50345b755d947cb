// Every token-file format round-trips: files written here from the format
// descriptions read back as the same ids, as int32.
#include <catch2/catch.hpp>

#include "src/data/token_dataset.h"
#include "tests/data/test_files.h"

using Catch::Matchers::Contains;
using moe::TokenDataset;
using namespace moe::test;

namespace {

template <typename T>
std::vector<T> cast_ids(const std::vector<int32_t>& ids) {
  return std::vector<T>(ids.begin(), ids.end());
}

}  // namespace

TEST_CASE("npy files of every accepted dtype read back as the same ids") {
  const std::string dir = fresh_dir("npy_dtypes");
  const std::vector<int32_t> ids = {0, 1, 7, 65535, 3, 2};
  const std::vector<int32_t> wide_ids = {0, 70000, 99999, 5};  // beyond uint16
  struct Case {
    std::string descr, data;
    std::vector<int32_t> expected;
  };
  const std::vector<Case> cases = {
      {"<u2", le_array(cast_ids<uint16_t>(ids)), ids},
      {"<u4", le_array(cast_ids<uint32_t>(wide_ids)), wide_ids},
      {"<i4", le_array(wide_ids), wide_ids},
      {"<i8", le_array(cast_ids<int64_t>(wide_ids)), wide_ids},
  };
  for (const Case& c : cases) {
    CAPTURE(c.descr);
    const std::string path = dir + "/tokens" + c.descr.substr(1) + ".npy";
    write_file(path, npy_bytes(npy_dict(c.descr, "(" + std::to_string(c.expected.size()) + ",)"), c.data));
    const TokenDataset dataset = TokenDataset::open(path, "*.npy", 100000);
    CHECK(dataset.num_tokens() == static_cast<int64_t>(c.expected.size()));
    CHECK(read_all(dataset) == c.expected);
    CHECK_THAT(dataset.describe(), Contains("npy") && Contains(std::to_string(c.expected.size()) + " tokens"));
  }
}

TEST_CASE("a 2-D npy array is read row by row (C order)") {
  const std::string path = fresh_dir("npy_2d") + "/rows.npy";
  const std::vector<int32_t> ids = iota_ids(12, 100);  // 3 rows of 4
  write_file(path, npy_bytes(npy_dict("<u2", "(3, 4)"), le_array(cast_ids<uint16_t>(ids))));
  CHECK(read_all(TokenDataset::open(path, "*.npy", 1000)) == ids);
}

TEST_CASE("npy format versions 2.0 and 3.0 and numpy's header spellings are read") {
  const std::string dir = fresh_dir("npy_versions");
  const std::vector<int32_t> ids = {4, 5, 6};
  const std::string data = le_array(cast_ids<uint16_t>(ids));
  for (int major : {2, 3}) {
    const std::string path = dir + "/v" + std::to_string(major) + ".npy";
    write_file(path, npy_bytes(npy_dict("<u2", "(3,)"), data, major));
    CHECK(read_all(TokenDataset::open(path, "", 10)) == ids);
  }
  // Keys in another order, double quotes, no trailing comma, Python 2 long.
  const std::string path = dir + "/spelling.npy";
  write_file(path, npy_bytes("{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<u2\"}", data));
  CHECK(read_all(TokenDataset::open(path, "", 10)) == ids);
}

TEST_CASE("llm.c shards of version 1 (uint16) and 2 (uint32) read back") {
  const std::string dir = fresh_dir("llmc");
  const std::vector<int32_t> ids = {50256, 1, 2, 3, 65535};
  write_file(dir + "/v1.bin", llmc_bytes(1, 5, le_array(cast_ids<uint16_t>(ids))));
  const TokenDataset v1 = TokenDataset::open(dir + "/v1.bin", "", 100000);
  CHECK(read_all(v1) == ids);
  CHECK_THAT(v1.describe(), Contains("llm.c uint16"));

  const std::vector<int32_t> wide = {100000, 0, 123456};
  write_file(dir + "/v2.bin", llmc_bytes(2, 3, le_array(cast_ids<uint32_t>(wide))));
  const TokenDataset v2 = TokenDataset::open(dir + "/v2.bin", "", 200000);
  CHECK(read_all(v2) == wide);
  CHECK_THAT(v2.describe(), Contains("llm.c uint32"));
}

TEST_CASE("Megatron-LM pairs read every sequence in index order") {
  const std::string dir = fresh_dir("megatron");
  SECTION("int32 tokens (code 4), opened by prefix, .bin or .idx") {
    const std::vector<int32_t> ids = {10, 11, 12, 20, 21, 30};
    write_file(dir + "/corpus.bin", le_array(ids));
    write_file(dir + "/corpus.idx", megatron_idx_bytes(4, {3, 2, 1}, {0, 12, 20}, {0, 1, 3}));
    for (const std::string& path : {dir + "/corpus", dir + "/corpus.bin", dir + "/corpus.idx"}) {
      CAPTURE(path);
      const TokenDataset dataset = TokenDataset::open(path, "*.bin", 100);
      CHECK(read_all(dataset) == ids);
      CHECK_THAT(dataset.describe(), Contains("megatron int32"));
    }
  }
  SECTION("uint16 tokens (code 8) with sequences out of file order and gaps between them") {
    // .bin holds [junk, seq1 (2 tokens), seq0 (3 tokens)]; the index lists seq0 first.
    const std::vector<uint16_t> bin = {999, 7, 8, 1, 2, 3};
    write_file(dir + "/shuffled.bin", le_array(bin));
    write_file(dir + "/shuffled.idx", megatron_idx_bytes(8, {3, 2}, {6, 2}, {0, 2}));
    const TokenDataset dataset = TokenDataset::open(dir + "/shuffled", "", 100);
    CHECK(read_all(dataset) == std::vector<int32_t>{1, 2, 3, 7, 8});
    std::vector<int32_t> middle(3);
    dataset.read(2, 3, middle.data());  // spans the two sequences
    CHECK(middle == std::vector<int32_t>{3, 7, 8});
  }
}

TEST_CASE("headerless .bin files hold uint16 ids up to vocab 65536, uint32 above") {
  const std::string dir = fresh_dir("raw");
  const std::vector<int32_t> ids = {1, 2, 65535, 0};
  write_file(dir + "/narrow.bin", le_array(cast_ids<uint16_t>(ids)));
  const TokenDataset narrow = TokenDataset::open(dir + "/narrow.bin", "", 65536);
  CHECK(read_all(narrow) == ids);
  CHECK_THAT(narrow.describe(), Contains("raw uint16"));

  const std::vector<int32_t> wide = {65536, 3, 131071};
  write_file(dir + "/wide.bin", le_array(cast_ids<uint32_t>(wide)));
  const TokenDataset wide_dataset = TokenDataset::open(dir + "/wide.bin", "", 65537 * 2);
  CHECK(read_all(wide_dataset) == wide);
  CHECK_THAT(wide_dataset.describe(), Contains("raw uint32"));
}

TEST_CASE("read copies any sub-range of the stream") {
  const std::string path = fresh_dir("subrange") + "/t.npy";
  const std::vector<int32_t> ids = iota_ids(50, 3);
  write_file(path, npy_bytes(npy_dict("<i4", "(50,)"), le_array(ids)));
  const TokenDataset dataset = TokenDataset::open(path, "", 100);
  std::vector<int32_t> out(7, -1);
  dataset.read(40, 7, out.data());
  CHECK(out == std::vector<int32_t>(ids.begin() + 40, ids.begin() + 47));
  dataset.read(10, 0, out.data());  // an empty read is allowed and writes nothing
  CHECK(out[0] == 43);
  CHECK_THROWS_AS(dataset.read(45, 6, out.data()), std::out_of_range);
}
