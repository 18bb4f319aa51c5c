#include "prompt_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <utility>

// Pieces shorter than this are not cut: a cut saves little there, and every piece is one more tokenizer call.
static constexpr size_t MIN_PIECE_BYTES = 4096;
// Text and tokens of the pieces kept, per model file.
static constexpr size_t CACHE_BYTES = 64u << 20;

static std::atomic<uint64_t> piecesReused{0};
static std::atomic<uint64_t> piecesTokenized{0};

PieceCounts promptPieceCounts() {
  return {piecesReused.load(), piecesTokenized.load()};
}

std::shared_ptr<PieceCache> PieceCache::forModelFile(const std::string& path) {
  static std::mutex registryMutex;
  static std::unordered_map<std::string, std::weak_ptr<PieceCache>> registry;
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (error) return std::make_shared<PieceCache>();  // not shared: nothing says the file is the same one
  const auto modified = std::filesystem::last_write_time(path, error);
  if (error) return std::make_shared<PieceCache>();
  const std::string key = path + '\0' + std::to_string(size) + '\0' + std::to_string(modified.time_since_epoch().count());
  std::lock_guard lock(registryMutex);
  std::shared_ptr<PieceCache> cache = registry[key].lock();
  if (!cache) registry[key] = cache = std::make_shared<PieceCache>();
  return cache;
}

bool PieceCache::appendTo(const std::string& key, std::vector<llama_token>& out) {
  std::lock_guard lock(mutex_);
  const auto hit = index_.find(key);
  if (hit == index_.end()) return false;
  lru_.splice(lru_.end(), lru_, hit->second);
  out.insert(out.end(), hit->second->second.begin(), hit->second->second.end());
  return true;
}

void PieceCache::keep(std::string key, std::vector<llama_token> tokens) {
  std::lock_guard lock(mutex_);
  if (index_.count(key)) return;  // another worker kept it meanwhile
  bytes_ += key.size() + tokens.size() * sizeof(llama_token);
  lru_.emplace_back(std::move(key), std::move(tokens));
  index_.emplace(std::string_view(lru_.back().first), std::prev(lru_.end()));
  while (bytes_ > CACHE_BYTES && lru_.size() > 1) {
    const auto& [oldKey, oldTokens] = lru_.front();
    bytes_ -= oldKey.size() + oldTokens.size() * sizeof(llama_token);
    index_.erase(std::string_view(oldKey));
    lru_.pop_front();
  }
}

static std::string metaString(const llama_model* model, const char* key) {
  char buf[64];
  const int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
  return n < 0 ? std::string() : std::string(buf, std::min<size_t>(n, sizeof(buf) - 1));
}

// Why cutting is exact. With parse_special, llama.cpp first splits the text at the special tokens it finds
// (llama_vocab::impl::tokenizer_st_partition), then tokenizes every stretch of text between them on its own.
// The SPM and BPE tokenizers keep no state from one stretch to the next, except SPM's space prefix, which a
// stretch after a special token gets, as does a piece's start when tokenized alone (add_special only adds BOS
// there, and EOS, which vocabularies that add it are not cut for). So cutting right after a special token S
// changes nothing as long as the splitting finds S there in the whole text, and finds the same tokens in both
// pieces: which holds when no other special token's text overlaps S or runs across the cut (cutsCleanly), and
// S strips no whitespace after it into its own match.
PromptTokenizer::PromptTokenizer(const llama_model* model, const std::string& path)
    : vocab_(llama_model_get_vocab(model)), cache_(PieceCache::forModelFile(path)) {
  const enum llama_vocab_type type = llama_vocab_type(vocab_);
  const std::string tokenizerModel = metaString(model, "tokenizer.ggml.model");
  piecewise_ = ((type == LLAMA_VOCAB_TYPE_SPM && tokenizerModel == "llama") ||
                (type == LLAMA_VOCAB_TYPE_BPE && (tokenizerModel == "gpt2" || tokenizerModel == "gemma4"))) &&
               !llama_vocab_get_add_eos(vocab_) && !llama_vocab_get_add_sep(vocab_);
  if (!piecewise_) return;
  const int32_t n = llama_vocab_n_tokens(vocab_);
  for (llama_token id = 0; id < n; id++) {
    const int attr = llama_vocab_get_attr(vocab_, id);
    if (!(attr & (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN))) continue;
    const char* text = llama_vocab_get_text(vocab_, id);
    if (!text || !*text) continue;
    std::string s(text);
    longestSpecial_ = std::max(longestSpecial_, s.size());
    if ((attr & LLAMA_TOKEN_ATTR_CONTROL) && !(attr & (LLAMA_TOKEN_ATTR_LSTRIP | LLAMA_TOKEN_ATTR_RSTRIP))) {
      cutTokens_.push_back(s);
    }
    specialsByFirstByte_[(unsigned char)s[0]].push_back(std::move(s));
  }
}

