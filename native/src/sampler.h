// Per-sequence token sampling over one row of logits: greedy, or temperature with top-k and top-p.
#pragma once
#include <cstdint>
#include <random>
#include <vector>
#include "llama.h"

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax), deterministic
  float topP = 1.0f;         // >= 1: no nucleus cut
  int32_t topK = 0;          // <= 0: no top-k cut
  uint32_t seed = 0;
  std::vector<llama_token> banned;  // never sampled (e.g. end-of-generation tokens when ignoring EOS)
};

class SlotSampler {
 public:
  void configure(const SamplingParams& params);
  // Bans tokens by overwriting their logits in place (the row is this step's and is not read again).
  llama_token sample(float* logits, int32_t nVocab);

 private:
  void collectTopK(const float* logits, int32_t nVocab);
  size_t selectNucleus(double total);
  llama_token draw(size_t count, double mass);

  SamplingParams params_;
  std::mt19937 rng_;
  std::vector<llama_token> ids_;  // candidate token ids; ids_[0, n) are the ones sampled from
  std::vector<float> weights_;    // per token id: exp((logit - max) / temperature)
};
