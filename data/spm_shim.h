// The C ABI between moetron_data and the SentencePiece shim module (spm_shim.cc).
//
// Why a separately loaded module: libsentencepiece bundles protobuf-lite 3.14 and exports its
// symbols. A process that also links the system libprotobuf (configs/ does) resolves one
// library's protobuf calls into the other's and aborts at startup. The shim is loaded with
// dlmopen(LM_ID_NEWLM) into its own link-map namespace, where SentencePiece sees only its own
// protobuf (RTLD_DEEPBIND is not enough: SentencePiece's logging then writes to an
// uninitialized std::cerr when the executable copy-relocates it). Only C types cross this
// boundary, and nothing allocated on one side is freed on the other (the namespaces have
// separate C++ runtimes).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

#define MOETRON_SPM_ABI_VERSION 1u
#define MOETRON_SPM_ENTRY "moetron_spm_get_api"

typedef void (*moetron_spm_bytes_fn)(void* ctx, const char* data, size_t size);
typedef void (*moetron_spm_ids_fn)(void* ctx, const int32_t* ids, size_t count);
// Sets *data/*size to the next training sentence; returns 0 at the end.
typedef int (*moetron_spm_next_fn)(void* ctx, const char** data, size_t* size);

struct moetron_spm_sink {
  moetron_spm_bytes_fn fn;
  void* ctx;
};

struct moetron_spm_api {
  uint32_t abi_version;
  // Trains a model from `n_options` key=value trainer options and the sentences `next` yields;
  // the serialized model goes to `model`. Returns 0 on success, else reports through `error`.
  int (*train)(const char* const* keys, const char* const* values, size_t n_options, uint32_t seed,
               moetron_spm_next_fn next, void* next_ctx, moetron_spm_sink model,
               moetron_spm_sink error);
  // Returns a processor for a serialized model, or null after reporting through `error`.
  void* (*load)(const char* model, size_t size, moetron_spm_sink error);
  void (*destroy)(void* processor);
  int (*vocab_size)(const void* processor);
  int (*encode)(const void* processor, const char* text, size_t size, moetron_spm_ids_fn out,
                void* out_ctx, moetron_spm_sink error);
  int (*decode)(const void* processor, const int32_t* ids, size_t count, moetron_spm_sink out,
                moetron_spm_sink error);
};

typedef const moetron_spm_api* (*moetron_spm_entry_fn)(void);
}
