// `moe_train generate`: text from a checkpoint, one token at a time through
// the KV-cache decoder (model/decoder.h), on the CPU or a GPU. Byte-level
// vocabularies (what `moe_train prepare` writes): the prompt's bytes are its
// tokens, a new document begins before it, and sampling stops at the
// end-of-document token or after max_new_tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/config/job_config.h"

namespace moe {

struct SamplingOptions {
  double temperature = 1.0;  // 0: always the most likely token
  int64_t top_k = 0;         // keep the k most likely tokens; 0 keeps all
  double top_p = 1.0;        // keep the fewest tokens whose probability reaches p
  uint64_t seed = 0;
};

// The next token from `logits`, by the options; `u` is a uniform draw in [0, 1).
int32_t sample_token(const std::vector<float>& logits, const SamplingOptions& options, double u);

struct GenerateOptions {
  std::string prompt;
  int64_t max_new_tokens = 200;
  SamplingOptions sampling;
  std::string checkpoint;  // a step folder or a checkpoint folder; empty: load_path, else the latest in checkpoint.dir
};

struct GenerateResult {
  std::string checkpoint;
  int64_t step = 0;
  std::vector<int32_t> tokens;  // the new ones
  bool ended = false;           // the model ended the document
  double seconds = 0;           // decoding time, prompt included
};

// `on_text` receives each new token's text as it comes (a byte, or "[id]"
// for an id beyond the bytes). A prompt that does not fit model.max_seq_len
// with max_new_tokens, or a vocabulary without the bytes, is a UserError.
GenerateResult generate_text(const JobConfig& cfg, const GenerateOptions& options,
                             const std::function<void(const std::string&)>& on_text);

}  // namespace moe
