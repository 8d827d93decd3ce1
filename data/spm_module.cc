#include "data/spm_module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "core/check.h"

#ifndef MOETRON_SPM_SHIM_PATH
#define MOETRON_SPM_SHIM_PATH ""
#endif

namespace moetron::data {
namespace {

const moetron_spm_api* load_module() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("MOETRON_SPM_SHIM"); env && *env) candidates.push_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back((exe.parent_path() / "libmoetron_spm.so").string());
  if (*MOETRON_SPM_SHIM_PATH) candidates.push_back(MOETRON_SPM_SHIM_PATH);

  std::string tried;
  for (const auto& path : candidates) {
    if (!std::filesystem::exists(path, ec)) {
      tried += "\n  " + path + ": not found";
      continue;
    }
    // A new link-map namespace keeps SentencePiece's protobuf apart from ours (spm_shim.h). The
    // handle is kept for the life of the process: unloading at exit races static destructors.
    void* handle = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      tried += "\n  " + path + ": " + ::dlerror();
      continue;
    }
    auto entry = reinterpret_cast<moetron_spm_entry_fn>(::dlsym(handle, MOETRON_SPM_ENTRY));
    const moetron_spm_api* api = entry ? entry() : nullptr;
    if (!api || api->abi_version != MOETRON_SPM_ABI_VERSION) {
      tried += "\n  " + path + ": not a moetron SentencePiece module of ABI version " +
               std::to_string(MOETRON_SPM_ABI_VERSION);
      continue;
    }
    return api;
  }
  throw Error(
      "cannot load the SentencePiece module libmoetron_spm.so (set MOETRON_SPM_SHIM to its "
      "path); tried:" +
      tried);
}

}  // namespace

const moetron_spm_api& spm_api() {
  static std::mutex mutex;
  static const moetron_spm_api* api = nullptr;
  std::lock_guard lock(mutex);
  if (!api) api = load_module();  // retried on failure, so a later fixed env var can succeed
  return *api;
}

}  // namespace moetron::data
