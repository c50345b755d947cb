// The name of a kernel, from its address: the launch check needs it to find
// the kernel's row in the launch-resource table (registers and static shared
// memory as ptxas reported them for the real build of the same source).
#pragma once

#include <string>

namespace emu {

// The mangled name of the function at `address`, read from the symbol table
// (.symtab) of the executable or shared object that holds it; kernels are
// usually in anonymous namespaces, so the dynamic symbol table would not
// have them. Empty when the object has no symbol table (a stripped binary).
std::string kernel_symbol(const void* address);

}  // namespace emu
