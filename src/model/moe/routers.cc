#include "src/model/moe/routers.h"

#include <stdexcept>
#include <utility>
#include <vector>

#include "src/config/router_names.h"
#include "src/model/param_names.h"

namespace moe {
namespace {

struct Entry {
  std::string name;
  RouterFactory make;
  std::vector<std::string> extra_weights;  // [E, dim] each, named within the MoE block
  bool experts_choose = false;             // router_experts_choose
};

std::vector<Entry>& registry();

const Entry* find(const std::string& name) {
  for (const Entry& e : registry()) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::vector<Entry>& registry() {
  static std::vector<Entry> routers = {
      {"softmax_topk", make_softmax_topk_router, {}},  // Mixtral: softmax, top-k, weights renormalised
      {"sigmoid_topk", make_sigmoid_topk_router, {}},  // DeepSeek-V3: sigmoid, a balance bias for the choice
      {"noisy_topk", make_noisy_topk_router, {param_name::kRouterNoiseGate}},  // Shazeer 2017: learned noise
      {"expert_choice", make_expert_choice_router, {}, true},  // Zhou 2022: experts take their top tokens
  };
  return routers;
}

}  // namespace

std::unique_ptr<Router> make_router(const std::string& name, const RouterSetup& setup) {
  if (const Entry* e = find(name)) return e->make(setup);
  throw std::logic_error("make_router: no router named \"" + name + "\"");
}

void register_router(const std::string& name, RouterFactory make, std::vector<std::string> extra_weights,
                     bool experts_choose) {
  if (find(name)) throw std::logic_error("register_router: \"" + name + "\" is already a router");
  registry().push_back({name, make, std::move(extra_weights), experts_choose});
}

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const Entry& e : registry()) names.push_back(e.name);
  return names;
}

std::vector<std::string> router_extra_weights(const std::string& router) {
  const Entry* e = find(router);
  return e ? e->extra_weights : std::vector<std::string>{};
}

bool router_experts_choose(const std::string& router) {
  const Entry* e = find(router);
  return e != nullptr && e->experts_choose;
}

}  // namespace moe
