#include "src/model/layer_common.h"

#include <memory>

namespace moe {

ModelParallel ModelParallel::single_process() {
  static const std::unique_ptr<Communicator> tp = single_process_world(), ep = single_process_world();
  return ModelParallel{tp.get(), ep.get(), nullptr};
}

}  // namespace moe
