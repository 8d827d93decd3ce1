#include "checkpoint/checkpoint.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>

#include "checkpoint/h5.h"
#include "checkpoint/reader.h"
#include "core/check.h"
#include "core/ops.h"
#include "data/file_io.h"
#include "parallel/collective.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;
namespace fs = std::filesystem;

// One logical tensor of the checkpoint.
struct Entry {
  std::string name;
  std::vector<uint64_t> shape;
  ParamKind kind = ParamKind::matrix;
};

// Group k of a tensor: 0 its values, k >= 1 the optimizer's slot k - 1.
std::string dataset_path(int k, const std::string& name, const OptimizerState& opt) {
  if (k == 0) return "/params/" + name;
  return concat("/", opt.slots.at(static_cast<size_t>(k - 1)).name, "/", name);
}

// Whether tensor e has group k (its values always; a slot when the slot holds it).
bool has_group(int k, const Entry& e, const OptimizerState& opt) {
  if (k == 0) return true;
  return e.kind != ParamKind::buffer &&
         opt.slots.at(static_cast<size_t>(k - 1)).holds(e.name, e.kind);
}

// The checksum contribution of element `index` (row-major in the logical tensor) holding `v`.
// The logical tensor's columns (1 for a vector).
uint64_t columns(const Entry& e) {
  return e.shape.size() == 2 ? e.shape[1] : 1;
}

// Elements [a, b) of p's local block (row-major) in logical coordinates: at most three
// rectangles (a partial first row, whole rows, a partial last row), padding rows cut off.
// Also returns where the valid part ends (b clipped).
std::vector<Rect> rects_of(const ParamInfo& p, int64_t a, int64_t& b) {
  std::vector<Rect> out;
  if (p.shape.size() == 1) {  // a vector is one row; a tensor-parallel one a block of it
    const int64_t offset = p.shard.group == ShardGroup::tensor ? p.shard.begin : 0;
    if (a < b)
      out.push_back({0, static_cast<uint64_t>(a + offset), 1, static_cast<uint64_t>(b - a)});
    return out;
  }
  const int64_t cols = p.shape[1];
  int64_t row_offset = 0, col_offset = 0;
  if (p.shard.group == ShardGroup::tensor) {
    if (p.shard.dim == 0) {
      row_offset = p.shard.begin;
      b = std::min(b, (p.shard.global_size - p.shard.begin) * cols);  // padding rows stay out
    } else {
      col_offset = p.shard.begin;
    }
  }
  auto rect = [&](int64_t row, int64_t col, int64_t rows, int64_t n) {
    if (rows > 0 && n > 0)
      out.push_back({static_cast<uint64_t>(row + row_offset),
                     static_cast<uint64_t>(col + col_offset), static_cast<uint64_t>(rows),
                     static_cast<uint64_t>(n)});
  };
  if (a >= b) return out;
  const int64_t first_row = a / cols, last_row = (b - 1) / cols;
  if (first_row == last_row) {
    rect(first_row, a % cols, 1, b - a);
    return out;
  }
  int64_t full_begin = first_row, full_end = last_row + 1;
  if (a % cols != 0) {
    rect(first_row, a % cols, 1, cols - a % cols);
    full_begin = first_row + 1;
  }
  const bool partial_last = b % cols != 0;
  if (partial_last) full_end = last_row;
  rect(full_begin, 0, full_end - full_begin, cols);
  if (partial_last) rect(last_row, 0, 1, b % cols);
  return out;
}

// XOR of the element hashes of `values` laid out over `rects` of a tensor with `cols` columns.
uint64_t checksum(std::span<const Rect> rects, std::span<const float> values, uint64_t cols) {
  uint64_t h = 0;
  size_t at = 0;
  for (const Rect& r : rects) {
    const float* v = values.data() + at;
    const auto rows = static_cast<int64_t>(r.rows), n = static_cast<int64_t>(r.cols);
#pragma omp parallel for reduction(^ : h) schedule(static) if (rows * n > (1 << 16))
    for (int64_t i = 0; i < rows; ++i) {
      const uint64_t base = (r.row + static_cast<uint64_t>(i)) * cols + r.col;
      const float* row = v + i * n;
      uint64_t hr = 0;
#pragma omp simd reduction(^ : hr)
      for (int64_t j = 0; j < n; ++j) hr ^= element_hash(base + static_cast<uint64_t>(j), row[j]);
      h ^= hr;
    }
    at += static_cast<size_t>(rows * n);
  }
  return h;
}

