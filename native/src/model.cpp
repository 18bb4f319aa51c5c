#include "model.h"
#include "napi_arrays.h"

#include "ggml-backend.h"

#include <string>
#include <vector>
#include <algorithm>

Napi::Function Model::Define(Napi::Env env) {
  return DefineClass(env, "Model", {
    InstanceMethod<&Model::Tokenize>("tokenize"),
    InstanceMethod<&Model::TokenizePrompt>("tokenizePrompt"),
    InstanceMethod<&Model::PromptPieceEnds>("promptPieceEnds"),
    InstanceMethod<&Model::Detokenize>("detokenize"),
    InstanceMethod<&Model::TokenPieces>("tokenPieces"),
    InstanceMethod<&Model::Info>("info"),
    InstanceMethod<&Model::Meta>("meta"),
    InstanceMethod<&Model::Free>("free"),
  });
}

// new Model(path, { vocabOnly, gpuLayers, mmap })
Model::Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
  Napi::Env env = info.Env();
  const std::string path = info[0].As<Napi::String>();
  Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  llama_model_params params = llama_model_default_params();
  params.vocab_only = opts.Has("vocabOnly") && opts.Get("vocabOnly").ToBoolean();
  if (opts.Has("gpuLayers")) params.n_gpu_layers = opts.Get("gpuLayers").ToNumber().Int32Value();
  if (opts.Has("mmap") && !opts.Get("mmap").ToBoolean()) params.load_mode = LLAMA_LOAD_MODE_NONE;
  gpuLayers_ = params.n_gpu_layers;
  path_ = path;
  model_ = llama_model_load_from_file(path.c_str(), params);
  if (!model_) {
    Napi::Error::New(env, "failed to load model from " + path).ThrowAsJavaScriptException();
    return;
  }
  vocab_ = llama_model_get_vocab(model_);
}

Model::~Model() {
  if (model_) llama_model_free(model_);
}

// llama.cpp places the output layer on the first GPU whenever it offloads any layer (and there is a GPU).
bool Model::outputOnGpu() const {
  if (!model_ || gpuLayers_ == 0) return false;
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    const enum ggml_backend_dev_type type = ggml_backend_dev_type(ggml_backend_dev_get(i));
    if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
  }
  return false;
}

// llama.cpp offloads the last n_gpu_layers layers, the output layer counting as one more (negative: all).
bool Model::wholeModelOnGpu() const {
  return outputOnGpu() && (gpuLayers_ < 0 || gpuLayers_ > llama_model_n_layer(model_));
}

void Model::ensureLoaded(Napi::Env env) const {
  if (!model_) NAPI_THROW_VOID(Napi::Error::New(env, "model is freed"));
}

// tokenize(text, addSpecial, parseSpecial): Int32Array
Napi::Value Model::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  const std::string text = info[0].As<Napi::String>();
  const bool addSpecial = info[1].ToBoolean();
  const bool parseSpecial = info[2].ToBoolean();
  int32_t n = -llama_tokenize(vocab_, text.data(), (int32_t)text.size(), nullptr, 0, addSpecial, parseSpecial);
  auto out = Napi::Int32Array::New(env, n);
  if (n > 0) llama_tokenize(vocab_, text.data(), (int32_t)text.size(), out.Data(), n, addSpecial, parseSpecial);
  return out;
}

PromptTokenizer& Model::promptTokenizer() {
  if (!promptTokenizer_) promptTokenizer_ = std::make_unique<PromptTokenizer>(model_, path_);
  return *promptTokenizer_;
}

// tokenizePrompt(text): Int32Array, as tokenize(text, true, true), reusing the tokens of pieces seen before.
Napi::Value Model::TokenizePrompt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  return toInt32Array(env, promptTokenizer().tokenize(info[0].As<Napi::String>()));
}

// promptPieceEnds(text): Uint32Array, the UTF-8 byte offsets where tokenizePrompt cuts text into pieces.
Napi::Value Model::PromptPieceEnds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  const std::vector<size_t> ends = promptTokenizer().pieceEnds(info[0].As<Napi::String>());
  auto out = Napi::Uint32Array::New(env, ends.size());
  std::copy(ends.begin(), ends.end(), out.Data());
  return out;
}

