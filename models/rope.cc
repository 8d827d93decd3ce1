#include "models/rope.h"

namespace moetron {

RopeTables RopeTables::make(const ModelDims& d, int64_t positions) {
  RopeTables r{Tensor::empty({positions, d.head_dim / 2}),
               Tensor::empty({positions, d.head_dim / 2}), d.rope_style};
  ops::rope_tables(positions, d.head_dim, d.rope_theta, r.cos, r.sin);
  return r;
}

}  // namespace moetron
