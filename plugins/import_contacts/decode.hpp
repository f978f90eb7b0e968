// decode.hpp: turns a CSV file's bytes, in the encoding the payload names, into
// UTF-8 as they arrive (iconv from glibc, in chunks: nothing of the file is kept
// but an incomplete character at a chunk's end, carried into the next).
//
// A byte-order mark at the very start wins over the payload: EF BB BF is UTF-8,
// FF FE UTF-16LE, FE FF UTF-16BE; the mark itself is dropped. UTF-16 without a
// mark is taken as little-endian unless the first two bytes say otherwise
// (00 xx: big-endian). UTF-8 passes through untouched: csv::Reader checks it
// per field. Input the encoding cannot hold (Windows-1252's undefined 0x81,
// 0x8D, 0x8F, 0x90, 0x9D; a lone UTF-16 surrogate; an odd byte at the end of
// UTF-16) comes out as kInvalid, a byte that is never valid UTF-8, so the
// reader rejects the row it falls in, and only that row.
#pragma once

#include <iconv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace csv {

enum class Encoding { kUtf8, kWindows1252, kIso88591, kUtf16, kUtf16Le, kUtf16Be };

// The payload's names: "utf-8", "windows-1252", "iso-8859-1", "utf-16".
inline std::optional<Encoding> parse_encoding(std::string_view name) {
  if (name == "utf-8") return Encoding::kUtf8;
  if (name == "windows-1252") return Encoding::kWindows1252;
  if (name == "iso-8859-1") return Encoding::kIso88591;
  if (name == "utf-16") return Encoding::kUtf16;
  return std::nullopt;
}

inline const char* encoding_name(Encoding e) {
  switch (e) {
    case Encoding::kUtf8: return "utf-8";
    case Encoding::kWindows1252: return "windows-1252";
    case Encoding::kIso88591: return "iso-8859-1";
    case Encoding::kUtf16: return "utf-16";
    case Encoding::kUtf16Le: return "utf-16le";
    case Encoding::kUtf16Be: return "utf-16be";
  }
  return "?";
}

inline constexpr char kInvalid = '\xFF';

class Decoder {
 public:
  using Sink = std::function<void(std::string_view utf8)>;
  Decoder(Encoding declared, Sink sink) : encoding_(declared), sink_(std::move(sink)) {}
  ~Decoder() {
    if (cd_ != reinterpret_cast<iconv_t>(-1)) iconv_close(cd_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // The encoding in effect: the declared one until the first bytes have been
  // seen, then the one a BOM (or UTF-16's byte order) decided.
  Encoding encoding() const { return encoding_; }

  void feed(std::string_view data) {
    if (!started_) {
      head_.append(data);
      if (head_.size() < 3) return;
      start();
      std::string head = std::move(head_);
      head_.clear();
      return convert(std::string_view(head).substr(skip_));
    }
    convert(data);
  }

  // The input ended: a character still incomplete is invalid.
  void finish() {
    if (!started_) {
      start();
      std::string head = std::move(head_);
      head_.clear();
      convert(std::string_view(head).substr(skip_));
    }
    if (!carry_.empty()) {
      carry_.clear();
      sink_(std::string_view(&kInvalid, 1));
    }
  }

 private:
  void start() {
    started_ = true;
    const auto at = [&](size_t i) { return i < head_.size() ? static_cast<unsigned char>(head_[i]) : -1; };
    if (at(0) == 0xEF && at(1) == 0xBB && at(2) == 0xBF) {
      encoding_ = Encoding::kUtf8;
      skip_ = 3;
    } else if (at(0) == 0xFF && at(1) == 0xFE) {
      encoding_ = Encoding::kUtf16Le;
      skip_ = 2;
    } else if (at(0) == 0xFE && at(1) == 0xFF) {
      encoding_ = Encoding::kUtf16Be;
      skip_ = 2;
    } else if (encoding_ == Encoding::kUtf16) {
      encoding_ = at(0) == 0 && at(1) > 0 ? Encoding::kUtf16Be : Encoding::kUtf16Le;
    }
    const char* from = nullptr;
    switch (encoding_) {
      case Encoding::kUtf8: return;
      case Encoding::kWindows1252: from = "WINDOWS-1252"; unit_ = 1; break;
      case Encoding::kIso88591: from = "ISO-8859-1"; unit_ = 1; break;
      case Encoding::kUtf16:
      case Encoding::kUtf16Le: from = "UTF-16LE"; unit_ = 2; break;
      case Encoding::kUtf16Be: from = "UTF-16BE"; unit_ = 2; break;
    }
    cd_ = iconv_open("UTF-8", from);
    if (cd_ == reinterpret_cast<iconv_t>(-1)) throw std::runtime_error(std::string("iconv cannot read ") + from);
  }

  void convert(std::string_view data) {
    if (cd_ == reinterpret_cast<iconv_t>(-1)) {
      if (!data.empty()) sink_(data);
      return;
    }
    if (!carry_.empty()) {  // rare: only a character split across chunks
      carry_.append(data);
      std::string joined = std::move(carry_);
      carry_.clear();
      return convert_all(joined);
    }
    convert_all(data);
  }

  void convert_all(std::string_view data) {
    char* in = const_cast<char*>(data.data());
    size_t in_left = data.size();
    while (in_left > 0) {
      char* out = out_;
      size_t out_left = sizeof out_;
      const size_t r = iconv(cd_, &in, &in_left, &out, &out_left);
      const int error = r == static_cast<size_t>(-1) ? errno : 0;
      if (out != out_) sink_(std::string_view(out_, static_cast<size_t>(out - out_)));
      if (error == EILSEQ) {  // not a character of this encoding: one unit is skipped
        const size_t n = std::min(unit_, in_left);
        in += n;
        in_left -= n;
        sink_(std::string_view(&kInvalid, 1));
      } else if (error == EINVAL) {  // incomplete at the end of this chunk
        carry_.assign(in, in_left);
        return;
      } else if (error != 0 && error != E2BIG) {
        throw std::runtime_error(std::string("iconv: ") + std::strerror(error));
      }
    }
  }

  Encoding encoding_;
  Sink sink_;
  bool started_ = false;
  std::string head_;   // the first bytes, until the BOM question is settled
  size_t skip_ = 0;    // bytes of BOM to drop
  size_t unit_ = 1;    // bytes skipped past an invalid sequence
  iconv_t cd_ = reinterpret_cast<iconv_t>(-1);
  std::string carry_;  // an incomplete character from the previous chunk
  char out_[1 << 16];
};

}  // namespace csv
