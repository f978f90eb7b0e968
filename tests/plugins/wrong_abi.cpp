// wrong_abi: a library that claims plugin ABI version 99, as one built against
// a future SDK would. The host must refuse it, naming both versions.
#include <jobhost/abi.h>

extern "C" __attribute__((visibility("default"))) uint32_t jobhost_plugin_abi_version(void) {
  return 99;
}

extern "C" __attribute__((visibility("default"))) const jobhost_plugin* jobhost_plugin_entry(void) {
  return nullptr;  // never reached: the version check comes first
}
