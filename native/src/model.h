// A loaded GGUF model (or only its vocabulary), shared by the contexts made from it.
#pragma once
#include <napi.h>
#include "llama.h"
#include "prompt_tokenizer.h"

#include <memory>
#include <string>

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Model(const Napi::CallbackInfo& info);
  ~Model() override;

  llama_model* get() const { return model_; }
  const llama_vocab* vocab() const { return vocab_; }
  /** Whether the output layer (the logits) is computed on a GPU. */
  bool outputOnGpu() const;
  /** Whether every layer runs on a GPU. */
  bool wholeModelOnGpu() const;

 private:
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value TokenizePrompt(const Napi::CallbackInfo& info);
  Napi::Value PromptPieceEnds(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value TokenPieces(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Meta(const Napi::CallbackInfo& info);
  Napi::Value Free(const Napi::CallbackInfo& info);

  void ensureLoaded(Napi::Env env) const;
  PromptTokenizer& promptTokenizer();

  llama_model* model_ = nullptr;
  const llama_vocab* vocab_ = nullptr;
  int32_t gpuLayers_ = 0;
  std::string path_;
  std::unique_ptr<PromptTokenizer> promptTokenizer_;  // made on first use
};
