// The names model.moe_router accepts, in the order messages list them.
//
// Defined by the model's router table (src/model/moe/routers.cc, in the
// library //src/model, linked whole), which is the one list of routers: validation checks
// the name against it without knowing what a router is, so adding a router
// never touches the config. A program that reads configs links that library.
#pragma once

#include <string>
#include <vector>

namespace moe {

std::vector<std::string> router_names();

// The weights `router` learns beside its gate, each [num_experts, dim], by
// name within the MoE block ("gate_noise.weight" for noisy_topk): the
// parameter registry declares them for every MoE block. Empty for most routers.
std::vector<std::string> router_extra_weights(const std::string& router);

// Whether under `router` the experts choose their tokens (expert_choice)
// rather than each token its top-k experts: a token then offers itself to
// every expert (num_experts slots) and each expert keeps exactly its
// capacity, the tokens that score it highest.
bool router_experts_choose(const std::string& router);

}  // namespace moe
