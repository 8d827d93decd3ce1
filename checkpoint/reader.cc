#include "checkpoint/reader.h"

#include <algorithm>

#include "checkpoint/checkpoint.h"
#include "core/check.h"
#include "core/tensor.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;

std::string shape_text(const std::vector<uint64_t>& s) {
  return shape_str(Shape(s.begin(), s.end()));
}

uint64_t elements_of(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n = __builtin_mul_overflow(n, d, &n) ? UINT64_MAX : n;
  return n;
}

}  // namespace

CheckpointReader::CheckpointReader(const std::filesystem::path& path, MPI_Comm comm)
    : file_(path.string(), H5File::Mode::read, comm), metadata_(read_metadata(file_)) {
  const std::string& where = file_.path();
  const config::ModelConfig& model = metadata_.config.model();
  // The config's model, weighed against the file before its tensor list is built: listing a few
  // more tensors than the file holds costs nothing, and names the missing one.
  const std::vector<std::string> found = file_.list("/params");
  const ModelSize size = model_size(model);
  if (size.tensors > 2 * found.size() + 64)
    throw Error(concat(where, ": its config describes a model of ", size.tensors,
                       " tensors, and the file holds ", found.size(),
                       ": the config or the file is damaged"));
  if (size.elements > file_.bytes() / 4)
    throw Error(concat(where, ": its config describes a model of ", size.elements,
                       " parameters (4 bytes each), more than the file's ", file_.bytes(),
                       " bytes hold: the config or the file is damaged"));
  tensors_ = model_tensors(model);
  std::vector<std::string> expected;
  uint64_t stored = 0;
  for (const ModelTensor& t : tensors_) {
    if (!std::binary_search(found.begin(), found.end(), t.name))
      throw Error(concat(where, ": tensor ", t.name, " is missing (its config's model has it)"));
    stored += check_dataset("/params/" + t.name, t.shape);
    expected.push_back(t.name);
  }
  std::sort(expected.begin(), expected.end());
  for (const std::string& name : found)
    if (!std::binary_search(expected.begin(), expected.end(), name))
      throw Error(concat(where, ": tensor ", name,
                         " is not part of this model (the one its config describes)"));
  // Optimizer state: each group's tensors are tensors of the model, of their shapes; AdamW's
  // two moments hold the same tensors.
  std::vector<const ModelTensor*> by_name;
  for (const ModelTensor& t : tensors_) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(),
            [](const ModelTensor* a, const ModelTensor* b) { return a->name < b->name; });
  for (const char* group : kStateGroups) {
    std::vector<std::string>& names = state_[group];
    names = file_.list(concat("/", group));
    for (const std::string& name : names) {
      const auto t =
          std::lower_bound(by_name.begin(), by_name.end(), name,
                           [](const ModelTensor* a, const std::string& n) { return a->name < n; });
      if (t == by_name.end() || (*t)->name != name)
        throw Error(concat(where, ": /", group, "/", name,
                           " is the optimizer state of no tensor of the model"));
      stored += check_dataset(concat("/", group, "/", name), (*t)->shape);
    }
  }
  if (state_["exp_avg"] != state_["exp_avg_sq"])
    throw Error(concat(where, ": /exp_avg and /exp_avg_sq hold different tensors (",
                       state_["exp_avg"].size(), " and ", state_["exp_avg_sq"].size(), ")"));
  if (stored > file_.bytes())
    throw Error(concat(where, ": its tensors claim ", stored, " bytes, more than the file's ",
                       file_.bytes(), ": the file is damaged"));
}

uint64_t CheckpointReader::check_dataset(const std::string& path,
                                         const std::vector<uint64_t>& shape) const {
  const std::string& where = file_.path();
  const H5File::DatasetInfo info = file_.info(path);
  if (info.shape != shape)
    throw Error(concat(where, ": ", path, " has shape ", shape_text(info.shape),
                       ", the model its config describes needs ", shape_text(shape)));
  if (!info.f32) throw Error(concat(where, ": ", path, " is not f32"));
  const uint64_t bytes = elements_of(shape) * 4;
  if (!info.contiguous || info.storage_bytes != bytes)
    throw Error(concat(where, ": ", path, " is not stored as moetron writes it (", bytes,
                       " contiguous bytes; the file has ", info.storage_bytes,
                       info.contiguous ? "" : ", not contiguous", ")"));
  return bytes;
}

bool CheckpointReader::has_state(const std::string& group, const std::string& name) const {
  const auto it = state_.find(group);
  return it != state_.end() && std::binary_search(it->second.begin(), it->second.end(), name);
}

bool CheckpointReader::read_rows(
    const std::string& path, uint64_t unit, uint64_t max_bytes,
    const std::function<void(uint64_t, std::span<const float>)>& visit) const {
  const std::vector<uint64_t> shape = file_.shape(path);
  MOETRON_CHECK(shape.size() == 1 || shape.size() == 2, path, " of rank ", shape.size());
  const bool vector = shape.size() == 1;
  const uint64_t rows = vector ? 1 : shape[0], cols = vector ? shape[0] : shape[1];
  MOETRON_CHECK(unit > 0 && rows % unit == 0, path, ": ", rows, " rows in units of ", unit);
  const uint64_t step =
      std::max<uint64_t>(1, max_bytes / (4 * std::max<uint64_t>(cols, 1) * unit)) * unit;
  std::vector<float> block;
  uint64_t hash = 0;
  for (uint64_t r = 0; r < rows; r += step) {
    const uint64_t n = std::min(step, rows - r);
    block.resize(n * cols);
    const Rect rect = vector ? Rect{0, 0, 1, cols} : Rect{r, 0, n, cols};
    file_.read(path, {&rect, 1}, block);
    // Serial on purpose: export also runs in forked children (its memory test), where an
    // OpenMP team of the parent would deadlock; reading is bound by the disk anyway.
    for (uint64_t i = 0; i < block.size(); ++i) hash ^= element_hash(r * cols + i, block[i]);
    visit(r, block);
  }
  return hash == file_.dataset_u64_attr(path, "checksum");
}

}  // namespace moetron::checkpoint
