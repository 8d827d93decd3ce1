#include "models/rope.h"

namespace moetron {

RopeTables RopeTables::make(const ModelDims& d, int64_t positions, Device device) {
  RopeTables r{Tensor::empty({positions, d.head_dim / 2}, DType::f32, device),
               Tensor::empty({positions, d.head_dim / 2}, DType::f32, device), d.rope_style};
  ops::rope_tables(positions, d.head_dim, d.rope_theta, r.cos, r.sin);
  return r;
}

}  // namespace moetron
