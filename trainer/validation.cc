#include "trainer/validation.h"

#include <string>

#include "core/check.h"
#include "data/loader.h"

namespace moetron {

using detail::concat;

int64_t validation_batches(const config::RunConfig& cfg, int dp) {
  const config::LoggingConfig& lc = cfg.logging();
  const int64_t sequences = lc.val_sequences();
  if (sequences == 0) return lc.val_batches();
  const int64_t round = int64_t{dp} * cfg.data().micro_batch_size();
  if (sequences % round != 0) {
    const int64_t below = sequences / round * round, above = below + round;
    throw Error(concat("logging.val_sequences = ", sequences, " must be a multiple of dp x ",
                       "data.micro_batch_size = ", dp, " x ", cfg.data().micro_batch_size(), " = ",
                       round, ", so that this layout validates on the same ", sequences,
                       " windows as any other (nearest valid: ",
                       below > 0 ? concat(below, " or ") : std::string(), above, ")"));
  }
  return sequences / cfg.data().micro_batch_size();
}

std::optional<Losses> validate(Model& model, const ProcessGroups& groups,
                               const data::Dataset& split, const config::RunConfig& cfg,
                               int64_t batches, float mtp_weight,
                               const std::function<bool()>& stop) {
  const int dp = groups.layout().dp, dp_rank = groups.dp_rank();
  const ModelDims& d = model.dims();
  // The same windows every time: a fixed seed (apart from training's) and a fresh cursor.
  const uint64_t seed = cfg.seed() ^ 0x5eed5eedull;
  data::Loader loader(split, static_cast<int>(d.window()), static_cast<int>(d.batch), seed, dp_rank,
                      dp);
  std::vector<int32_t> tokens(static_cast<size_t>(d.batch * d.window()));
  // The batches' sums stay on the device until the end; a batch this rank drops goes to `spare`.
  Tensor sums = model.new_sums(), spare = model.new_sums();
  for (int64_t draw = 0; draw * dp < batches; ++draw) {
    if (stop && stop()) return std::nullopt;
    // The last round may not need every rank (legacy val_batches). A rank without a batch still
    // runs one and drops its losses: the MoE layers' all-to-all spans data-parallel ranks when
    // ep > tp.
    loader.next(tokens);
    model.evaluate(tokens, draw * dp + dp_rank < batches ? sums : spare);
  }
  if (groups.dp()) groups.dp()->all_reduce(sums);
  return model.losses(ops::to_host<double>(sums), batches, mtp_weight);
}

}  // namespace moetron
