#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

// Sampling is done here rather than with llama.cpp's sampler chain because the chain sorts the whole
// vocabulary for top-p (150k entries for Qwen: 15 ms or more a token on one core, more than decoding a
// small model). Here nothing is sorted but a top-k window: top-k is one pass with a small heap, and the
// top-p nucleus is found by a weighted quickselect, in linear time.
// Order of operations, as in Hugging Face and vLLM: temperature, then top-k, then top-p.

void SlotSampler::configure(const SamplingParams& params, const llama_vocab* vocab, const GrammarParams& grammar) {
  params_ = params;
  rng_.seed(params.seed);
  grammar_.reset();
  if (grammar.grammar.empty()) return;
  llama_sampler* g;
  if (grammar.lazy) {
    std::vector<const char*> patterns;
    for (const auto& p : grammar.triggerPatterns) patterns.push_back(p.c_str());
    g = llama_sampler_init_grammar_lazy_patterns(vocab, grammar.grammar.c_str(), "root", patterns.data(), patterns.size(),
                                                 grammar.triggerTokens.data(), grammar.triggerTokens.size());
  } else {
    g = llama_sampler_init_grammar(vocab, grammar.grammar.c_str(), "root");
  }
  if (!g) throw std::runtime_error("the grammar does not parse");
  grammar_.reset(g);
  for (llama_token t : grammar.prefill) llama_sampler_accept(g, t);
}

bool SlotSampler::grammarAllows(llama_token token, float logit) {
  llama_token_data one{token, logit, 0.0f};
  llama_token_data_array arr{&one, 1, -1, false};
  llama_sampler_apply(grammar_.get(), &arr);
  return one.logit != -INFINITY;
}

void SlotSampler::constrainToGrammar(float* logits, int32_t nVocab) {
  allTokens_.resize(nVocab);
  for (llama_token id = 0; id < nVocab; id++) allTokens_[id] = {id, logits[id], 0.0f};
  llama_token_data_array arr{allTokens_.data(), allTokens_.size(), -1, false};
  llama_sampler_apply(grammar_.get(), &arr);
  for (size_t i = 0; i < arr.size; i++) logits[arr.data[i].id] = arr.data[i].logit;
}

// ids_ = the topK highest-logit tokens, highest first.
void SlotSampler::collectTopK(const float* logits, int32_t nVocab) {
  const int32_t k = params_.topK;
  auto higher = [logits](llama_token a, llama_token b) { return logits[a] > logits[b]; };
  ids_.clear();
  for (llama_token id = 0; id < nVocab; id++) {
    if ((int32_t)ids_.size() < k) {
      ids_.push_back(id);
      std::push_heap(ids_.begin(), ids_.end(), higher);
    } else if (logits[id] > logits[ids_.front()]) {
      std::pop_heap(ids_.begin(), ids_.end(), higher);
      ids_.back() = id;
      std::push_heap(ids_.begin(), ids_.end(), higher);
    }
  }
  std::sort_heap(ids_.begin(), ids_.end(), higher);
}

// Reorders ids_ so that its first n entries are the smallest set of highest-weight tokens holding at
// least topP of `total`; returns n. Ties at the boundary are all kept.
size_t SlotSampler::selectNucleus(double total) {
  const double need = params_.topP * total;
  double kept = 0.0;  // mass of ids_[0, lo), all in the nucleus
  size_t lo = 0, hi = ids_.size();
  while (lo < hi) {
    const float pivot = weights_[ids_[lo + (hi - lo) / 2]];
    auto greaterEnd = std::partition(ids_.begin() + lo, ids_.begin() + hi, [&](llama_token id) { return weights_[id] > pivot; });
    auto equalEnd = std::partition(greaterEnd, ids_.begin() + hi, [&](llama_token id) { return weights_[id] == pivot; });
    double greaterMass = 0.0;
    for (auto it = ids_.begin() + lo; it != greaterEnd; ++it) greaterMass += weights_[*it];
    const size_t g = greaterEnd - ids_.begin(), e = equalEnd - ids_.begin();
    if (kept + greaterMass >= need) {
      hi = g;  // the boundary lies among the greater ones
    } else if (kept + greaterMass + pivot * (double)(e - g) >= need) {
      return e;
    } else {
      kept += greaterMass + pivot * (double)(e - g);
      lo = e;
    }
  }
  return std::max<size_t>(lo, 1);
}

