// Tokenizes chat prompts in pieces cut after special tokens, and keeps the tokens of recent pieces for the
// model file: a conversation's next request repeats all of its earlier text, so only the new end is tokenized
// again, by whichever preparation worker gets it.
#pragma once
#include "llama.h"

#include <array>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

/**
 * The tokens of prompt pieces, least recently used dropped first, shared by every tokenizer of one model file
 * in this process: a conversation's requests go to any of the preparation workers.
 */
class PieceCache {
 public:
  /** The cache for the model file at `path` as it is now (its size and modification time are part of the key). */
  static std::shared_ptr<PieceCache> forModelFile(const std::string& path);
  /** Appends the piece's tokens to out if kept; false if not. */
  bool appendTo(const std::string& key, std::vector<llama_token>& out);
  void keep(std::string key, std::vector<llama_token> tokens);

 private:
  std::mutex mutex_;
  std::list<std::pair<std::string, std::vector<llama_token>>> lru_;  // least recently used first
  std::unordered_map<std::string_view, decltype(lru_)::iterator> index_;
  size_t bytes_ = 0;
};

/** Pieces served from a PieceCache and pieces tokenized, in this process. */
struct PieceCounts {
  uint64_t reused;
  uint64_t tokenized;
};
PieceCounts promptPieceCounts();

class PromptTokenizer {
 public:
  PromptTokenizer(const llama_model* model, const std::string& path);

  /** The same tokens as llama_tokenize(text, add_special = true, parse_special = true). */
  std::vector<llama_token> tokenize(const std::string& text);

  /** Where tokenize cuts text: the end offset of each piece (the last is text.size()). */
  std::vector<size_t> pieceEnds(const std::string& text) const;

 private:
  /** Whether text tokenizes as text[0, end) followed by text[end, ...) when [start, end) is a special token. */
  bool cutsCleanly(const std::string& text, size_t start, size_t end) const;
  std::vector<llama_token> tokenizePiece(std::string_view piece, bool first) const;

  const llama_vocab* vocab_;
  /** Whether this vocabulary's tokenizer treats the text between special tokens independently. */
  bool piecewise_ = false;
  /** Texts of every token llama.cpp's tokenizer matches as a special token, by their first byte. */
  std::array<std::vector<std::string>, 256> specialsByFirstByte_;
  size_t longestSpecial_ = 0;
  /** Special tokens a piece may end with: control tokens that strip no whitespace around them. */
  std::vector<std::string> cutTokens_;
  std::shared_ptr<PieceCache> cache_;
};
