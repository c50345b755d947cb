// NumPy .npy token files, format versions 1.0, 2.0 and 3.0:
//   "\x93NUMPY" major minor | header length (uint16 in 1.0, uint32 after) |
//   header: a Python dict literal {'descr': '<u2', 'fortran_order': False, 'shape': (N,), }
//   padded with spaces and '\n' | the array's bytes.
// Token ids are integers, so 'descr' must be '<u2', '<u4', '<i4' or '<i8'; a
// 2-D array (e.g. [documents, length]) is read flattened in C order.
#include <fmt/format.h>

#include <cctype>
#include <cstdint>

#include "src/data/token_file.h"

namespace moe {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr int64_t kMagicBytes = 6;
constexpr char kFix[] =
    "write token ids with numpy.save(path, ids.astype(numpy.uint16)) (numpy.uint32 for vocabularies over 65536)";

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// Parses the header dict: exactly the three keys numpy writes, in any order.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : text_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader header;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{');
    while (!peek_is('}')) {
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        header.descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
        seen_fortran = true;
      } else if (key == "shape") {
        header.shape = parse_int_tuple();
        seen_shape = true;
      } else {
        fail(fmt::format("header has an unexpected key '{}'", key));
      }
      if (!peek_is('}')) expect(',');
    }
    expect('}');
    if (!seen_descr || !seen_fortran || !seen_shape) {
      fail("header lacks one of the keys 'descr', 'fortran_order', 'shape'");
    }
    return header;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const { reject_data_file(path_, problem, kFix); }

  void skip_spaces() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  bool peek_is(char c) {
    skip_spaces();
    return pos_ < text_.size() && text_[pos_] == c;
  }

  void expect(char c) {
    if (!peek_is(c)) fail(fmt::format("header is not a valid dict: expected '{}' at character {}", c, pos_));
    ++pos_;
  }

  std::string parse_string() {
    skip_spaces();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      fail(fmt::format("header is not a valid dict: expected a quoted string at character {}", pos_));
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) fail("header is not a valid dict: unterminated string");
    std::string s = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  bool parse_bool() {
    skip_spaces();
    for (const auto& [word, value] : {std::pair<const char*, bool>{"True", true}, {"False", false}}) {
      const size_t n = std::char_traits<char>::length(word);
      if (text_.compare(pos_, n, word) == 0) {
        pos_ += n;
        return value;
      }
    }
    fail(fmt::format("header is not a valid dict: expected True or False at character {}", pos_));
  }

  std::vector<int64_t> parse_int_tuple() {
    std::vector<int64_t> values;
    expect('(');
    while (!peek_is(')')) {
      skip_spaces();
      const size_t digits_start = pos_;
      int64_t v = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        if (v > (INT64_MAX - 9) / 10) fail("header 'shape' has a dimension too large for any file");
        v = v * 10 + (text_[pos_++] - '0');
      }
      if (pos_ == digits_start) fail(fmt::format("header 'shape' is not a tuple of integers at character {}", pos_));
      if (pos_ < text_.size() && (text_[pos_] == 'L' || text_[pos_] == 'l')) ++pos_;  // Python 2 longs
      values.push_back(v);
      if (!peek_is(')')) expect(',');
    }
    expect(')');
    return values;
  }

  const std::string& text_;
  const std::string& path_;
  size_t pos_ = 0;
};

bool parse_descr(const std::string& descr, TokenDType* dtype) {
  if (descr == "<u2")
    *dtype = TokenDType::kUInt16;
  else if (descr == "<u4")
    *dtype = TokenDType::kUInt32;
  else if (descr == "<i4")
    *dtype = TokenDType::kInt32;
  else if (descr == "<i8")
    *dtype = TokenDType::kInt64;
  else
    return false;
  return true;
}

}  // namespace

TokenFile read_npy_file(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* bytes = file->data();
  const int64_t size = file->size();
  if (size < kMagicBytes + 2 || std::memcmp(bytes, kMagic, kMagicBytes) != 0) {
    reject_data_file(path, "is not a NumPy .npy file (bad magic: it does not start with \"\\x93NUMPY\")", kFix);
  }
  const int major = bytes[6], minor = bytes[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    reject_data_file(path, fmt::format(".npy format version {}.{} is not supported (1.0, 2.0, 3.0 are)", major, minor),
                     kFix);
  }
  const int64_t length_bytes = major == 1 ? 2 : 4;
  if (!fits_in_file(8, length_bytes, size)) reject_data_file(path, "is truncated inside the .npy header", kFix);
  const int64_t header_length = major == 1 ? load_le<uint16_t>(bytes + 8) : load_le<uint32_t>(bytes + 8);
  const int64_t header_start = 8 + length_bytes;
  if (!fits_in_file(header_start, header_length, size)) {
    reject_data_file(path,
                     fmt::format("is truncated: the .npy header says it is {} bytes, the file has {} bytes in all",
                                 header_length, size),
                     kFix);
  }
  const std::string text(reinterpret_cast<const char*>(bytes + header_start), static_cast<size_t>(header_length));
  const NpyHeader header = HeaderParser(text, path).parse();

  TokenDType dtype;
  if (!parse_descr(header.descr, &dtype)) {
    reject_data_file(
        path, fmt::format("dtype '{}' cannot hold token ids (accepted: '<u2', '<u4', '<i4', '<i8')", header.descr),
        kFix);
  }
  if (header.fortran_order) {
    reject_data_file(path, "array is stored in Fortran order (fortran_order: True)",
                     "save a C-ordered array: numpy.save(path, numpy.ascontiguousarray(ids))");
  }
  if (header.shape.empty() || header.shape.size() > 2) {
    reject_data_file(
        path,
        fmt::format("array has {} dimensions; token files are 1-D (or 2-D, read row by row)", header.shape.size()),
        kFix);
  }
  const int64_t element = dtype_bytes(dtype);
  const int64_t data_start = header_start + header_length;
  const int64_t data_bytes = size - data_start;
  // Multiply with a guard: -1 stands for a size no file can have.
  int64_t num_tokens = 1;
  for (int64_t dim : header.shape) {
    if (dim != 0 && num_tokens > INT64_MAX / element / dim) {
      num_tokens = -1;
      break;
    }
    num_tokens *= dim;
  }
  if (num_tokens < 0 || num_tokens * element != data_bytes) {
    const bool too_short = num_tokens < 0 || num_tokens * element > data_bytes;
    std::string shape;
    for (int64_t dim : header.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(dim);
    const std::string needed = num_tokens < 0 ? "more than 2^63 bytes" : fmt::format("{} bytes", num_tokens * element);
    reject_data_file(path,
                     fmt::format("{}: shape ({}) of {} needs {} after the {}-byte header, the file has {}",
                                 too_short ? "is truncated" : "has extra bytes after its array", shape,
                                 dtype_name(dtype), needed, data_start, data_bytes),
                     too_short ? "copy or write it again; an interrupted copy or save leaves a file short" : kFix);
  }
  return TokenFile(std::move(file), "npy", dtype, {TokenRun{data_start, num_tokens}});
}

}  // namespace moe
