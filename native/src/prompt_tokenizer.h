// Tokenizes chat prompts in pieces cut after special tokens, and keeps the tokens of recent pieces: a
// conversation's next request repeats all of its earlier text, so only the new end is tokenized again.
#pragma once
#include "llama.h"

#include <array>
#include <cstddef>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

class PromptTokenizer {
 public:
  explicit PromptTokenizer(const llama_model* model);

  /** The same tokens as llama_tokenize(text, add_special = true, parse_special = true). */
  std::vector<llama_token> tokenize(const std::string& text);

  /** Where tokenize cuts text: the end offset of each piece (the last is text.size()). */
  std::vector<size_t> pieceEnds(const std::string& text) const;

 private:
  /** Whether text tokenizes as text[0, end) followed by text[end, ...) when [start, end) is a special token. */
  bool cutsCleanly(const std::string& text, size_t start, size_t end) const;
  std::vector<llama_token> tokenizePiece(std::string_view piece, bool first) const;
  const std::vector<llama_token>& cached(std::string_view piece, bool first);

  const llama_vocab* vocab_;
  /** Whether this vocabulary's tokenizer treats the text between special tokens independently. */
  bool piecewise_ = false;
  /** Texts of every token llama.cpp's tokenizer matches as a special token, by their first byte. */
  std::array<std::vector<std::string>, 256> specialsByFirstByte_;
  size_t longestSpecial_ = 0;
  /** Special tokens a piece may end with: control tokens that strip no whitespace around them. */
  std::vector<std::string> cutTokens_;

  /** Least recently used first; keys are the piece with a leading byte saying whether it starts the prompt. */
  std::list<std::pair<std::string, std::vector<llama_token>>> lru_;
  std::unordered_map<std::string_view, decltype(lru_)::iterator> index_;
  size_t cachedBytes_ = 0;
};
