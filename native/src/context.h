// The inference context: KV cache with one sequence per slot, batched decoding and per-slot sampling.
// Used from exactly one thread (the engine thread).
#pragma once
#include <napi.h>
#include <vector>
#include "graph_greedy.h"
#include "llama.h"
#include "sampler.h"

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Context(const Napi::CallbackInfo& info);
  ~Context() override;

  /** The llama.cpp context (null once freed), for the image decoding of vision.cpp. */
  llama_context* get() const { return ctx_; }

 private:
  Napi::Value Configure(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Sample(const Napi::CallbackInfo& info);
  Napi::Value SeqRemove(const Napi::CallbackInfo& info);
  Napi::Value SeqCopy(const Napi::CallbackInfo& info);
  Napi::Value SeqPosMax(const Napi::CallbackInfo& info);
  Napi::Value SeqPosMin(const Napi::CallbackInfo& info);
  Napi::Value SeqStateGet(const Napi::CallbackInfo& info);
  Napi::Value SeqStateSize(const Napi::CallbackInfo& info);
  Napi::Value SeqStateSet(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);

  void release();

  Napi::ObjectReference modelRef_;  // keeps the model alive as long as this context
  llama_context* ctx_ = nullptr;
  llama_batch batch_{};
  int32_t batchCapacity_ = 0;
  const llama_vocab* vocab_ = nullptr;
  int32_t nVocab_ = 0;
  std::vector<SlotSampler> samplers_;  // one per sequence id
  std::vector<int32_t> outputs_;       // batch indices the last decode computed logits for, until sampled
  bool wholeModelOnGpu_ = false;       // llama_decode then only queues the step (it runs asynchronously)
  // Greedy sampling inside the decode graph (graph_greedy.h), so the logits are not copied out. Per sequence:
  // the chain attached while that sequence samples greedily, else null.
  GraphArgmax graphArgmax_;
  std::vector<llama_sampler*> greedyChains_;
  bool greedyInGraph(llama_seq_id seq) const { return greedyChains_[seq] != nullptr; }
  void freeGreedyChains();
};
