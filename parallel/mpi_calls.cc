#include "parallel/mpi_calls.h"

#include <limits>
#include <string>

#include "core/check.h"

namespace moetron {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
    default:
      MOETRON_CHECK(false, "no MPI type for ", dtype_name(dtype));
  }
  return MPI_DATATYPE_NULL;
}

MPI_Datatype mpi_type(CommType type) {
  switch (type) {
    case CommType::f32:
      return MPI_FLOAT;
    case CommType::f64:
      return MPI_DOUBLE;
    case CommType::i32:
      return MPI_INT32_T;
    case CommType::i64:
      return MPI_INT64_T;
    case CommType::bf16:
      break;
  }
  MOETRON_CHECK(false, "no MPI type for bf16");
  return MPI_DATATYPE_NULL;
}

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Error(detail::concat(call, " failed: ", std::string(text, static_cast<size_t>(len))));
}

int as_count(int64_t n) {
  MOETRON_CHECK(n >= 0 && n <= std::numeric_limits<int>::max(), "MPI count ", n,
                " does not fit an int (one call takes at most 2^31 - 1 elements)");
  return static_cast<int>(n);
}

MpiParts mpi_parts(const CommParts& parts) {
  MpiParts m;
  for (size_t i = 0; i < parts.counts.size(); ++i) {
    m.counts.push_back(as_count(parts.counts[i]));
    m.displs.push_back(as_count(parts.offsets[i]));
  }
  as_count(parts.total);
  return m;
}

}  // namespace moetron
