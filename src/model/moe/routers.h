// The routers a config can name in model.moe_router: one table (routers.cc),
// one line per router, each line a name and the function that builds it.
// Config validation reads the names from here (config/router_names.h), so a
// new router is its file and its line, nothing else.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/model/moe/router.h"

namespace moe {

using RouterFactory = std::unique_ptr<Router> (*)(const RouterSetup& setup);

// The router named `name` (a name router_names() lists; anything else is a
// std::logic_error: config validation has already refused it).
std::unique_ptr<Router> make_router(const std::string& name, const RouterSetup& setup);

// Adds a router at run time, after the built-in ones (a program or a test
// that brings its own), with the [E, dim] weights it learns beside its gate
// (router_extra_weights) and whether its experts choose their tokens
// (router_experts_choose); a name already taken is a std::logic_error.
void register_router(const std::string& name, RouterFactory make, std::vector<std::string> extra_weights = {},
                     bool experts_choose = false);

// The built-in routers' factories, each defined in its own file.
std::unique_ptr<Router> make_softmax_topk_router(const RouterSetup& setup);
std::unique_ptr<Router> make_sigmoid_topk_router(const RouterSetup& setup);
std::unique_ptr<Router> make_noisy_topk_router(const RouterSetup& setup);
std::unique_ptr<Router> make_expert_choice_router(const RouterSetup& setup);

}  // namespace moe
