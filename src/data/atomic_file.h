// Writing a file so that readers see the old file or the whole new one, never
// a part: the contents go to a temporary sibling, then rename() replaces the
// target in one step (atomic within a file system).
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace moe {

// `write_contents` writes the whole file to the stream it is given. A failure
// to create, write or rename is a UserError; the temporary file is removed.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write_contents);

}  // namespace moe
