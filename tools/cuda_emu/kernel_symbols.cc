#include "tools/cuda_emu/kernel_symbols.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>

namespace emu {
namespace {

// Function symbols of every loaded object, by run-time address; read once.
struct SymbolIndex {
  std::map<uintptr_t, std::string> functions;

  void add_object(const char* path, uintptr_t base) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
      close(fd);
      return;
    }
    void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return;
    const auto* bytes = static_cast<const unsigned char*>(map);
    const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(bytes);
    if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
        eh->e_shoff + uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr) <= static_cast<uint64_t>(st.st_size)) {
      const auto* sections = reinterpret_cast<const Elf64_Shdr*>(bytes + eh->e_shoff);
      for (int i = 0; i < eh->e_shnum; ++i) {
        if (sections[i].sh_type != SHT_SYMTAB || sections[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr& strings = sections[sections[i].sh_link];
        const auto* symbols = reinterpret_cast<const Elf64_Sym*>(bytes + sections[i].sh_offset);
        const size_t count = sections[i].sh_size / sizeof(Elf64_Sym);
        for (size_t s = 0; s < count; ++s) {
          if (ELF64_ST_TYPE(symbols[s].st_info) != STT_FUNC || symbols[s].st_value == 0 ||
              symbols[s].st_name >= strings.sh_size)
            continue;
          const char* name = reinterpret_cast<const char*>(bytes + strings.sh_offset + symbols[s].st_name);
          functions.emplace(base + symbols[s].st_value, name);
        }
      }
    }
    munmap(map, static_cast<size_t>(st.st_size));
  }
};

int add_loaded_object(dl_phdr_info* info, size_t, void* index) {
  const char* path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
  static_cast<SymbolIndex*>(index)->add_object(path, info->dlpi_addr);
  return 0;
}

}  // namespace

std::string kernel_symbol(const void* address) {
  static std::once_flag once;
  static SymbolIndex index;
  std::call_once(once, [] { dl_iterate_phdr(add_loaded_object, &index); });
  const auto it = index.functions.find(reinterpret_cast<uintptr_t>(address));
  return it == index.functions.end() ? std::string() : it->second;
}

}  // namespace emu
