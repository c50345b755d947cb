// Hugging Face import: an exported model comes back bit for bit (every
// expert), under any layout each rank gets exactly its piece, sharded and
// 16-bit checkpoints read, and every mismatch is refused with one line naming
// the file or key; the safetensors reader's BF16 and F16 conversions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "src/config/derived.h"
#include "src/config/load.h"
#include "src/config/validate.h"
#include "src/core/bf16.h"
#include "src/core/user_error.h"
#include "src/parallel/mesh.h"
#include "src/interop/export_hf.h"
#include "src/interop/import_hf.h"
#include "src/checkpoint/safetensors.h"
#include "tests/train/small_model.h"
#include "tests/scratch_dir.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using moe::test::small_model;

namespace {

const std::vector<std::string> kMixtral = {"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=1",
                                           "model.moe_router=softmax_topk"};
const std::vector<std::string> kQwen = {"model.num_experts=4", "model.moe_top_k=2", "model.moe_frequency=2",
                                        "model.moe_router=softmax_topk"};

// The whole model initialised with `seed`, exported to a new folder.
std::string exported(const moe::ModelConfig& m, uint64_t seed) {
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  params.init(m, seed);
  const std::string dir = moe::test::fresh_dir("hf");
  moe::export_hf(m, params, dir);
  return dir;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

// Every parameter's shard (its local tensor without FSDP) bit for bit; packed experts one expert at a time.
void require_same(const moe::ParamStore& want, const moe::ParamStore& got) {
  REQUIRE(want.all().size() == got.all().size());
  for (size_t i = 0; i < want.all().size(); ++i) {
    const moe::Param &w = want.all()[i], &g = got.all()[i];
    INFO(w.spec.name);
    REQUIRE(w.shard.numel() == g.shard.numel());
    if (w.spec.expert_parallel && !w.fsdp_sharded()) {
      const int64_t experts = w.place.local_shape[0], per = w.shard.numel() / experts;
      for (int64_t e = 0; e < experts; ++e) {
        INFO("expert " << w.place.local_offset[0] + e);
        REQUIRE(same_bits(w.shard.f32() + e * per, g.shard.f32() + e * per, per));
      }
    } else {
      REQUIRE(same_bits(w.shard.f32(), g.shard.f32(), w.shard.numel()));
    }
  }
}

// Imports into a store initialised with another seed, and expects `m`'s seed-1 weights.
void round_trip(const moe::ModelConfig& m) {
  const std::string dir = exported(m, 1);
  moe::TensorPool pool;
  moe::ParamStore want(m, pool), got(m, pool);
  want.init(m, 1);
  got.init(m, 2);
  const moe::Param& embed = got["model.embed_tokens.weight"];
  REQUIRE_FALSE(same_bits(want["model.embed_tokens.weight"].value.f32(), embed.value.f32(), embed.value.numel()));
  moe::import_hf(m, dir, got);
  require_same(want, got);
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void write_json(const std::string& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(2); }

// A safetensors file of any dtype, written byte by byte (our writer only writes F32).
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

void write_raw(const std::string& path, const std::vector<RawTensor>& tensors) {
  nlohmann::ordered_json header;
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  const std::string text = header.dump();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
  out << text;
  for (const RawTensor& t : tensors) out << t.bytes;
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

RawTensor f32_raw(const moe::SafetensorsEntry& e) { return {e.name, "F32", e.shape, bytes_of(e.data)}; }

// Rewrites dir/model.safetensors after `edit` changes its tensors.
template <typename Edit>
void edit_weights(const std::string& dir, Edit edit) {
  std::vector<RawTensor> raw;
  for (const auto& e : moe::read_safetensors(dir + "/model.safetensors")) raw.push_back(f32_raw(e));
  edit(raw);
  write_raw(dir + "/model.safetensors", raw);
}

std::string import_error(const moe::ModelConfig& m, const std::string& dir) {
  moe::TensorPool pool;
  moe::ParamStore params(m, pool);
  try {
    moe::import_hf(m, dir, params);
  } catch (const moe::UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a Mixtral export imports back bit for bit, every expert") { round_trip(small_model(kMixtral)); }

TEST_CASE("noisy_topk exports as Mixtral without its noise gates, and import keeps them as they were") {
  std::vector<std::string> noisy = kMixtral;
  noisy.push_back("model.moe_router=noisy_topk");
  const moe::ModelConfig m = small_model(noisy);
  const std::string dir = exported(m, 1);
  for (const moe::SafetensorsEntry& e : moe::read_safetensors(dir + "/model.safetensors")) {
    CHECK(e.name.find("gate_noise") == std::string::npos);
  }
  CHECK(moe::hf_architecture(m) == "MixtralForCausalLM");
  moe::TensorPool pool;
  moe::ParamStore exported_from(m, pool), before(m, pool), got(m, pool);
  exported_from.init(m, 1);
  before.init(m, 2);
  got.init(m, 2);
  moe::import_hf(m, dir, got);
  int64_t noise_gates = 0;
  for (size_t i = 0; i < got.all().size(); ++i) {
    const moe::Param& p = got.all()[i];
    INFO(p.spec.name);
    const bool noise_gate = p.spec.name.find("gate_noise") != std::string::npos;
    noise_gates += noise_gate;
    const moe::Param& want = noise_gate ? before.all()[i] : exported_from.all()[i];
    CHECK(same_bits(want.shard.f32(), p.shard.f32(), p.shard.numel()));
  }
  CHECK(noise_gates == m.n_layers);
  // And a softmax_topk model of the same shape takes the same export.
  moe::ParamStore plain(small_model(kMixtral), pool);
  moe::import_hf(small_model(kMixtral), dir, plain);
  CHECK(same_bits(plain.all().front().shard.f32(), exported_from.all().front().shard.f32(),
                  plain.all().front().shard.numel()));
}

TEST_CASE("a Llama export imports back bit for bit, tied or not") {
  round_trip(small_model({}));
  round_trip(small_model({"model.tie_embeddings=true"}));
}

TEST_CASE("a Qwen2-MoE export imports back bit for bit") { round_trip(small_model(kQwen)); }

TEST_CASE("under tp=2 x ep=2 x dp_shard=2 every rank gets exactly its piece") {
  const auto m = small_model(kQwen);  // dense blocks (tp cuts) and MoE blocks (ep cuts)
  const std::string dir = exported(m, 1);
  moe::Layout layout;
  layout.tp = 2;
  layout.ep = 2;
  layout.dp_shard = 2;
  moe::TensorPool whole_pool;
  moe::ParamStore whole(m, whole_pool);
  whole.init(m, 1);
  // The global tensors rebuilt from every rank's imported piece, element by element.
  std::map<std::string, std::vector<float>> rebuilt;
  std::map<std::string, int64_t> filled;
  for (int64_t rank = 0; rank < layout.world(); ++rank) {
    const moe::MeshCoord coord = moe::mesh_coord(layout, rank);
    INFO("rank " << rank);
    moe::TensorPool pool;
    moe::ParamStore want(m, pool, layout, coord), got(m, pool, layout, coord);
    want.init(m, 1);  // initialisation keeps each rank's piece of the same global tensors
    got.init(m, 3);
    moe::import_hf(m, dir, got);
    require_same(want, got);
    for (const moe::Param& p : got.all()) {
      std::vector<float>& g = rebuilt[p.spec.name];
      g.resize(static_cast<size_t>(p.spec.numel()));
      const auto& ls = p.place.local_shape;
      for (int64_t k = 0; k < p.place.shard_valid; ++k) {
        // Element k of the shard is element shard_begin + k of the flat local block.
        int64_t local = p.place.shard_begin + k, at = 0, stride = 1;
        for (int d = static_cast<int>(ls.size()) - 1; d >= 0; --d) {
          at += (p.place.local_offset[d] + local % ls[d]) * stride;
          local /= ls[d];
          stride *= p.spec.shape[d];
        }
        g[static_cast<size_t>(at)] = p.shard.f32()[k];
      }
      filled[p.spec.name] += p.place.shard_valid;
    }
  }
  for (const moe::Param& p : whole.all()) {
    INFO(p.spec.name);
    // Replicas (tp for experts and norms, ep for the rest, ...) write the same values again.
    CHECK(filled[p.spec.name] % p.spec.numel() == 0);
    CHECK(same_bits(rebuilt[p.spec.name].data(), p.value.f32(), p.spec.numel()));
  }
}

TEST_CASE("a sharded checkpoint (model.safetensors.index.json) imports") {
  const auto m = small_model(kMixtral);
  const std::string dir = exported(m, 1);
  const auto all = moe::read_safetensors(dir + "/model.safetensors");
  fs::remove(dir + "/model.safetensors");
  std::vector<RawTensor> first, second;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (size_t i = 0; i < all.size(); ++i) {
    const bool one = i % 2 == 0;
    (one ? first : second).push_back(f32_raw(all[i]));
    index["weight_map"][all[i].name] = one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_raw(dir + "/model-00001-of-00002.safetensors", first);
  write_raw(dir + "/model-00002-of-00002.safetensors", second);
  write_json(dir + "/model.safetensors.index.json", index);

  moe::TensorPool pool;
  moe::ParamStore want(m, pool), got(m, pool);
  want.init(m, 1);
  got.init(m, 2);
  moe::import_hf(m, dir, got);
  require_same(want, got);

  fs::remove(dir + "/model-00002-of-00002.safetensors");
  CHECK_THAT(import_error(m, dir),
             Contains("model-00002-of-00002.safetensors: missing") && Contains("download every shard"));
}

TEST_CASE("a BF16 checkpoint imports as the bf16 values of the weights") {
  const auto m = small_model(kMixtral);
  const std::string dir = exported(m, 1);
  edit_weights(dir, [](std::vector<RawTensor>& raw) {
    for (RawTensor& t : raw) {
      std::vector<float> f(t.bytes.size() / 4);
      std::memcpy(f.data(), t.bytes.data(), t.bytes.size());
      std::vector<uint16_t> h(f.size());
      for (size_t i = 0; i < f.size(); ++i) h[i] = moe::f32_to_bf16(f[i]);
      t = {t.name, "BF16", t.shape, bytes_of(h)};
    }
  });
  moe::TensorPool pool;
  moe::ParamStore want(m, pool), got(m, pool);
  want.init(m, 1);
  got.init(m, 2);
  for (moe::Param& p : want.all()) {
    for (int64_t i = 0; i < p.value.numel(); ++i)
      p.value.f32()[i] = moe::bf16_to_f32(moe::f32_to_bf16(p.value.f32()[i]));
  }
  moe::import_hf(m, dir, got);
  require_same(want, got);
}

TEST_CASE("the safetensors reader converts BF16 and F16 to fp32 exactly") {
  const std::string path = moe::test::fresh_dir("st16") + "/a.safetensors";
  // F16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, inf, 2^-14 (smallest normal).
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0x0400};
  // BF16: 1, -2, 3.140625, 1e38-ish, smallest subnormal, -0, -inf.
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x4049, 0x7E96, 0x0001, 0x8000, 0xFF80};
  write_raw(path, {{"h", "F16", {2, 4}, bytes_of(f16)},
                   {"b", "BF16", {7}, bytes_of(bf16)},
                   {"i", "I64", {1}, bytes_of(std::vector<int64_t>{7})}});
  const moe::SafetensorsFile file(path);
  CHECK(file.entry("h").numel == 8);
  CHECK(file.entry("b").dtype == "BF16");
  std::vector<float> h(8), b(7);
  file.read("h", h.data());
  file.read("b", b.data());
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(h == std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24), -0.0f, inf, std::ldexp(1.0f, -14)});
  CHECK(std::signbit(h[5]));
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -2.0f);
  CHECK(b[2] == 3.140625f);
  CHECK(b[3] == moe::bf16_to_f32(0x7E96));
  CHECK(b[4] == std::ldexp(1.0f, -133));
  CHECK((b[5] == 0.0f && std::signbit(b[5])));
  CHECK(b[6] == -inf);
  // An I64 tensor opens (HF files hold such buffers) but is not read as weights.
  std::vector<float> i(1);
  CHECK_THROWS_WITH(file.read("i", i.data()), Contains("tensor i is I64") && Contains("F32, BF16 and F16"));
}

TEST_CASE("config.json mismatches are refused with the key, both values and the fix") {
  const auto m = small_model(kMixtral);
  const std::string dir = exported(m, 1);
  const nlohmann::json good = read_json(dir + "/config.json");
  auto refused = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json c = good;
    if (value.is_discarded()) {
      c.erase(key);
    } else {
      c[key] = value;
    }
    write_json(dir + "/config.json", c);
    return import_error(m, dir);
  };
  const auto dropped = nlohmann::json(nlohmann::json::value_t::discarded);
  CHECK_THAT(refused("hidden_size", 32),
             Contains("config.json: hidden_size = 32, this model's is 16 (model.dim); set model.dim = 32"));
  CHECK_THAT(refused("num_local_experts", 8), Contains("num_local_experts = 8") && Contains("model.num_experts"));
  CHECK_THAT(refused("num_experts_per_tok", 1), Contains("num_experts_per_tok = 1") && Contains("model.moe_top_k"));
  CHECK_THAT(refused("intermediate_size", 64), Contains("intermediate_size = 64, this model's is 48"));
  CHECK_THAT(refused("num_key_value_heads", 4), Contains("num_key_value_heads = 4") && Contains("model.n_kv_heads"));
  CHECK_THAT(refused("num_key_value_heads", dropped), Contains("num_key_value_heads = 4"));  // HF default: n_heads
  CHECK_THAT(refused("tie_word_embeddings", true),
             Contains("tie_word_embeddings = true") && Contains("model.tie_embeddings"));
  CHECK_THAT(refused("rope_theta", 1e6), Contains("rope_theta = 1000000.0") && Contains("model.rope_theta"));
  CHECK_THAT(refused("vocab_size", dropped), Contains("config.json: has no vocab_size"));
  CHECK_THAT(refused("architectures", nlohmann::json::array({"LlamaForCausalLM"})),
             Contains("architectures = LlamaForCausalLM, this model is MixtralForCausalLM"));
  CHECK_THAT(refused("sliding_window", 64), Contains("sliding_window = 64") && Contains("model.max_seq_len"));
  CHECK_THAT(refused("rope_scaling", {{"type", "linear"}}), Contains("rope_scaling"));
  // One line each, as the command line prints it.
  const std::string e = refused("hidden_size", 32);
  CHECK(e.find('\n') == std::string::npos);
  write_json(dir + "/config.json", good);
  CHECK(import_error(m, dir).empty());
  fs::remove(dir + "/config.json");
  CHECK_THAT(import_error(m, dir), Contains("config.json: missing"));
}

TEST_CASE("wrong, missing, unexpected and unreadable tensors are refused naming the file and tensor") {
  const auto m = small_model(kMixtral);
  const std::string w2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
  {
    const std::string dir = exported(m, 1);
    edit_weights(dir, [&](std::vector<RawTensor>& raw) {
      for (RawTensor& t : raw) {
        if (t.name == w2) t.shape = {48, 16};  // transposed: same bytes, wrong shape
      }
    });
    CHECK_THAT(import_error(m, dir), Contains("model.safetensors: tensor " + w2 +
                                              " has shape [48, 16], this model "
                                              "needs [16, 48]"));
  }
  {
    const std::string dir = exported(m, 1);
    edit_weights(dir, [&](std::vector<RawTensor>& raw) {
      raw.erase(std::remove_if(raw.begin(), raw.end(), [&](const RawTensor& t) { return t.name == w2; }), raw.end());
    });
    CHECK_THAT(import_error(m, dir), Contains("has no tensor " + w2));
  }
  {  // a third layer: the checkpoint is of a deeper model
    const std::string dir = exported(m, 1);
    edit_weights(dir, [](std::vector<RawTensor>& raw) {
      raw.push_back({"model.layers.2.input_layernorm.weight", "F32", {16}, std::string(64, '\0')});
    });
    CHECK_THAT(import_error(m, dir), Contains("tensor model.layers.2.input_layernorm.weight is not part of a "
                                              "MixtralForCausalLM of this config"));
  }
  {  // rotary buffers and foreign heads are skipped
    const std::string dir = exported(m, 1);
    edit_weights(dir, [](std::vector<RawTensor>& raw) {
      raw.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}, std::string(8, '\0')});
      raw.push_back({"score.weight", "F32", {2, 16}, std::string(128, '\0')});
    });
    CHECK(import_error(m, dir).empty());
  }
  {
    const std::string dir = exported(m, 1);
    edit_weights(dir, [](std::vector<RawTensor>& raw) {
      for (RawTensor& t : raw) {
        if (t.name == "model.norm.weight") t = {t.name, "I32", t.shape, t.bytes};
      }
    });
    CHECK_THAT(import_error(m, dir), Contains("tensor model.norm.weight is I32"));
  }
  {
    const std::string dir = exported(m, 1);
    const auto size = fs::file_size(dir + "/model.safetensors");
    fs::resize_file(dir + "/model.safetensors", size - 100);
    CHECK_THAT(import_error(m, dir), Contains("model.safetensors: tensor") && Contains("truncated"));
  }
  {
    const std::string dir = exported(m, 1);
    fs::remove(dir + "/model.safetensors");
    CHECK_THAT(import_error(m, dir), Contains("has neither model.safetensors nor model.safetensors.index.json"));
  }
  CHECK_THAT(import_error(m, moe::test::fresh_dir("hf") + "/nowhere"), Contains("no such folder"));
}

TEST_CASE("Qwen2-MoE tensors this model has no counterpart for must be zero") {
  const auto m = small_model(kQwen);
  const std::string dir = exported(m, 1);
  edit_weights(dir, [](std::vector<RawTensor>& raw) {
    for (RawTensor& t : raw) {
      if (t.name == "model.layers.0.self_attn.k_proj.bias") {
        const float one = 1.0f;
        std::memcpy(&t.bytes[4], &one, 4);
      }
    }
  });
  CHECK_THAT(import_error(m, dir),
             Contains("tensor model.layers.0.self_attn.k_proj.bias holds 1") && Contains("cannot be imported exactly"));
}

TEST_CASE("models no HF architecture represents are refused before reading") {
  const auto m = small_model({"model.num_experts=4", "model.moe_router=sigmoid_topk"});
  CHECK_THAT(import_error(m, moe::test::fresh_dir("hf")),
             Contains("--init-from-hf: model.moe_router = \"sigmoid_topk\""));
}