// Whether this rank is the one replica that writes (and checksums) p's values: rank 0 of the
// group over which p is replicated (data parallel; for experts expert-data parallel), and for
// tensor-parallel replicated parameters tp rank 0.
bool writes_values(const ParamInfo& p, const ProcessGroups& g) {
  const bool first_replica = p.is_expert() ? g.edp_rank() == 0 : g.dp_rank() == 0;
  return first_replica && (p.shard.group != ShardGroup::replicated || g.tp_rank() == 0);
}

// Whether this rank writes its part of slot `slot`'s state of p: with ZeRO-1 (or a slot split
// by owner) every rank holds distinct parts; otherwise the state is replicated like the values.
bool writes_state(const ParamInfo& p, const StateSlot& slot, const ProcessGroups& g) {
  if (!g.layout().zero1 && slot.split == StateSlot::Split::zero1) return writes_values(p, g);
  return p.shard.group != ShardGroup::replicated || g.tp_rank() == 0;
}

// Every rank's parameters, merged: names, logical shapes, whether trained. Sorted by name.
std::vector<Entry> global_entries(const ParamTable& params, const ProcessGroups& g) {
  std::ostringstream mine;
  for (const ParamInfo& p : params.infos()) {
    mine << p.name << ' ' << static_cast<int>(p.kind);
    for (int64_t d : p.global_shape) mine << ' ' << d;
    mine << '\n';
  }
  std::string text = mine.str();
  if (Communicator* world = g.world()) {  // everyone's lists, padded to the longest
    Tensor n = Tensor::empty({1}, DType::i64);
    n.data<int64_t>()[0] = static_cast<int64_t>(text.size());
    world->all_reduce(n, ReduceOp::max);
    Tensor in = Tensor::zeros({n.data<int64_t>()[0] + 1}, DType::u8);
    std::memcpy(in.raw_data(), text.data(), text.size());
    Tensor all = Tensor::empty({world->size() * in.numel()}, DType::u8);
    world->all_gather(in, all);
    text.clear();
    for (int r = 0; r < world->size(); ++r)
      text += reinterpret_cast<const char*>(all.data<uint8_t>() + r * in.numel());
  }
  std::map<std::string, Entry> by_name;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream f(line);
    Entry e;
    int kind = 0;
    f >> e.name >> kind;
    e.kind = static_cast<ParamKind>(kind);
    for (uint64_t d; f >> d;) e.shape.push_back(d);
    by_name.emplace(e.name, std::move(e));
  }
  std::vector<Entry> out;
  out.reserve(by_name.size());
  for (auto& [name, e] : by_name) out.push_back(std::move(e));
  return out;
}

// A contiguous run of this rank's memory and where it lies in the logical tensor. Checkpoints
// are written from and read into the parameter and moment buffers directly on the CPU: no
// copies, so a save needs no memory beyond the model's own. A model on another device is
// staged through host copies of its buffers (Staged below).
struct Piece {
  std::vector<Rect> rects;
  std::span<float> values;
};

// The flat values and the optimizer's slots in host memory: the model's own buffers on the CPU,
// copies of them for a model on a device (a save or load then needs host memory of the model's
// size and its moments, for as long as it runs).
struct Staged {
  Tensor values;
  OptimizerState opt;
  bool copied = false;
};

// Host views or copies of `values` and `opt`'s slots; `read`: copy their contents (a save; a
// load fills them itself).
Staged stage(const Tensor& values, const OptimizerState& opt, bool read) {
  Staged s{values, opt};
  if (values.device() == Device{}) return s;
  s.copied = true;
  const auto host = [&](const Tensor& t) {
    return read ? ops::to_device(t, Device{}) : Tensor::zeros(t.shape(), t.dtype());
  };
  s.values = host(values);
  for (StateSlot& slot : s.opt.slots) slot.values = host(slot.values);
  return s;
}

