// Broken token files are rejected at open (ids at read) with one line that
// names the file and says what is wrong.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>

#include "src/data/token_dataset.h"
#include "tests/data/test_files.h"

using Catch::Matchers::Contains;
using moe::TokenDataset;
using namespace moe::test;

namespace {

// The message of opening `bytes` written to dir/name.
std::string open_error(const std::string& dir, const std::string& name, const std::string& bytes,
                       int64_t vocab_size = 1000) {
  write_file(dir + "/" + name, bytes);
  return user_error_of([&] { TokenDataset::open(dir + "/" + name, "", vocab_size); });
}

const std::string kThreeU2 = le_array(std::vector<uint16_t>{1, 2, 3});

}  // namespace

TEST_CASE("corrupt .npy files are rejected") {
  const std::string dir = fresh_dir("npy_errors");
  struct Case {
    std::string name, bytes;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {"magic.npy", "\x93NUMPX\x01\x00" + std::string(100, ' '), {"bad magic", "numpy.save"}},
      {"tiny.npy", "\x93NU", {"bad magic"}},
      {"version.npy", std::string("\x93NUMPY\x04\x00", 8) + std::string(100, ' '), {"version 4.0"}},
      {"truncated.npy",
       npy_bytes(npy_dict("<u2", "(4,)"), kThreeU2),
       {"is truncated", "(4)", "needs 8 bytes", "has 6"}},
      {"extra.npy", npy_bytes(npy_dict("<u2", "(2,)"), kThreeU2), {"extra bytes"}},
      {"huge_shape.npy", npy_bytes(npy_dict("<u2", "(4611686018427387904, 8)"), kThreeU2), {"is truncated"}},
      {"header_cut.npy", npy_bytes(npy_dict("<u2", "(3,)"), kThreeU2).substr(0, 40), {"truncated", "header"}},
      {"fortran.npy", npy_bytes(npy_dict("<u2", "(3,)", true), kThreeU2), {"Fortran order", "ascontiguousarray"}},
      {"float.npy", npy_bytes(npy_dict("<f4", "(3,)"), kThreeU2 + "xx"), {"'<f4'", "cannot hold token ids", "'<u2'"}},
      {"byte.npy", npy_bytes(npy_dict("|u1", "(3,)"), "abc"), {"'|u1'"}},
      {"big_endian.npy", npy_bytes(npy_dict(">u2", "(3,)"), kThreeU2), {"'>u2'"}},
      {"scalar.npy", npy_bytes(npy_dict("<u2", "()"), "ab"), {"0 dimensions"}},
      {"three_d.npy", npy_bytes(npy_dict("<u2", "(1, 1, 3)"), kThreeU2), {"3 dimensions"}},
      {"not_dict.npy", npy_bytes("['descr', '<u2']", kThreeU2), {"not a valid dict"}},
      {"extra_key.npy",
       npy_bytes("{'descr': '<u2', 'fortran_order': False, 'shape': (3,), 'x': 1}", kThreeU2),
       {"unexpected key 'x'"}},
      {"no_shape.npy", npy_bytes("{'descr': '<u2', 'fortran_order': False}", kThreeU2), {"lacks one of the keys"}},
      {"bad_shape.npy", npy_bytes(npy_dict("<u2", "(three,)"), kThreeU2), {"not a tuple of integers"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string message = open_error(dir, c.name, c.bytes);
    CHECK_THAT(message, Contains("data file " + dir + "/" + c.name + ": "));
    for (const std::string& fragment : c.fragments) CHECK_THAT(message, Contains(fragment));
  }
}

TEST_CASE("corrupt llm.c shards are rejected") {
  const std::string dir = fresh_dir("llmc_errors");
  CHECK_THAT(open_error(dir, "version.bin", llmc_bytes(3, 3, kThreeU2)), Contains("version 3 is not supported"));
  CHECK_THAT(open_error(dir, "short.bin", llmc_bytes(1, 4, kThreeU2)),
             Contains("short.bin: is truncated") && Contains("says 4 tokens of uint16"));
  CHECK_THAT(open_error(dir, "long.bin", llmc_bytes(1, 2, kThreeU2)), Contains("does not match its header"));
  CHECK_THAT(open_error(dir, "negative.bin", llmc_bytes(1, -1, kThreeU2)), Contains("says -1 tokens"));
  CHECK_THAT(open_error(dir, "header.bin", llmc_bytes(1, 3, kThreeU2).substr(0, 100)),
             Contains("shorter than the 1024-byte llm.c header"));
  // A wrong magic is refused for the header, not read as raw token ids.
  CHECK_THAT(open_error(dir, "magic.bin", llmc_bytes(1, 3, kThreeU2, 20240521)),
             Contains("magic.bin: bad magic 20240521, not llm.c's 20240520") && Contains("llm.c's write_datafile()"));
}

TEST_CASE("corrupt Megatron-LM pairs are rejected") {
  const std::string dir = fresh_dir("megatron_errors");
  const std::vector<int32_t> ids = {1, 2, 3, 4};
  const auto pair_error = [&](const std::string& name, const std::string& idx, const std::string& bin) {
    write_file(dir + "/" + name + ".bin", bin);
    write_file(dir + "/" + name + ".idx", idx);
    return user_error_of([&] { TokenDataset::open(dir + "/" + name, "", 1000); });
  };
  const std::string bin = le_array(ids);
  CHECK_THAT(pair_error("magic", megatron_idx_bytes(4, {4}, {0}, {0, 1}, 1, std::string("MMIDIDY\0\0", 9)), bin),
             Contains("magic.idx: bad magic"));
  CHECK_THAT(pair_error("version", megatron_idx_bytes(4, {4}, {0}, {0, 1}, 2), bin),
             Contains("index version 2 is not supported"));
  CHECK_THAT(pair_error("float32", megatron_idx_bytes(7, {4}, {0}, {0, 1}), bin),
             Contains("dtype code 7 (float32) cannot hold token ids"));
  CHECK_THAT(pair_error("float64", megatron_idx_bytes(6, {2}, {0}, {0, 1}), bin), Contains("code 6 (float64)"));
  CHECK_THAT(pair_error("unknown", megatron_idx_bytes(9, {4}, {0}, {0, 1}), bin), Contains("code 9 (unknown)"));
  CHECK_THAT(pair_error("short_idx", megatron_idx_bytes(4, {4}, {0}, {0, 1}).substr(0, 20), bin),
             Contains("short_idx.idx: is truncated"));
  // A sequence count far beyond what the index holds must not be trusted.
  std::string lying = megatron_idx_bytes(4, {4}, {0}, {0, 1});
  lying.replace(18, 8, le(static_cast<uint64_t>(1) << 62));
  CHECK_THAT(pair_error("lying", lying, bin), Contains("lying.idx: is truncated") && Contains("sequences"));
  CHECK_THAT(pair_error("past_end", megatron_idx_bytes(4, {2, 3}, {0, 8}, {0, 2}), bin),
             Contains("past_end.bin: is truncated or does not match its index") && Contains("sequence 1"));
  CHECK_THAT(pair_error("negative", megatron_idx_bytes(4, {-1}, {0}, {0, 1}), bin), Contains("sequence 0 (-1 tokens"));
}

TEST_CASE("a headerless .bin must hold whole tokens") {
  const std::string dir = fresh_dir("raw_errors");
  CHECK_THAT(
      open_error(dir, "odd.bin", "abc", 1000),
      Contains("odd.bin: 3 bytes is not a whole number of uint16 tokens") && Contains("model.vocab_size = 1000"));
  CHECK_THAT(open_error(dir, "six.bin", "abcdef", 70000), Contains("uint32 tokens"));
}

TEST_CASE("ids outside the vocabulary are rejected with their file and offset") {
  const std::string dir = fresh_dir("vocab_errors");
  write_file(dir + "/a.npy", npy_bytes(npy_dict("<u2", "(3,)"), kThreeU2));
  write_file(dir + "/b.npy", npy_bytes(npy_dict("<i4", "(4,)"), le_array(std::vector<int32_t>{0, 1, 50, -3})));
  const TokenDataset dataset = TokenDataset::open(dir, "*.npy", 50);
  std::vector<int32_t> out(7);
  dataset.read(0, 5, out.data());  // a.npy and the valid start of b.npy
  CHECK_THAT(user_error_of([&] { dataset.read(0, 6, out.data()); }),
             Contains("data file " + dir + "/b.npy: token 2 (stream token 5) has id 50") &&
                 Contains("[0, 50) of model.vocab_size = 50"));
  CHECK_THAT(user_error_of([&] { dataset.read(6, 1, out.data()); }), Contains("token 3 (stream token 6) has id -3"));

  write_file(dir + "/narrow.bin", le_array(std::vector<uint16_t>{1, 999}));
  const TokenDataset raw = TokenDataset::open(dir + "/narrow.bin", "", 999);
  CHECK_THAT(user_error_of([&] { read_all(raw); }), Contains("narrow.bin: token 1 (stream token 1) has id 999"));
}

TEST_CASE("a dataset without tokens is rejected") {
  const std::string dir = fresh_dir("empty_files");
  write_file(dir + "/empty.bin", "");
  write_file(dir + "/zero.npy", npy_bytes(npy_dict("<u2", "(0,)"), ""));
  CHECK_THAT(user_error_of([&] { TokenDataset::open(dir, "*", 100); }),
             Contains("data.dataset_path = " + dir + ": its files hold no tokens"));
}

TEST_CASE("a file changed under an open dataset is an error naming it, never a SIGBUS") {
  const std::string dir = fresh_dir("changed_files");
  const std::string path = dir + "/tokens.bin";
  std::vector<uint16_t> tokens(4096);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(i % 100);
  write_file(path, le_array(tokens));
  std::vector<int32_t> out(tokens.size());

  const TokenDataset truncated = TokenDataset::open(path, "", 100);
  truncated.read(0, 4096, out.data());
  std::filesystem::resize_file(path, 100);
  CHECK_THAT(user_error_of([&] { truncated.read(4000, 10, out.data()); }),
             Contains("data file " + path + ": changed while the run reads it (8192 bytes when opened, 100 now)") &&
                 Contains("resume from the last checkpoint"));

  write_file(path, le_array(tokens));
  const TokenDataset rewritten = TokenDataset::open(path, "", 100);
  // The same size, other bytes, a later modification time (set explicitly:
  // a rewrite within the file system's time resolution looks unchanged).
  write_file(path, le_array(std::vector<uint16_t>(4096, 7)));
  std::filesystem::last_write_time(path, std::filesystem::last_write_time(path) + std::chrono::seconds(2));
  CHECK_THAT(user_error_of([&] { rewritten.read(0, 10, out.data()); }), Contains("rewritten since it was opened"));

  // Replaced by a rename: the run keeps the file it opened.
  write_file(dir + "/new.bin", le_array(std::vector<uint16_t>(10, 1)));
  const TokenDataset renamed = TokenDataset::open(path, "", 100);
  std::filesystem::rename(dir + "/new.bin", path);
  renamed.read(0, 4096, out.data());
  CHECK(out[4095] == 7);
}
