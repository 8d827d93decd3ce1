#include "models/dims.h"

#include "core/check.h"

namespace moetron {

void check_split(const ModelDims& d, const Runtime& rt) {
  const int64_t tp = rt.tp.size, ep = rt.ep.size;
  MOETRON_CHECK(d.heads % tp == 0 && d.intermediate % tp == 0, "tp ", tp,
                " does not divide the heads or FFN width");
  for (MixerKind m : d.mixers) {
    MOETRON_CHECK(m != MixerKind::attention || d.kv_heads % tp == 0, "tp ", tp,
                  " does not divide the KV heads");
    MOETRON_CHECK(
        m != MixerKind::gated_deltanet || (d.gdn.k_heads % tp == 0 && d.gdn.v_heads % tp == 0),
        "tp ", tp, " does not divide the linear attention's heads");
  }
  if (d.moe.experts > 0)
    MOETRON_CHECK(d.moe.experts % ep == 0 && (d.moe.shared * d.moe.intermediate) % tp == 0 &&
                      d.rows() % tp == 0,
                  "tp ", tp, " / ep ", ep, " do not divide the MoE layer");
}

}  // namespace moetron
