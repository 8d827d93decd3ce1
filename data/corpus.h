// The text side of `moetron prepare`: which files are read, how they divide into documents, and
// which documents go to the validation split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/stop.h"
#include "data/file_io.h"

namespace moetron::data {

struct InputFiles {
  std::vector<std::filesystem::path> files;  // in reading order
  uint64_t skipped = 0;                      // binary, .dat/.u8 or duplicate files passed over
};

// Expands `inputs`: a file is taken as given; a directory contributes its regular files in
// sorted path order, recursively unless `top_level_only` (fortune's off/ and translated
// subdirectories then stay out). Directory scans skip hidden files, .dat/.u8 files, files that
// look binary (a NUL byte in the first 8 KiB) and files already listed. Throws Error for a
// missing input or a named file that looks binary.
InputFiles list_input_files(std::span<const std::filesystem::path> inputs, bool top_level_only);

// Byte offset of the first byte of `text` that does not start a valid UTF-8 sequence
// (overlong forms, surrogates and code points above U+10FFFF are invalid), or npos.
size_t find_invalid_utf8(std::string_view text);

// Files among `files` that hold invalid UTF-8. With `reject`, throws Error naming the first
// such file and the byte offset instead.
uint64_t check_utf8(std::span<const std::filesystem::path> files, bool reject,
                    const StopToken& stop = {});

// Reads documents one at a time: a whole file each, or with `fortunes` each entry between lines
// holding only "%". Trailing whitespace is trimmed and empty documents are skipped. The files are
// memory-mapped, one at a time: a document is a view into its file.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::filesystem::path> files, bool fortunes);
  // The next document, valid until the next call; false at the end.
  bool next(std::string_view& doc);

 private:
  std::vector<std::filesystem::path> files_;
  bool fortunes_;
  size_t file_ = 0;
  std::optional<MappedFile> map_;  // the current file
  std::string_view text_;
  size_t pos_ = 0;
};

// The split rule: a document is in val when the hash of its bytes, read as a fraction in [0, 1),
// is below `val_fraction`. Depends on content alone, so duplicates share a split.
bool is_val_document(std::string_view doc, double val_fraction);

}  // namespace moetron::data
