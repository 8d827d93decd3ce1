#include "models/mixer.h"

#include "models/attention.h"
#include "models/gated_deltanet.h"
#include "models/mla.h"

namespace moetron {

std::unique_ptr<TokenMixer> make_mixer(MixerKind kind, ParamTable& params,
                                       const std::string& prefix, const ModelDims& dims,
                                       const RopeTables& rope, const Runtime& rt) {
  switch (kind) {
    case MixerKind::attention:
      return std::make_unique<Attention>(params, prefix, dims, rope, rt);
    case MixerKind::mla:
      return std::make_unique<Mla>(params, prefix, dims, rope, rt);
    case MixerKind::gated_deltanet:
      return std::make_unique<GatedDeltaNet>(params, prefix, dims, rt);
  }
  MOETRON_CHECK(false, "unknown mixer kind ", static_cast<int>(kind));
  return nullptr;
}

}  // namespace moetron
