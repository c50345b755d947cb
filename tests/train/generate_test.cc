// `moe_train generate`: sampling rules (temperature, top-k, top-p, greedy
// ties), and the command on a trained checkpoint: greedy and seeded sampling
// repeat exactly, the prompt comes first, and bad requests are one line.
#include <catch2/catch.hpp>

#include <fstream>
#include <vector>

#include "src/train/generate.h"
#include "tests/cli_run.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("sample_token: greedy, top-k, top-p and the draw") {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, -1.0f};
  moe::SamplingOptions greedy;
  greedy.temperature = 0;
  CHECK(moe::sample_token(logits, greedy, 0.99) == 1);  // the first of two equal maxima
  moe::SamplingOptions top1;
  top1.top_k = 1;
  CHECK(moe::sample_token(logits, top1, 0.99) == 1);
  // Order by probability: 1, 2 (e^3 each), 3 (e^2), 0 (e^1), 4 (e^-1).
  moe::SamplingOptions all;
  CHECK(moe::sample_token(logits, all, 0.0) == 1);
  CHECK(moe::sample_token(logits, all, 0.999999) == 4);
  const double e3 = std::exp(3.0), e2 = std::exp(2.0), e1 = std::exp(1.0), em1 = std::exp(-1.0);
  const double z = 2 * e3 + e2 + e1 + em1;
  CHECK(moe::sample_token(logits, all, (e3 + 0.5 * e3) / z) == 2);
  CHECK(moe::sample_token(logits, all, (2 * e3 + 0.5 * e2) / z) == 3);
  // top-p 0.6: the two e^3 tokens hold 0.43 each, so the nucleus is those two.
  moe::SamplingOptions nucleus;
  nucleus.top_p = 0.6;
  CHECK(moe::sample_token(logits, nucleus, 0.999) == 2);
  // Temperature 0.01 makes the tail vanish: the draw stays among the maxima.
  moe::SamplingOptions cold;
  cold.temperature = 0.01;
  CHECK(moe::sample_token(logits, cold, 0.9) == 2);
}

TEST_CASE("generate from a trained checkpoint: repeatable, prompt first, bad requests refused") {
  const std::string dir = moe::test::fresh_dir("generate");
  std::vector<std::string> prepare = {"prepare", "--output=" + dir + "/data"};
  for (int f = 0; f < 3; ++f) {
    prepare.push_back(dir + "/" + std::to_string(f) + ".txt");
    std::ofstream text(prepare.back());
    for (int i = 0; i < 200; ++i) text << "the cat sat on the mat. " << (i % 3 ? "the dog sat too.\n" : "\n");
  }
  REQUIRE(moe::test::run_cli_reporting(prepare).code == 0);
  const std::vector<std::string> model = {"configs/train/debug_moe.toml",
                                          "--model.dim=32",
                                          "--model.n_layers=2",
                                          "--model.ffn_hidden_dim=64",
                                          "--model.max_seq_len=64",
                                          "--train.seq_len=32",
                                          "--train.batch_size=4",
                                          "--train.device=cpu",
                                          "--optimizer.lr=1e-2",
                                          "--data.dataset_path=" + dir + "/data/train",
                                          "--checkpoint.dir=" + dir + "/run"};
  REQUIRE(moe::test::run_cli_reporting(moe::test::with(model, {"--train.max_steps=30"})).code == 0);
  auto generate = [&](const std::vector<std::string>& options) {
    return moe::test::run_cli_captured(moe::test::with(moe::test::with({"generate"}, model), options));
  };
  const auto greedy = generate({"--prompt", "the cat", "--max-new-tokens", "20", "--temperature", "0"});
  INFO(greedy.err);
  REQUIRE(greedy.code == 0);
  CHECK_THAT(greedy.out, StartsWith("the cat"));
  CHECK(greedy.out.size() <= std::string("the cat").size() + 20 + 1);
  CHECK(generate({"--prompt=the cat", "--max-new-tokens=20", "--temperature=0"}).out == greedy.out);
  const auto a = generate({"--prompt=the", "--max-new-tokens=30", "--temperature=1.5", "--seed=1"});
  const auto b = generate({"--prompt=the", "--max-new-tokens=30", "--temperature=1.5", "--seed=1"});
  const auto c = generate({"--prompt=the", "--max-new-tokens=30", "--temperature=1.5", "--seed=2"});
  REQUIRE(a.code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);

  auto refused = [&](const std::vector<std::string>& options, const std::string& words) {
    const auto r = generate(options);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Contains(words));
  };
  refused({"--prompt=" + std::string(60, 'x'), "--max-new-tokens=10"}, "more than model.max_seq_len = 64");
  refused({"--prompt=x", "--temperature=-1"}, "--temperature=-1: must be a number in [0, 100]");
  refused({"--prompt=x", "--top-p=0"}, "--top-p=0: must be a number in (0, 1]");
  refused({"--max-new-tokens=3"}, "needs a config file and --prompt");
  refused({"--prompt=x", "--max-new-tokens=5", "--checkpoint.dir=" + dir + "/nothing"},
          "holds no checkpoint to sample from");
  refused({"--prompt=x", "--model.vocab_size=200"}, "needs ids up to 256");
}