// After a load into a staged copy: the values back on the device.
void unstage(const Staged& s, Tensor& values, OptimizerState& opt) {
  if (!s.copied) return;
  ops::copy_from_host(std::span<const float>(s.values.span<float>()), values);
  for (size_t i = 0; i < opt.slots.size(); ++i)
    ops::copy_from_host(std::span<const float>(s.opt.slots[i].values.span<float>()),
                        opt.slots[i].values);
}

// p's values: the whole local block (its valid rows).
std::vector<Piece> value_pieces(const ParamInfo& p, const Tensor& values) {
  int64_t end = p.numel();
  Piece piece;
  piece.rects = rects_of(p, 0, end);
  piece.values = {values.data<float>() + p.offset, static_cast<size_t>(end)};
  return {std::move(piece)};
}

// p's elements among the slot's ranges, in its values (laid out range after range).
std::vector<Piece> state_pieces(const ParamInfo& p, const StateSlot& slot) {
  const Tensor& moments = slot.values;
  std::vector<Piece> out;
  int64_t at = 0;  // where the current range's values start
  for (const auto& [first, last] : slot.ranges) {
    const int64_t lo = std::max(first, p.offset), hi = std::min(last, p.offset + p.numel());
    if (lo < hi) {
      int64_t end = hi - p.offset;
      Piece piece;
      piece.rects = rects_of(p, lo - p.offset, end);  // clips `end` to the valid rows
      const int64_t n = std::max<int64_t>(0, end - (lo - p.offset));
      piece.values = {moments.data<float>() + at + (lo - first), static_cast<size_t>(n)};
      if (n > 0) out.push_back(std::move(piece));
    }
    at += last - first;
  }
  return out;
}

// Pieces of group k (0 values, k >= 1 slot k - 1) of p, in the staged buffers.
std::vector<Piece> pieces(int k, const ParamInfo& p, const Staged& host) {
  if (k == 0) return value_pieces(p, host.values);
  return state_pieces(p, host.opt.slots.at(static_cast<size_t>(k - 1)));
}

uint64_t checksum(const std::vector<Piece>& pieces, uint64_t cols) {
  uint64_t h = 0;
  for (const Piece& piece : pieces) h ^= checksum(piece.rects, piece.values, cols);
  return h;
}

std::string layout_text(const Layout& l) {
  return concat("dp=", l.dp, " tp=", l.tp, " ep=", l.ep, " zero1=", l.zero1 ? 1 : 0,
                " world=", l.world);
}

void xor_over_world(const ProcessGroups& g, Tensor& sums) {
  if (g.world()) g.world()->all_reduce(sums, ReduceOp::bit_xor);
}

}  // namespace

std::string model_difference(const config::ModelConfig& a, const config::ModelConfig& b) {
  using google::protobuf::FieldDescriptor;
  using google::protobuf::Message;
  std::string out;
  std::function<void(const Message&, const Message&, const std::string&)> walk =
      [&](const Message& x, const Message& y, const std::string& prefix) {
        const auto* d = x.GetDescriptor();
        const auto* rx = x.GetReflection();
        const auto* ry = y.GetReflection();
        for (int i = 0; i < d->field_count() && out.empty(); ++i) {
          const FieldDescriptor* f = d->field(i);
          const std::string path = prefix + f->name();
          if (f->is_repeated()) continue;  // the model config has none
          if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
            walk(rx->GetMessage(x, f), ry->GetMessage(y, f), path + ".");
            continue;
          }
          std::string vx, vy;
          google::protobuf::TextFormat::PrintFieldValueToString(x, f, -1, &vx);
          google::protobuf::TextFormat::PrintFieldValueToString(y, f, -1, &vy);
          if (vx != vy) out = concat(path, ": the checkpoint has ", vx, ", the config ", vy);
        }
      };
  walk(a, b, "model.");
  return out;
}

