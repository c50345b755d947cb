#include "src/model/moe/routers.h"

#include <stdexcept>
#include <utility>
#include <vector>

#include "src/config/router_names.h"

namespace moe {
namespace {

std::vector<std::pair<std::string, RouterFactory>>& registry() {
  static std::vector<std::pair<std::string, RouterFactory>> routers = {
      {"softmax_topk", make_softmax_topk_router},  // Mixtral: softmax, top-k, weights renormalised
      {"sigmoid_topk", make_sigmoid_topk_router},  // DeepSeek-V3: sigmoid, a balance bias for the choice
  };
  return routers;
}

}  // namespace

std::unique_ptr<Router> make_router(const std::string& name, const RouterSetup& setup) {
  for (const auto& [known, make] : registry()) {
    if (known == name) return make(setup);
  }
  throw std::logic_error("make_router: no router named \"" + name + "\"");
}

void register_router(const std::string& name, RouterFactory make) {
  for (const auto& entry : registry()) {
    if (entry.first == name) throw std::logic_error("register_router: \"" + name + "\" is already a router");
  }
  registry().emplace_back(name, make);
}

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const auto& entry : registry()) names.push_back(entry.first);
  return names;
}

}  // namespace moe
