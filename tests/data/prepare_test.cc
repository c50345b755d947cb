// Text to tokens: the byte tokenizer, the train/val split, the files written,
// and the default corpus built once from fortune files and then reused.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>

#include "src/data/default_corpus.h"
#include "src/data/prepare.h"
#include "src/data/token_dataset.h"
#include "tests/data/test_files.h"

using Catch::Matchers::Contains;
using moe::TokenDataset;
using namespace moe::test;
namespace fs = std::filesystem;

namespace {

// The byte tokens of documents, each followed by the end-of-document id.
std::vector<int32_t> byte_tokens(const std::vector<std::string>& documents) {
  std::vector<int32_t> ids;
  for (const std::string& doc : documents) {
    for (unsigned char c : doc) ids.push_back(c);
    ids.push_back(moe::kEndOfDocumentToken);
  }
  return ids;
}

std::vector<int32_t> split_tokens(const std::string& root, const std::string& split) {
  return read_all(TokenDataset::open(root + "/" + split, "*.npy", moe::kByteVocabSize));
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

// No temporary files left behind by the atomic writes.
void check_no_temporaries(const std::string& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
  }
}

}  // namespace

TEST_CASE("the val split is the last documents, about val_fraction of tokens") {
  using moe::count_val_documents;
  CHECK(count_val_documents({10, 10, 10, 10}, 0.25) == 1);
  CHECK(count_val_documents({10, 10, 10, 10}, 0.5) == 2);
  CHECK(count_val_documents({10, 10, 10, 10}, 0.3) == 1);    // 10 is nearer 12 than 20 is
  CHECK(count_val_documents({10, 10, 10, 10}, 0.001) == 1);  // at least one document
  CHECK(count_val_documents({10, 10, 10, 10}, 0.99) == 3);   // at least one left to train on
  CHECK(count_val_documents({100, 1, 1}, 0.5) == 2);
  CHECK(count_val_documents({10, 10}, 0.0) == 0);
  CHECK(count_val_documents({10}, 0.5) == 0);  // one document: all of it trains
}

TEST_CASE("text files round-trip as bytes plus end-of-document tokens") {
  const std::string dir = fresh_dir("prepare");
  const std::vector<std::string> texts = {"Hello, world.\n", std::string("bytes \xff\x00\x80 too", 13), "x",
                                          "The last document."};
  std::vector<std::string> files;
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back(dir + "/doc" + std::to_string(i) + ".txt");
    write_file(files.back(), texts[i]);
  }
  const std::string out = dir + "/out";
  const moe::PreparedDataset prepared = moe::prepare_text_dataset(files, out, 0.2);
  CHECK(prepared.dir == out);
  CHECK(prepared.val_documents == 1);  // the last document alone, 19 of 50 tokens, passes 20%
  CHECK(prepared.train_documents == 3);
  CHECK(split_tokens(out, "train") == byte_tokens({texts[0], texts[1], texts[2]}));
  CHECK(split_tokens(out, "val") == byte_tokens({texts[3]}));
  CHECK(prepared.train_tokens + prepared.val_tokens == 14 + 1 + 13 + 1 + 1 + 1 + 18 + 1);
  CHECK(moe::kByteVocabSize == 257);

  const std::string npy = read_file(out + "/train/tokens.npy");
  CHECK(npy.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  CHECK(npy.find("'descr': '<u2'") != std::string::npos);
  CHECK((npy.size() - 2 * prepared.train_tokens) % 64 == 0);  // data starts 64-byte aligned
  CHECK_THAT(read_file(out + "/README.txt"), Contains("vocabulary size 257") && Contains("3 documents"));
  check_no_temporaries(out);

  // Preparing again replaces the files whole.
  moe::prepare_text_dataset({files[0], files[3]}, out, 0.5);
  CHECK(split_tokens(out, "train") == byte_tokens({texts[0]}));
  CHECK(split_tokens(out, "val") == byte_tokens({texts[3]}));
}

TEST_CASE("preparing rejects bad inputs") {
  const std::string dir = fresh_dir("prepare_errors");
  write_file(dir + "/a.txt", "a");
  CHECK_THAT(user_error_of([&] { moe::prepare_text_dataset({dir + "/missing.txt"}, dir + "/out", 0.1); }),
             Contains("cannot read " + dir + "/missing.txt"));
  CHECK_THAT(user_error_of([&] { moe::prepare_text_dataset({}, dir + "/out", 0.1); }), Contains("no input files"));
  CHECK_THAT(user_error_of([&] { moe::prepare_text_dataset({dir + "/a.txt"}, dir + "/out", 1.0); }),
             Contains("val_fraction = 1 must be in [0, 1)"));
  CHECK_THAT(user_error_of([&] { moe::prepare_text_dataset({dir + "/a.txt"}, "", 0.1); }),
             Contains("output directory is empty"));
}