void save(const fs::path& path, const ParamTable& params, const OptimizerState& opt,
          const TrainState& state, const std::string& config_text, const ProcessGroups& g) {
  const std::vector<Entry> entries = global_entries(params, g);
  const Staged host = stage(params.flat_values(), opt, true);
  // Groups per tensor: its values, then the optimizer's slots (none: the weights alone).
  const int groups = 1 + static_cast<int>(opt.slots.size());
  // What this rank writes, and every tensor's checksum (XOR over the ranks that write it).
  std::vector<std::vector<std::vector<Piece>>> written(
      entries.size(), std::vector<std::vector<Piece>>(static_cast<size_t>(groups)));
  Tensor sums = Tensor::zeros({static_cast<int64_t>(groups * entries.size())}, DType::i64);
  auto sum_at = [&](size_t i, int k) -> int64_t& {
    return sums.data<int64_t>()[static_cast<int64_t>(i) * groups + k];
  };
  for (size_t i = 0; i < entries.size(); ++i) {
    const int id = params.find(entries[i].name);
    if (id < 0) continue;  // another rank's expert
    const ParamInfo& p = params.info(id);
    for (int k = 0; k < groups; ++k) {
      if (!has_group(k, entries[i], opt)) continue;
      if (!(k == 0 ? writes_values(p, g)
                   : writes_state(p, opt.slots[static_cast<size_t>(k - 1)], g)))
        continue;
      written[i][static_cast<size_t>(k)] = pieces(k, p, host);
      sum_at(i, k) =
          static_cast<int64_t>(checksum(written[i][static_cast<size_t>(k)], columns(entries[i])));
    }
  }
  xor_over_world(g, sums);

  // Each part is agreed on by every rank before the next collective call, so a failure on one
  // rank (a write that finds the disk full) stops every rank with its message instead of
  // leaving the others waiting in HDF5's collective close. A failed save leaves nothing behind:
  // the file is abandoned (every rank together) and removed.
  const fs::path partial = path.string() + ".partial";
  auto agreed = [&](const std::function<void()>& part) {
    run_collectively(g.world(), [&] {
      try {
        part();
      } catch (const std::exception& e) {
        throw Error(
            concat("checkpoint step ", state.step, " could not be written: ", error_text(e)));
      }
    });
  };
  std::optional<H5File> file;
  try {
    agreed([&] {  // the file, its attributes and datasets: collective
      file.emplace(partial.string(), H5File::Mode::create, g.mpi_world());
      Metadata m;
      m.state = state;
      m.optimizer_step = opt.step;
      m.layout = layout_text(g.layout());
      m.config_text = config_text;
      write_metadata(*file, m);
      for (size_t i = 0; i < entries.size(); ++i)
        for (int k = 0; k < groups; ++k) {
          if (!has_group(k, entries[i], opt)) continue;
          const std::string name = dataset_path(k, entries[i].name, opt);
          file->create_dataset(name, entries[i].shape);
          file->set_dataset_attr(name, "checksum", static_cast<uint64_t>(sum_at(i, k)));
        }
    });
    agreed([&] {  // this rank's blocks: independent writes
      for (size_t i = 0; i < entries.size(); ++i)
        for (int k = 0; k < groups; ++k)
          for (const Piece& piece : written[i][static_cast<size_t>(k)])
            file->write(dataset_path(k, entries[i].name, opt), piece.rects, piece.values);
    });
    agreed([&] { file->close(); });
    // Complete and closed on every rank: make it durable, then give it its name.
    agreed([&] {
      if (g.rank() != 0) return;
      data::fsync_path(partial);
      fs::rename(partial, path);
      data::fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());
    });
  } catch (...) {  // an agreed failure: every rank is here
    file.reset();  // abandons an unclosed file, on every rank alike
    std::error_code ec;
    if (g.rank() == 0) fs::remove(partial, ec);
    throw;
  }
}

config::RunConfig saved_config(const fs::path& path) {
  return CheckpointReader(path).config();
}

