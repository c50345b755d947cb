// libFuzzer target over the two readers that take lengths and offsets from
// disk: the safetensors header (SafetensorsFile) and a checkpoint's
// metadata.json (parse_checkpoint_metadata). The first byte picks the reader.
// A UserError is the expected answer to a bad file; any other exception, a
// crash, or a sanitizer report is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "src/core/user_error.h"
#include "src/checkpoint/checkpoint_metadata.h"
#include "src/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] & 1) {
      moe::parse_checkpoint_metadata(bytes, "metadata.json");
    } else {
      static const std::string path = "/tmp/moe_train_fuzz_" + std::to_string(::getpid()) + ".safetensors";
      FILE* f = std::fopen(path.c_str(), "wb");
      std::fwrite(bytes.data(), 1, bytes.size(), f);
      std::fclose(f);
      const moe::SafetensorsFile file(path);
      for (const auto& [name, e] : file.entries()) {
        std::vector<float> values(static_cast<size_t>(e.numel));  // read() widens 16-bit dtypes to floats
        file.read(name, values.data());
      }
    }
  } catch (const moe::UserError&) {
  }
  return 0;
}