// detokenize(tokens: Int32Array, renderSpecial): string
Napi::Value Model::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  auto tokens = info[0].As<Napi::Int32Array>();
  const bool renderSpecial = info[1].ToBoolean();
  std::string text(tokens.ElementLength() * 8 + 16, '\0');
  int32_t n = llama_detokenize(vocab_, tokens.Data(), (int32_t)tokens.ElementLength(), text.data(),
                               (int32_t)text.size(), false, renderSpecial);
  if (n < 0) {
    text.resize(-n);
    n = llama_detokenize(vocab_, tokens.Data(), (int32_t)tokens.ElementLength(), text.data(), (int32_t)text.size(),
                         false, renderSpecial);
  }
  text.resize(n);
  return Napi::String::New(env, text);
}

static std::string pieceOf(const llama_vocab* vocab, llama_token id, bool special) {
  char buf[256];
  int32_t n = llama_token_to_piece(vocab, id, buf, sizeof(buf), 0, special);
  if (n >= 0) return std::string(buf, n);
  std::string big(-n, '\0');
  n = llama_token_to_piece(vocab, id, big.data(), (int32_t)big.size(), 0, special);
  big.resize(n);
  return big;
}

// tokenPieces(): { bytes: Uint8Array, offsets: Uint32Array, special: Uint8Array } with the output bytes
// of every token, so the engine thread turns sampled tokens into text without a call into the addon per
// token. Special tokens (special[t] = 1) have their text here too; the engine shows it only for the
// tokens a request's chat format needs to see (e.g. a tool-call tag), as they are not plain text.
Napi::Value Model::TokenPieces(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  const int32_t nVocab = llama_vocab_n_tokens(vocab_);
  std::string bytes;
  auto offsets = Napi::Uint32Array::New(env, nVocab + 1);
  auto special = Napi::Uint8Array::New(env, nVocab);
  for (llama_token id = 0; id < nVocab; id++) {
    offsets[id] = (uint32_t)bytes.size();
    const std::string shown = pieceOf(vocab_, id, true);
    special[id] = shown != pieceOf(vocab_, id, false) ? 1 : 0;
    bytes += shown;
  }
  offsets[nVocab] = (uint32_t)bytes.size();
  auto out = Napi::Uint8Array::New(env, bytes.size());
  std::copy(bytes.begin(), bytes.end(), out.Data());
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", out);
  result.Set("offsets", offsets);
  result.Set("special", special);
  return result;
}

// info(): facts about the model that the engine and the API layer need.
Napi::Value Model::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  const int32_t nVocab = llama_vocab_n_tokens(vocab_);
  std::vector<llama_token> eog;
  for (llama_token id = 0; id < nVocab; id++) {
    if (llama_vocab_is_eog(vocab_, id)) eog.push_back(id);
  }
  char desc[256];
  llama_model_desc(model_, desc, sizeof(desc));
  const char* tmpl = llama_model_chat_template(model_, nullptr);
  Napi::Object o = Napi::Object::New(env);
  o.Set("description", desc);
  o.Set("vocabSize", nVocab);
  o.Set("contextTrain", llama_model_n_ctx_train(model_));
  o.Set("slidingWindow", llama_model_n_swa(model_));
  o.Set("embeddingSize", llama_model_n_embd(model_));
  o.Set("layers", llama_model_n_layer(model_));
  o.Set("parameters", (double)llama_model_n_params(model_));
  o.Set("sizeBytes", (double)llama_model_size(model_));
  o.Set("bos", llama_vocab_bos(vocab_));
  o.Set("eos", llama_vocab_eos(vocab_));
  o.Set("addBos", llama_vocab_get_add_bos(vocab_));
  o.Set("eogTokens", toInt32Array(env, eog));
  o.Set("chatTemplate", tmpl ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  return o;
}

// meta(key): string | null, a GGUF metadata value as text.
Napi::Value Model::Meta(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ensureLoaded(env);
  if (env.IsExceptionPending()) return env.Undefined();
  const std::string key = info[0].As<Napi::String>();
  int32_t n = llama_model_meta_val_str(model_, key.c_str(), nullptr, 0);
  if (n < 0) return env.Null();
  std::string value(n + 1, '\0');
  llama_model_meta_val_str(model_, key.c_str(), value.data(), value.size());
  value.resize(n);
  return Napi::String::New(env, value);
}

Napi::Value Model::Free(const Napi::CallbackInfo& info) {
  promptTokenizer_.reset();
  if (model_) llama_model_free(model_);
  model_ = nullptr;
  vocab_ = nullptr;
  return info.Env().Undefined();
}