TrainState load(const fs::path& path, ParamTable& params, OptimizerState* optimizer,
                const config::RunConfig& cfg, const ProcessGroups& g) {
  OptimizerState none;
  OptimizerState& opt = optimizer ? *optimizer : none;
  const int groups = 1 + static_cast<int>(opt.slots.size());  // values, and the state wanted
  const std::vector<Entry> entries = global_entries(params, g);
  std::optional<CheckpointReader> reader;
  TrainState state;
  // A step that can fail on some ranks only is agreed on before the next collective call:
  // opening the file is one (MPI_File_open).
  run_collectively(g.world(), [&] { data::open_regular_file(path, "checkpoint"); });
  // The whole file, its metadata and the model it holds: every rank sees the same.
  run_collectively(g.world(), [&] {
    reader.emplace(path, g.mpi_world());
    const Metadata& m = reader->metadata();
    if (const std::string diff = model_difference(m.config.model(), cfg.model()); !diff.empty())
      throw Error(concat(path, " holds another model: ", diff,
                         ". Resume with the checkpoint's model, or start a new run"));
    std::vector<std::string> expected;
    expected.reserve(entries.size());
    for (const Entry& e : entries) expected.push_back(e.name);
    std::vector<std::string> found;
    for (const ModelTensor& t : reader->tensors()) found.push_back(t.name);
    std::sort(found.begin(), found.end());
    for (const std::string& name : expected)
      if (!std::binary_search(found.begin(), found.end(), name))
        throw Error(concat(path, ": tensor ", name, " is missing"));
    for (const std::string& name : found)
      if (!std::binary_search(expected.begin(), expected.end(), name))
        throw Error(concat(path, ": tensor ", name, " is not part of this model"));
    for (const Entry& e : entries)
      for (int k = 1; k < groups; ++k)
        if (has_group(k, e, opt) &&
            !reader->has_state(opt.slots[static_cast<size_t>(k - 1)].name, e.name))
          throw Error(concat(path, ": the optimizer state ", dataset_path(k, e.name, opt),
                             " is missing (a checkpoint of weights alone, or of another "
                             "optimizer: its config has optimizer.kind ",
                             config::OptimizerConfig::Kind_Name(m.config.optimizer().kind()), ")"));
    state = m.state;
    if (optimizer) opt.step = m.optimizer_step;
  });
  H5File& file = reader->file();
  Staged host = stage(params.flat_values(), opt, false);
  // This rank's blocks: shapes, dtypes, then the data.
  Tensor sums = Tensor::zeros({static_cast<int64_t>(groups * entries.size())}, DType::i64);
  auto sum_at = [&](size_t i, int k) -> int64_t& {
    return sums.data<int64_t>()[static_cast<int64_t>(i) * groups + k];
  };
  run_collectively(g.world(), [&] {
    for (size_t i = 0; i < entries.size(); ++i) {
      const int id = params.find(entries[i].name);
      if (id < 0) continue;
      const ParamInfo& p = params.info(id);
      for (int k = 0; k < groups; ++k) {
        if (!has_group(k, entries[i], opt)) continue;
        const std::string name = dataset_path(k, entries[i].name, opt);
        MOETRON_CHECK(file.shape(name) == entries[i].shape, name, ": the reader checked it");
        if (k == 0) {  // padding rows (past the vocabulary) are zero
          float* v = host.values.data<float>() + p.offset;
          std::fill(v, v + p.numel(), 0.0f);
        }
        const std::vector<Piece> read = pieces(k, p, host);
        for (const Piece& piece : read) file.read(name, piece.rects, piece.values);
        // Every element is counted by the one rank that would write it in this layout.
        if (k == 0 ? writes_values(p, g)
                   : writes_state(p, opt.slots[static_cast<size_t>(k - 1)], g))
          sum_at(i, k) = static_cast<int64_t>(checksum(read, columns(entries[i])));
      }
    }
  });
  xor_over_world(g, sums);
  run_collectively(g.world(), [&] {
    for (size_t i = 0; i < entries.size(); ++i)
      for (int k = 0; k < groups; ++k) {
        if (!has_group(k, entries[i], opt)) continue;
        const std::string name = dataset_path(k, entries[i].name, opt);
        if (static_cast<uint64_t>(sum_at(i, k)) != file.dataset_u64_attr(name, "checksum"))
          throw Error(
              concat(path, ": ", name, " does not match its checksum (the file is corrupt)"));
      }
    file.close();
  });
  unstage(host, params.flat_values(), opt);
  return state;
}

}  // namespace moetron::checkpoint
