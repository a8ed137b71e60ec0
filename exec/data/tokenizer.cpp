#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <limits>
#include <regex>
#include <sstream>
#include <unordered_map>

#include "common/errors.h"
#include "data/corpus.h"

namespace glam::exec {
namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) { skip(); }
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override {
    ++i_;
    skip();
  }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void skip() {
    while (i_ < lines_.size() && lines_[i_].find_first_not_of(" \t\r") == std::string::npos) ++i_;
  }
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

}  // namespace

Tokenizer::Tokenizer(const std::string& serialized_model, const std::string& origin)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), serialized_(serialized_model), origin_(origin) {
  auto st = sp_->LoadFromSerializedProto(serialized_model);
  if (!st.ok()) throw UsageError(origin + ": not a SentencePiece model (" + st.ToString() + ")");
}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::filesystem::path& model_file) {
  return Tokenizer(read_text_file(model_file, "SentencePiece model"), model_file.string());
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

std::vector<int32_t> Tokenizer::encode_text(const std::string& text) const {
  std::vector<int32_t> out;
  const int eos = sp_->eos_id();
  bool in_paragraph = false;
  for (const std::string& line : split_lines(text)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (in_paragraph && eos >= 0) out.push_back(eos);
      in_paragraph = false;
      continue;
    }
    std::vector<int> ids;
    sp_->Encode(line, &ids);
    out.insert(out.end(), ids.begin(), ids.end());
    in_paragraph = true;
  }
  if (in_paragraph && eos >= 0) out.push_back(eos);
  return out;
}

std::string train_tokenizer(const std::string& text, int64_t vocab, const std::string& origin) {
  std::vector<std::string> lines = split_lines(text);
  LineIterator it(lines);
  if (it.done()) throw UsageError(origin + ": no text to train a tokenizer on (the file is empty or blank)");
  if (vocab > std::numeric_limits<int>::max())
    throw UsageError("a vocabulary of " + std::to_string(vocab) + " pieces: SentencePiece takes at most " +
                     std::to_string(std::numeric_limits<int>::max()));
  std::unordered_map<std::string, std::string> args = {
      {"vocab_size", std::to_string(vocab)}, {"model_type", "bpe"},      {"character_coverage", "1.0"},
      {"num_threads", "2"},                  {"minloglevel", "2"},        {"hard_vocab_limit", "true"},
      {"max_sentence_length", "16384"},      {"input_sentence_size", "0"}};
  std::string model;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!st.ok()) {
    // SentencePiece's two ways of saying the vocabulary does not suit the text, in this program's terms.
    const std::string said = st.ToString();
    std::smatch m;
    if (std::regex_search(said, m, std::regex("smaller than required_chars\\. \\d+ vs (\\d+)")))
      throw UsageError(origin + ": a vocabulary of " + std::to_string(vocab) + " pieces is too small for this text: a piece " +
                       "for each of its distinct characters and the control pieces (<unk>, <s>, </s>) need at least " +
                       m[1].str());
    if (std::regex_search(said, m, std::regex("Vocabulary size too high \\(\\d+\\)\\. Please set it to a value <= (\\d+)")))
      throw TextTooShortForVocabulary(origin + ": this text (" + std::to_string(text.size()) + " bytes) gives at most " + m[1].str() +
                       " BPE pieces, not " + std::to_string(vocab) + ": a smaller vocabulary, or more text");
    throw UsageError(origin + ": cannot train a SentencePiece model of " + std::to_string(vocab) +
                     " pieces on this text (" + std::to_string(text.size()) + " bytes): SentencePiece says " + said);
  }
  return model;
}

}  // namespace glam::exec
