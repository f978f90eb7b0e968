// wrong_abi: a library that claims plugin ABI 2.0, another major than the host's,
// as one built against a future SDK that removed something would. The host must
// refuse it, naming both versions.
#include <jobhost/abi.h>

extern "C" __attribute__((visibility("default"))) uint32_t jobhost_plugin_abi_version(void) {
  return JOBHOST_ABI_MAKE(2, 0);
}

extern "C" __attribute__((visibility("default"))) const jobhost_plugin* jobhost_plugin_entry(void) {
  return nullptr;  // never reached: the version check comes first
}
