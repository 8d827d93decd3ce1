// moetron's next-token logits of a checkpoint, for the Python checks of an export
// (tests/reference/check_export.py, check_transformers_export.py):
//
//   export_logits CKPT TOKENS_OUT LOGITS_OUT BATCH SEQ [SEED]
//
// builds the model from the checkpoint's saved config, loads its weights (checkpoint::load, one
// rank), draws BATCH x SEQ token ids uniformly from [0, vocab_size) with SEED (default 1), and
// writes them (int32) and the main head's logits (float32 [BATCH*SEQ, vocab_size]) as raw
// little-endian arrays.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/hash.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/checkpoint/export_logits.h"

int main(int argc, char** argv) {
  if (argc < 6 || argc > 7) {
    std::fprintf(stderr, "usage: export_logits CKPT TOKENS_OUT LOGITS_OUT BATCH SEQ [SEED]\n");
    return 2;
  }
  try {
    const int64_t batch = std::stoll(argv[4]), seq = std::stoll(argv[5]);
    const uint64_t seed = argc == 7 ? std::stoull(argv[6]) : 1;
    const moetron::config::RunConfig cfg = moetron::checkpoint::saved_config(argv[1]);
    std::vector<int32_t> tokens;
    const moetron::Tensor logits =
        moetron::testing::checkpoint_logits(argv[1], cfg, batch, seq, seed, tokens);
    std::ofstream(argv[2], std::ios::binary)
        .write(reinterpret_cast<const char*>(tokens.data()),
               static_cast<std::streamsize>(tokens.size() * sizeof(int32_t)));
    std::ofstream(argv[3], std::ios::binary)
        .write(static_cast<const char*>(logits.raw_data()),
               static_cast<std::streamsize>(logits.numel() * sizeof(float)));
    std::printf("export_logits: %lld x %lld tokens, logits [%lld, %lld]\n",
                static_cast<long long>(batch), static_cast<long long>(seq),
                static_cast<long long>(logits.shape()[0]),
                static_cast<long long>(logits.shape()[1]));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_logits: %s\n", e.what());
    return 1;
  }
}
