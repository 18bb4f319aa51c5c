// Per-sequence token sampling over one row of logits.
#pragma once
#include <cstdint>
#include <vector>
#include "llama.h"

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax), deterministic
  float topP = 1.0f;
  int32_t topK = 0;          // <= 0: no top-k cut
  uint32_t seed = 0;
  std::vector<llama_token> banned;  // never sampled (e.g. end-of-generation tokens when ignoring EOS)
};

class SlotSampler {
 public:
  SlotSampler() = default;
  SlotSampler(const SlotSampler&) = delete;
  SlotSampler& operator=(const SlotSampler&) = delete;
  ~SlotSampler();

  void configure(const SamplingParams& params);
  // Bans tokens by overwriting their logits in place (the row is this step's and is not read again).
  llama_token sample(float* logits, int32_t nVocab);

 private:
  void collectCandidates(const float* logits, int32_t nVocab);

  SamplingParams params_;
  llama_sampler* chain_ = nullptr;  // top-p, temperature, dist; null when greedy
  std::vector<llama_token_data> candidates_;
};