TEST_CASE("fortune files split into entries on lines holding only %") {
  using moe::split_fortune_entries;
  CHECK(split_fortune_entries("one\n%\ntwo\nlines\n%\n") == std::vector<std::string>{"one\n", "two\nlines\n"});
  CHECK(split_fortune_entries("a\n%\n%\n  \n%\n50% off\n%%\nlast") ==
        std::vector<std::string>{"a\n", "50% off\n%%\nlast"});
  CHECK(split_fortune_entries("").empty());
}

TEST_CASE("the default corpus is prepared once from the fortune files, then reused") {
  const std::string dir = fresh_dir("default_corpus");
  const std::string fortunes = dir + "/fortunes_src";
  fs::create_directories(fortunes + "/off");
  write_file(fortunes + "/beta", "b1\n%\nb2 line 1\nb2 line 2\n%\n");
  write_file(fortunes + "/alpha", "a1\n%\n%\na2\n");
  write_file(fortunes + "/alpha.dat", std::string("\x00\x00\x00\x02junk", 8));  // strfile index: skipped
  write_file(fortunes + "/beta.u8", "u8 copy: skipped\n");
  write_file(fortunes + "/off/rot13", "skipped: in a subdirectory\n");
  const std::string cache = dir + "/cache";

  const std::string root = moe::ensure_default_corpus(cache, fortunes);
  CHECK(root == cache + "/fortunes");
  // Files in name order (alpha, beta), one document per entry; val holds the last one.
  CHECK(split_tokens(root, "train") == byte_tokens({"a1\n", "a2\n", "b1\n"}));
  CHECK(split_tokens(root, "val") == byte_tokens({"b2 line 1\nb2 line 2\n"}));
  CHECK_THAT(read_file(root + "/README.txt"), Contains("4 entries of 2 fortune files"));
  check_no_temporaries(root);

  // Without its completion marker (an interrupted preparation) the corpus is prepared again.
  const ino_t first_inode = inode_of(root + "/train/tokens.npy");
  fs::remove(root + "/COMPLETE");
  CHECK(moe::ensure_default_corpus(cache, fortunes) == root);
  const ino_t second_inode = inode_of(root + "/train/tokens.npy");
  CHECK(second_inode != first_inode);
  CHECK(fs::exists(root + "/COMPLETE"));

  // A complete corpus is reused: nothing read, nothing written, even with the source gone.
  fs::remove_all(fortunes);
  CHECK(moe::ensure_default_corpus(cache, fortunes) == root);
  CHECK(inode_of(root + "/train/tokens.npy") == second_inode);

  fs::remove(root + "/COMPLETE");
  CHECK_THAT(user_error_of([&] { moe::ensure_default_corpus(cache, fortunes); }),
             Contains(fortunes + " does not exist") && Contains("run ./scripts/setup.sh"));
}

TEST_CASE("a fortune directory without text is a UserError") {
  const std::string dir = fresh_dir("empty_fortunes");
  write_file(dir + "/only.dat", "index");
  CHECK_THAT(user_error_of([&] { moe::ensure_default_corpus(dir + "/cache", dir); }),
             Contains("holds no fortune text"));
}

TEST_CASE("the fortunes are looked for in each prefix of MOE_TRAIN_PREFIX, then in Debian's folder") {
  const std::string dir = fresh_dir("fortune_prefixes");
  fs::create_directories(dir + "/b/share/games/fortunes");
  fs::create_directories(dir + "/c/share/games/fortunes");
  const std::string list = dir + "/a:" + dir + "/b:" + dir + "/c";  // a has none: skipped
  CHECK(moe::find_fortunes_dir(list.c_str()) == dir + "/b/share/games/fortunes");
  CHECK(moe::find_fortunes_dir((dir + "/a").c_str()) == moe::kFortunesDir);
  CHECK(moe::find_fortunes_dir("") == moe::kFortunesDir);
  CHECK(moe::find_fortunes_dir(nullptr) == moe::kFortunesDir);
}