llama_token SlotSampler::draw(size_t count, double mass) {
  double target = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (size_t i = 0; i < count; i++) {
    target -= weights_[ids_[i]];
    if (target <= 0.0) return ids_[i];
  }
  return ids_[count - 1];  // rounding left a sliver of mass
}

// With a grammar, the token is first drawn freely and only checked: checking one token is cheap, while
// constraining the whole row costs a grammar walk per vocabulary entry, so that is done only when the
// free draw breaks the grammar (as llama.cpp's server does).
llama_token SlotSampler::sample(float* logits, int32_t nVocab) {
  for (llama_token id : params_.banned) {
    if (id >= 0 && id < nVocab) logits[id] = -INFINITY;
  }
  if (!grammar_) return pick(logits, nVocab);
  llama_token token = pick(logits, nVocab);
  if (!grammarAllows(token, logits[token])) {
    constrainToGrammar(logits, nVocab);
    token = pick(logits, nVocab);
  }
  llama_sampler_accept(grammar_.get(), token);
  return token;
}

// The first index of the highest logit, as std::max_element gives it, but vectorizable: std::max_element
// tracks an index per element and runs one compare at a time (0.15 ms for a 150k vocabulary, per
// sequence per step). Here each block's maximum is taken lane-wise, and only the block holding the
// highest one is searched for its index.
llama_token argmax(const float* x, int32_t n) {
  constexpr int32_t kLanes = 16, kBlock = 256;
  float best = -INFINITY;
  int32_t bestBlock = 0;
  int32_t start = 0;
  for (; start + kBlock <= n; start += kBlock) {
    float lanes[kLanes];
    for (int32_t j = 0; j < kLanes; j++) lanes[j] = x[start + j];
    for (int32_t i = start + kLanes; i < start + kBlock; i += kLanes) {
      for (int32_t j = 0; j < kLanes; j++) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
    }
    float blockMax = lanes[0];
    for (int32_t j = 1; j < kLanes; j++) blockMax = lanes[j] > blockMax ? lanes[j] : blockMax;
    if (blockMax > best) {
      best = blockMax;
      bestBlock = start;
    }
  }
  for (int32_t i = start; i < n; i++) {  // the tail that fills no block
    if (x[i] > best) return (llama_token)(std::max_element(x + i, x + n) - x);
  }
  if (n < kBlock) return (llama_token)(std::max_element(x, x + n) - x);
  for (int32_t i = bestBlock; i < bestBlock + kBlock; i++) {
    if (x[i] == best) return i;
  }
  return (llama_token)(std::max_element(x, x + n) - x);  // only NaN rows get here (no block max was ever set)
}

llama_token SlotSampler::pick(float* logits, int32_t nVocab) {
  const llama_token best = argmax(logits, nVocab);
  if (params_.temperature <= 0.0f) return best;

  const float maxLogit = logits[best];
  const float invTemperature = 1.0f / params_.temperature;
  weights_.resize(nVocab);
  if (params_.topK > 0 && params_.topK < nVocab) {
    collectTopK(logits, nVocab);
  } else {
    ids_.resize(nVocab);
    for (llama_token id = 0; id < nVocab; id++) ids_[id] = id;
  }
  double total = 0.0;
  for (llama_token id : ids_) {
    // Below e^-30 of the top token's weight a token's chance is nil; skipping exp() there makes this
    // pass cheap for real models, whose rows are mostly far below their maximum.
    const float x = (logits[id] - maxLogit) * invTemperature;
    total += (weights_[id] = x > -30.0f ? std::exp(x) : 0.0f);
  }
  if (params_.topP >= 1.0f) return draw(ids_.size(), total);
  const size_t n = selectNucleus(total);
  double mass = 0.0;
  for (size_t i = 0; i < n; i++) mass += weights_[ids_[i]];
  return draw(n, mass);
}
