// Per-sequence token sampling over one row of logits: greedy, or temperature with top-k and top-p.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include "llama.h"

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax), deterministic
  float topP = 1.0f;         // >= 1: no nucleus cut
  int32_t topK = 0;          // <= 0: no top-k cut
  uint32_t seed = 0;
  std::vector<llama_token> banned;  // never sampled (e.g. end-of-generation tokens when ignoring EOS)
};

// A GBNF grammar the output must follow (e.g. tool-call JSON). Lazy: off until a trigger appears.
struct GrammarParams {
  std::string grammar;  // empty: none
  bool lazy = false;
  std::vector<std::string> triggerPatterns;
  std::vector<llama_token> triggerTokens;
  std::vector<llama_token> prefill;  // tokens already in the prompt that the grammar must first accept
};

// The first index of the highest of x[0, n) (vectorizable: see sampler.cpp).
llama_token argmax(const float* x, int32_t n);

class SlotSampler {
 public:
  // Throws std::runtime_error when the grammar does not parse.
  void configure(const SamplingParams& params, const llama_vocab* vocab, const GrammarParams& grammar);
  // Bans tokens by overwriting their logits in place (the row is this step's and is not read again).
  llama_token sample(float* logits, int32_t nVocab);

 private:
  llama_token pick(float* logits, int32_t nVocab);
  bool grammarAllows(llama_token token, float logit);
  void constrainToGrammar(float* logits, int32_t nVocab);
  void collectTopK(const float* logits, int32_t nVocab);
  size_t selectNucleus(double total);
  llama_token draw(size_t count, double mass);

  SamplingParams params_;
  std::mt19937 rng_;
  std::vector<llama_token> ids_;  // candidate token ids; ids_[0, n) are the ones sampled from
  std::vector<float> weights_;    // per token id: exp((logit - max) / temperature)
  std::unique_ptr<llama_sampler, decltype(&llama_sampler_free)> grammar_{nullptr, llama_sampler_free};
  std::vector<llama_token_data> allTokens_;  // scratch for applying the grammar to the whole row
};
