#include "data/corpus.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/check.h"
#include "data/file_io.h"
#include "data/hash.h"

namespace moetron::data {
namespace {

namespace fs = std::filesystem;
using detail::concat;

bool looks_binary(const fs::path& file) {
  MappedFile map(file, "input");
  const auto b = map.bytes();
  return !b.empty() && std::memchr(b.data(), 0, std::min<size_t>(b.size(), 8192)) != nullptr;
}

bool scan_skips(const fs::path& p) {
  const std::string name = p.filename().string();
  const std::string ext = p.extension().string();
  return name.starts_with(".") || ext == ".dat" || ext == ".u8";
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

InputFiles list_input_files(std::span<const fs::path> inputs, bool top_level_only) {
  InputFiles out;
  std::set<fs::path> seen;  // canonical paths, so symlinked duplicates are read once
  auto add = [&](const fs::path& p) {
    if (seen.insert(fs::weakly_canonical(p)).second)
      out.files.push_back(p);
    else
      out.skipped++;
  };
  for (const fs::path& input : inputs) {
    std::error_code ec;
    const auto status = fs::status(input, ec);
    if (ec || !fs::exists(status)) throw Error(concat("input ", input, " does not exist"));
    if (fs::is_regular_file(status)) {
      if (looks_binary(input))
        throw Error(concat("input ", input, " looks binary (it has a NUL byte); give text files"));
      add(input);
      continue;
    }
    if (!fs::is_directory(status))
      throw Error(concat("input ", input, " is neither a file nor a directory"));
    std::vector<fs::path> found;
    auto consider = [&](const fs::directory_entry& e) {
      if (!e.is_regular_file()) return;
      if (scan_skips(e.path()))
        out.skipped++;
      else
        found.push_back(e.path());
    };
    if (top_level_only) {
      for (const auto& e : fs::directory_iterator(input)) consider(e);
    } else {
      for (auto it = fs::recursive_directory_iterator(input);
           it != fs::recursive_directory_iterator(); ++it) {
        if (it->is_directory() && it->path().filename().string().starts_with(".")) {
          it.disable_recursion_pending();
          continue;
        }
        consider(*it);
      }
    }
    std::sort(found.begin(), found.end());
    for (const auto& p : found) {
      if (looks_binary(p))
        out.skipped++;
      else
        add(p);
    }
  }
  return out;
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* b = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = b[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // no overlong forms
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (b[i + k] < 0x80 || b[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

uint64_t check_utf8(std::span<const fs::path> files, bool reject, const StopToken& stop) {
  uint64_t invalid = 0;
  for (const fs::path& file : files) {
    stop.check();
    const MappedFile map(file, "input");
    const std::string_view text(reinterpret_cast<const char*>(map.bytes().data()),
                                map.bytes().size());
    const size_t bad = find_invalid_utf8(text);
    if (bad == std::string_view::npos) continue;
    if (reject)
      throw Error(concat(file.string(), ": invalid UTF-8 at byte offset ", bad, " (byte 0x",
                         std::hex, static_cast<int>(static_cast<unsigned char>(text[bad])),
                         std::dec, "). SentencePiece needs UTF-8 text: fix or leave out the file, ",
                         "or pass --allow-invalid-utf8 to have invalid bytes replaced by U+FFFD"));
    ++invalid;
  }
  return invalid;
}

DocumentReader::DocumentReader(std::vector<fs::path> files, bool fortunes)
    : files_(std::move(files)), fortunes_(fortunes) {}

bool DocumentReader::next(std::string_view& doc) {
  while (true) {
    if (!map_) {
      if (file_ >= files_.size()) return false;
      map_.emplace(files_[file_++], "input");
      text_ = {reinterpret_cast<const char*>(map_->bytes().data()), map_->bytes().size()};
      pos_ = 0;
    }
    if (pos_ >= text_.size()) {
      map_.reset();
      continue;
    }
    std::string_view rest = text_.substr(pos_);
    std::string_view entry = rest;
    if (fortunes_) {
      // An entry ends at a line that is exactly "%" (optionally with \r).
      size_t line = 0;
      size_t end = rest.size(), skip = rest.size();
      while (line < rest.size()) {
        size_t eol = rest.find('\n', line);
        if (eol == std::string_view::npos) eol = rest.size();
        const std::string_view l = rest.substr(line, eol - line);
        if (l == "%" || l == "%\r") {
          end = line;
          skip = std::min(eol + 1, rest.size());
          break;
        }
        line = eol + 1;
      }
      entry = rest.substr(0, end);
      pos_ += skip;
    } else {
      pos_ = text_.size();
    }
    entry = trim_right(entry);
    if (entry.empty()) continue;
    doc = entry;
    return true;
  }
}

bool is_val_document(std::string_view doc, double val_fraction) {
  const uint64_t h = splitmix64(fnv1a64(doc));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < val_fraction;
}

}  // namespace moetron::data
