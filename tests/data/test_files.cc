#include "tests/data/test_files.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>

#include "src/core/user_error.h"

namespace moe::test {
namespace fs = std::filesystem;

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string npy_bytes(const std::string& dict, const std::string& data, int major) {
  const size_t preamble = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  out += major == 1 ? le(static_cast<uint16_t>(header.size())) : le(static_cast<uint32_t>(header.size()));
  return out + header + data;
}

std::string npy_dict(const std::string& descr, const std::string& shape, bool fortran_order) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran_order ? "True" : "False") + ", 'shape': " + shape +
         ", }";
}

std::string llmc_bytes(int32_t version, int32_t num_tokens, const std::string& data, int32_t magic) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = num_tokens;
  return le_array(header) + data;
}

std::string megatron_idx_bytes(uint8_t dtype_code, const std::vector<int32_t>& sizes,
                               const std::vector<int64_t>& pointers, const std::vector<int64_t>& doc_idx,
                               uint64_t version, const std::string& magic) {
  return magic + le(version) + le(dtype_code) + le(static_cast<uint64_t>(sizes.size())) +
         le(static_cast<uint64_t>(doc_idx.size())) + le_array(sizes) + le_array(pointers) + le_array(doc_idx);
}

std::vector<int32_t> read_all(const TokenDataset& dataset) {
  std::vector<int32_t> tokens(static_cast<size_t>(dataset.num_tokens()));
  dataset.read(0, dataset.num_tokens(), tokens.data());
  return tokens;
}

std::string user_error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const UserError& e) {
    const std::string message = e.what();
    CHECK(message.find('\n') == std::string::npos);  // one line
    return message;
  }
  FAIL("expected a UserError, none was thrown");
  return "";
}

std::vector<int32_t> iota_ids(int64_t n, int32_t first) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

void write_token_npy(const std::string& path, const std::vector<uint16_t>& tokens) {
  write_file(path, npy_bytes(npy_dict("<u2", "(" + std::to_string(tokens.size()) + ",)"), le_array(tokens)));
}

}  // namespace moe::test
