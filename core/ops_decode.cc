// Shape, dtype and device checks of the decoding ops, then the backend.
#include "core/ops_decode.h"

#include "core/backend.h"
#include "core/ops.h"

namespace moetron::ops {
namespace {
void require_f32(const Tensor& t, const char* op) {
  MOETRON_CHECK(t.defined() && t.dtype() == DType::f32, op, ": tensors must be f32");
}
}  // namespace

void attention_decode(const Tensor& q, const Tensor& keys_t, const Tensor& values, int64_t start,
                      Tensor& out) {
  for (const Tensor* t : {&q, &keys_t, &values, static_cast<const Tensor*>(&out)})
    require_f32(*t, "attention_decode");
  MOETRON_CHECK(q.ndim() == 3 && keys_t.ndim() == 3 && values.ndim() == 3 &&
                    keys_t.dim(0) == values.dim(1) && keys_t.dim(1) == values.dim(2) &&
                    keys_t.dim(2) == values.dim(0) && q.dim(2) == values.dim(2) &&
                    q.dim(1) % values.dim(1) == 0 && out.shape() == q.shape(),
                "attention_decode: q ", shape_str(q.shape()), " keys_t ", shape_str(keys_t.shape()),
                " values ", shape_str(values.shape()), " out ", shape_str(out.shape()));
  MOETRON_CHECK(start >= 0 && start + q.dim(0) <= values.dim(0), "attention_decode: positions [",
                start, ", ", start + q.dim(0), ") outside a cache of ", values.dim(0));
  backend_of("attention_decode", {&q, &keys_t, &values, &out})
      .attention_decode(q, keys_t, values, start, out);
}

void attention_decode_latent(const Tensor& q, const Tensor& cache, int64_t start, float scale,
                             Tensor& out) {
  for (const Tensor* t : {&q, &cache, static_cast<const Tensor*>(&out)})
    require_f32(*t, "attention_decode_latent");
  MOETRON_CHECK(q.ndim() == 3 && cache.ndim() == 2 && out.ndim() == 3 && q.dim(2) == cache.dim(1) &&
                    out.dim(0) == q.dim(0) && out.dim(1) == q.dim(1) && out.dim(2) <= q.dim(2),
                "attention_decode_latent: q ", shape_str(q.shape()), " cache ",
                shape_str(cache.shape()), " out ", shape_str(out.shape()));
  MOETRON_CHECK(start >= 0 && start + q.dim(1) <= cache.dim(0),
                "attention_decode_latent: positions [", start, ", ", start + q.dim(1),
                ") outside a cache of ", cache.dim(0));
  backend_of("attention_decode_latent", {&q, &cache, &out})
      .attention_decode_latent(q, cache, start, scale, out);
}

void store_keys(const Tensor& k, int64_t start, Tensor& keys_t) {
  require_f32(k, "store_keys");
  require_f32(keys_t, "store_keys");
  MOETRON_CHECK(k.ndim() == 3 && keys_t.ndim() == 3 && k.dim(1) == keys_t.dim(0) &&
                    k.dim(2) == keys_t.dim(1) && start >= 0 && start + k.dim(0) <= keys_t.dim(2),
                "store_keys: k ", shape_str(k.shape()), " at ", start, " into ",
                shape_str(keys_t.shape()));
  backend_of("store_keys", {&k, &keys_t}).store_keys(k, start, keys_t);
}

void linear_rows(const Tensor& x, const Tensor& wt, Tensor& y) {
  require_f32(x, "linear_rows");
  require_f32(wt, "linear_rows");
  require_f32(y, "linear_rows");
  MOETRON_CHECK(x.cols() == wt.rows() && y.rows() == x.rows() && y.cols() == wt.cols(),
                "linear_rows: x ", shape_str(x.shape()), " wt ", shape_str(wt.shape()), " -> ",
                shape_str(y.shape()));
  backend_of("linear_rows", {&x, &wt, &y}).linear_rows(x, wt, y);
}

void grouped_linear_rows(const Tensor& x, std::span<const Tensor> wts, const Tensor& offsets_t,
                         Tensor& y) {
  // The row counts are host values: on a device, one copy to the host per call.
  const std::vector<int64_t> offsets = to_host<int64_t>(offsets_t);
  MOETRON_CHECK(offsets.size() == wts.size() + 1 && offsets.front() == 0 &&
                    offsets.back() <= x.rows() && x.rows() == y.rows(),
                "grouped_linear_rows: ", wts.size(), " weights, ", offsets.size(), " offsets, x ",
                shape_str(x.shape()), " y ", shape_str(y.shape()));
  for (size_t e = 0; e < wts.size(); ++e) {
    if (offsets[e + 1] == offsets[e]) continue;
    Tensor ye = y.slice(offsets[e], offsets[e + 1]);
    linear_rows(x.slice(offsets[e], offsets[e + 1]), wts[e], ye);
  }
}

void transpose(const Tensor& src, Tensor& dst) {
  require_f32(src, "transpose");
  require_f32(dst, "transpose");
  MOETRON_CHECK(dst.rows() == src.cols() && dst.cols() == src.rows(),
                "transpose: ", shape_str(src.shape()), " -> ", shape_str(dst.shape()));
  backend_of("transpose", {&src, &dst}).transpose(src, dst);
}

}  // namespace moetron::ops
