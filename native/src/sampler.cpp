#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>

SlotSampler::~SlotSampler() {
  if (chain_) llama_sampler_free(chain_);
}

void SlotSampler::configure(const SamplingParams& params) {
  params_ = params;
  if (chain_) {
    llama_sampler_free(chain_);
    chain_ = nullptr;
  }
  if (params.temperature <= 0.0f) return;
  chain_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
  if (params.topP < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(params.topP, 1));
  llama_sampler_chain_add(chain_, llama_sampler_init_temp(params.temperature));
  llama_sampler_chain_add(chain_, llama_sampler_init_dist(params.seed));
}

// Top-k is taken here in one pass with a small min-heap, so the chain works on k candidates instead of
// the whole vocabulary (150k entries for Qwen): that keeps sampling cost negligible next to decoding.
void SlotSampler::collectCandidates(const float* logits, int32_t nVocab) {
  candidates_.clear();
  const int32_t k = params_.topK > 0 && params_.topK < nVocab ? params_.topK : nVocab;
  if (k == nVocab) {
    candidates_.reserve(nVocab);
    for (llama_token id = 0; id < nVocab; id++) candidates_.push_back({id, logits[id], 0.0f});
    return;
  }
  auto greater = [](const llama_token_data& a, const llama_token_data& b) { return a.logit > b.logit; };
  candidates_.reserve(k);
  for (llama_token id = 0; id < nVocab; id++) {
    if ((int32_t)candidates_.size() < k) {
      candidates_.push_back({id, logits[id], 0.0f});
      std::push_heap(candidates_.begin(), candidates_.end(), greater);
    } else if (logits[id] > candidates_.front().logit) {
      std::pop_heap(candidates_.begin(), candidates_.end(), greater);
      candidates_.back() = {id, logits[id], 0.0f};
      std::push_heap(candidates_.begin(), candidates_.end(), greater);
    }
  }
  std::sort(candidates_.begin(), candidates_.end(), greater);
}

llama_token SlotSampler::sample(float* logits, int32_t nVocab) {
  for (llama_token id : params_.banned) {
    if (id >= 0 && id < nVocab) logits[id] = -INFINITY;
  }
  if (!chain_) {
    return (llama_token)(std::max_element(logits, logits + nVocab) - logits);
  }
  collectCandidates(logits, nVocab);
  const bool sorted = (int32_t)candidates_.size() < nVocab;  // the top-k path sorts
  llama_token_data_array arr{candidates_.data(), candidates_.size(), -1, sorted};
  llama_sampler_apply(chain_, &arr);
  return arr.data[arr.selected].id;
}