bool PromptTokenizer::cutsCleanly(const std::string& text, size_t start, size_t end) const {
  // Any other special token's match that overlaps [start, end) or runs past end starts in this window.
  const size_t from = start + 1 > longestSpecial_ ? start + 1 - longestSpecial_ : 0;
  for (size_t p = from; p < end; p++) {
    for (const std::string& other : specialsByFirstByte_[(unsigned char)text[p]]) {
      if (p + other.size() <= start) continue;                // ends before S
      if (p == start && other.size() == end - start) continue;  // S's own text
      if (text.compare(p, other.size(), other) == 0) return false;
    }
  }
  return true;
}

std::vector<size_t> PromptTokenizer::pieceEnds(const std::string& text) const {
  if (!piecewise_ || text.size() < 2 * MIN_PIECE_BYTES) return {text.size()};
  std::vector<std::pair<size_t, size_t>> matches;  // [start, end) of every cut token's text, overlaps included
  for (const std::string& token : cutTokens_) {
    for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + 1)) {
      matches.emplace_back(at, at + token.size());
    }
  }
  std::sort(matches.begin(), matches.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  std::vector<size_t> ends;
  size_t pieceStart = 0;
  for (const auto& [start, end] : matches) {
    if (end - pieceStart < MIN_PIECE_BYTES || end == text.size() || start < pieceStart) continue;
    if (!cutsCleanly(text, start, end)) continue;
    ends.push_back(end);
    pieceStart = end;
  }
  ends.push_back(text.size());
  return ends;
}

std::vector<llama_token> PromptTokenizer::tokenizePiece(std::string_view piece, bool first) const {
  const int32_t n = -llama_tokenize(vocab_, piece.data(), (int32_t)piece.size(), nullptr, 0, first, true);
  std::vector<llama_token> tokens(std::max(n, 0));
  if (n > 0) llama_tokenize(vocab_, piece.data(), (int32_t)piece.size(), tokens.data(), n, first, true);
  return tokens;
}

std::vector<llama_token> PromptTokenizer::tokenize(const std::string& text) {
  const std::vector<size_t> ends = pieceEnds(text);
  if (ends.size() == 1) return tokenizePiece(text, true);
  std::vector<llama_token> out;
  size_t start = 0;
  for (size_t end : ends) {
    const std::string_view piece = std::string_view(text).substr(start, end - start);
    std::string key;
    key.reserve(piece.size() + 1);
    key += start == 0 ? 'B' : '-';  // the first piece also gets BOS
    key += piece;
    if (cache_->appendTo(key, out)) {
      piecesReused++;
    } else {
      std::vector<llama_token> tokens = tokenizePiece(piece, start == 0);
      out.insert(out.end(), tokens.begin(), tokens.end());
      cache_->keep(std::move(key), std::move(tokens));
      piecesTokenized++;
    }
    start = end;
  }
  return out;
}
