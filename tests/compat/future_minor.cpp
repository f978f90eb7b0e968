// future_minor: a library that declares the host's own ABI major with the next
// minor, as a plugin built against a newer SDK would. The host must refuse it
// naming both versions, before it reads the descriptor (whose layout it cannot
// know).
#include <jobhost/abi.h>

extern "C" __attribute__((visibility("default"))) uint32_t jobhost_plugin_abi_version(void) {
  return JOBHOST_ABI_MAKE(JOBHOST_ABI_MAJOR, JOBHOST_ABI_MINOR + 1);
}

extern "C" __attribute__((visibility("default"))) const jobhost_plugin* jobhost_plugin_entry(void) {
  return nullptr;  // never reached: the version check comes first
}
