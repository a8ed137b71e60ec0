#pragma once
// SentencePiece: training a model from text with the library's trainer (no downloads) and
// encoding text into one packed token stream.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace glam::exec {

class Tokenizer {
 public:
  // A serialized SentencePiece model (as trained or read from a .model file).
  explicit Tokenizer(const std::string& serialized_model, const std::string& origin);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  static Tokenizer load(const std::filesystem::path& model_file);  // UsageError when unreadable

  int64_t vocab_size() const;
  // Every non-empty line encoded, an end-of-sentence id after each paragraph, concatenated.
  std::vector<int32_t> encode_text(const std::string& text) const;
  const std::string& serialized() const { return serialized_; }
  const std::string& origin() const { return origin_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string serialized_, origin_;
};

// The text is too short to give as many pieces as asked (more text, or fewer pieces, would do).
class TextTooShortForVocabulary : public UsageError {
 public:
  using UsageError::UsageError;
};

// Trains a BPE model of exactly `vocab` pieces on `text`; returns the serialized model.
// UsageError naming `origin` (the text's file) when the text cannot support that many pieces
// (TextTooShortForVocabulary when it has too little text for them).
std::string train_tokenizer(const std::string& text, int64_t vocab, const std::string& origin);

}  // namespace glam::exec
