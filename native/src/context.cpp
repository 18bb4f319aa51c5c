#include "context.h"

#include <string>
#include "model.h"

Napi::Function Context::Define(Napi::Env env) {
  return DefineClass(env, "Context", {
    InstanceMethod<&Context::Configure>("configureSampler"),
    InstanceMethod<&Context::Decode>("decode"),
    InstanceMethod<&Context::Sample>("sample"),
    InstanceMethod<&Context::SeqRemove>("seqRemove"),
    InstanceMethod<&Context::SeqCopy>("seqCopy"),
    InstanceMethod<&Context::SeqPosMax>("seqPosMax"),
    InstanceMethod<&Context::SeqPosMin>("seqPosMin"),
    InstanceMethod<&Context::SeqStateGet>("seqStateGet"),
    InstanceMethod<&Context::SeqStateSize>("seqStateSize"),
    InstanceMethod<&Context::SeqStateSet>("seqStateSet"),
    InstanceMethod<&Context::Info>("info"),
    InstanceMethod<&Context::Free>("free"),
  });
}

void Context::freeGreedyChains() {
  for (llama_sampler* chain : greedyChains_) llama_sampler_free(chain);  // null-safe
  greedyChains_.clear();
}

// sample's status when llama.cpp gave no token for a sequence sampled inside the graph (never expected).
static constexpr int32_t kNothingSampled = -100;

static uint32_t optU32(const Napi::Object& o, const char* key, uint32_t fallback) {
  return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).ToNumber().Uint32Value() : fallback;
}

static ggml_type kvTypeOf(const Napi::Object& o) {
  const std::string name = o.Has("kvType") ? o.Get("kvType").ToString().Utf8Value() : "f16";
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  if (name == "q4_0") return GGML_TYPE_Q4_0;
  return GGML_TYPE_F16;
}

// new Context(model, { contextSize, batchSize, ubatchSize, sequences, threads, threadsBatch, kvUnified, kvType,
// flashAttention }). flashAttention: -1 auto, 0 off, 1 on; kvType: 'f16' | 'q8_0' | 'q4_0' (keys and values).
Context::Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
  Napi::Env env = info.Env();
  Model* model = Model::Unwrap(info[0].As<Napi::Object>());
  if (!model->get()) NAPI_THROW_VOID(Napi::Error::New(env, "model is freed"));
  modelRef_ = Napi::Persistent(info[0].As<Napi::Object>());
  Napi::Object opts = info[1].As<Napi::Object>();

  llama_context_params params = llama_context_default_params();
  params.n_ctx = optU32(opts, "contextSize", 4096);
  params.n_batch = optU32(opts, "batchSize", 512);
  params.n_ubatch = optU32(opts, "ubatchSize", params.n_batch);
  params.n_seq_max = optU32(opts, "sequences", 1);
  params.n_threads = (int32_t)optU32(opts, "threads", 4);
  params.n_threads_batch = (int32_t)optU32(opts, "threadsBatch", params.n_threads);
  // kvUnified: one pool of cells for all sequences (any sequence may use up to contextSize of them, and a
  // copied prefix shares its cells); otherwise one stream of contextSize / sequences cells per sequence.
  params.kv_unified = opts.Has("kvUnified") && opts.Get("kvUnified").ToBoolean();
  params.type_k = params.type_v = kvTypeOf(opts);
  // Sliding-window layers keep only the window's cells (n_swa x sequences + n_ubatch), as llama-server
  // does; the engine checks that a reused prefix still has its window (seqPosMin).
  params.swa_full = false;
  if (opts.Has("flashAttention")) params.flash_attn_type = (llama_flash_attn_type)opts.Get("flashAttention").ToNumber().Int32Value();
  params.no_perf = true;
  // Every sequence starts with a greedy chain attached: attaching or detaching one later makes llama.cpp
  // re-plan its graphs at the next decode, so that happens only when a sequence switches sampling mode.
  wholeModelOnGpu_ = model->wholeModelOnGpu();
  std::vector<llama_sampler_seq_config> chains;
  greedyChains_.resize(params.n_seq_max);
  for (uint32_t seq = 0; seq < params.n_seq_max; seq++) {
    greedyChains_[seq] = newGraphGreedyChain(&graphArgmax_);
    chains.push_back({(llama_seq_id)seq, greedyChains_[seq]});
  }
  params.samplers = chains.data();
  params.n_samplers = chains.size();
  ctx_ = llama_init_from_model(model->get(), params);
  if (!ctx_) {
    freeGreedyChains();
    NAPI_THROW_VOID(Napi::Error::New(env, "failed to create the llama.cpp context"));
  }

  batchCapacity_ = (int32_t)params.n_batch;
  batch_ = llama_batch_init(batchCapacity_, 0, 1);
  vocab_ = model->vocab();
  nVocab_ = llama_vocab_n_tokens(vocab_);
  samplers_.resize(params.n_seq_max);
}

Context::~Context() { release(); }

void Context::release() {
  if (!ctx_) return;
  llama_batch_free(batch_);
  llama_free(ctx_);
  ctx_ = nullptr;
  freeGreedyChains();
  samplers_.clear();
  modelRef_.Reset();
}

static std::vector<llama_token> tokensOf(const Napi::Object& o, const char* key) {
  if (!o.Has(key) || !o.Get(key).IsTypedArray()) return {};
  auto a = o.Get(key).As<Napi::Int32Array>();
  return std::vector<llama_token>(a.Data(), a.Data() + a.ElementLength());
}

// configureSampler(seq, { temperature, topP, topK, seed, banned?, grammar?, grammarLazy?,
//   grammarTriggerPatterns?, grammarTriggerTokens?, grammarPrefill? }): throws when the grammar does not parse.
Napi::Value Context::Configure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t seq = info[0].ToNumber().Uint32Value();
  if (!ctx_ || seq >= samplers_.size()) NAPI_THROW(Napi::RangeError::New(env, "bad sequence id"), env.Undefined());
  Napi::Object o = info[1].As<Napi::Object>();
  SamplingParams p;
  if (o.Has("temperature")) p.temperature = o.Get("temperature").ToNumber().FloatValue();
  if (o.Has("topP")) p.topP = o.Get("topP").ToNumber().FloatValue();
  if (o.Has("topK")) p.topK = o.Get("topK").ToNumber().Int32Value();
  if (o.Has("seed")) p.seed = o.Get("seed").ToNumber().Uint32Value();
  p.banned = tokensOf(o, "banned");
  GrammarParams g;
  if (o.Has("grammar") && o.Get("grammar").IsString()) g.grammar = o.Get("grammar").As<Napi::String>().Utf8Value();
  g.lazy = o.Has("grammarLazy") && o.Get("grammarLazy").ToBoolean();
  if (o.Has("grammarTriggerPatterns") && o.Get("grammarTriggerPatterns").IsArray()) {
    auto patterns = o.Get("grammarTriggerPatterns").As<Napi::Array>();
    for (uint32_t i = 0; i < patterns.Length(); i++) g.triggerPatterns.push_back(patterns.Get(i).ToString().Utf8Value());
  }
  g.triggerTokens = tokensOf(o, "grammarTriggerTokens");
  g.prefill = tokensOf(o, "grammarPrefill");
  try {
    samplers_[seq].configure(p, vocab_, g);
  } catch (const std::exception& e) {
    NAPI_THROW(Napi::Error::New(env, e.what()), env.Undefined());
  }
  // A chain is initialized for the backend once (when attached), so each attachment gets a new one.
  const bool inGraph = p.temperature <= 0 && p.banned.empty() && g.grammar.empty();
  if (inGraph != greedyInGraph(seq)) {
    llama_sampler* chain = inGraph ? newGraphGreedyChain(&graphArgmax_) : nullptr;
    llama_set_sampler(ctx_, (llama_seq_id)seq, chain);
    if (greedyChains_[seq]) llama_sampler_free(greedyChains_[seq]);
    greedyChains_[seq] = chain;
  }
  return env.Undefined();
}

// decode(tokens, positions, seqIds, nTokens, sampleAt, nSample): number
// Runs one llama_decode over the first nTokens entries; the first nSample batch indices in sampleAt are the
// entries to sample from, afterwards, with sample(). Returns llama_decode's status (0 on success). With the
// whole model on a GPU this returns once the step is queued there; sample() waits for it. Typed arrays are
// the caller's, reused every step.
Napi::Value Context::Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  auto tokens = info[0].As<Napi::Int32Array>();
  auto positions = info[1].As<Napi::Int32Array>();
  auto seqIds = info[2].As<Napi::Int32Array>();
  const int32_t nTokens = info[3].ToNumber().Int32Value();
  auto sampleAt = info[4].As<Napi::Int32Array>();
  const int32_t nSample = info[5].ToNumber().Int32Value();
  if (nTokens <= 0 || nTokens > batchCapacity_ || (size_t)nTokens > tokens.ElementLength() ||
      (size_t)nTokens > positions.ElementLength() || (size_t)nTokens > seqIds.ElementLength() || nSample < 0 ||
      (size_t)nSample > sampleAt.ElementLength()) {
    NAPI_THROW(Napi::RangeError::New(env, "decode: bad batch sizes"), env.Undefined());
  }
  outputs_.clear();
  batch_.n_tokens = nTokens;
  for (int32_t i = 0; i < nTokens; i++) {
    const int32_t seq = seqIds[i];
    if (seq < 0 || (size_t)seq >= samplers_.size()) NAPI_THROW(Napi::RangeError::New(env, "decode: bad sequence id"), env.Undefined());
    batch_.token[i] = tokens[i];
    batch_.pos[i] = positions[i];
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = 0;
  }
  for (int32_t j = 0; j < nSample; j++) {
    const int32_t at = sampleAt[j];
    if (at < 0 || at >= nTokens) NAPI_THROW(Napi::RangeError::New(env, "decode: bad sample index"), env.Undefined());
    batch_.logits[at] = 1;
  }
  const int32_t status = llama_decode(ctx_, batch_);
  if (status == 0) outputs_.assign(sampleAt.Data(), sampleAt.Data() + nSample);
  return Napi::Number::New(env, status);
}

// sample(sampled): number. Samples one token for each entry the last decode named, in its order, into sampled
// (with the sampler of that entry's sequence). Returns 0, or kNothingSampled.
Napi::Value Context::Sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  auto sampled = info[0].As<Napi::Int32Array>();
  if (outputs_.size() > sampled.ElementLength()) NAPI_THROW(Napi::RangeError::New(env, "sample: array too short"), env.Undefined());
  for (size_t j = 0; j < outputs_.size(); j++) {
    const int32_t at = outputs_[j];
    const llama_seq_id seq = batch_.seq_id[at][0];
    sampled[j] = greedyInGraph(seq) ? llama_get_sampled_token_ith(ctx_, at)
                                   : samplers_[seq].sample(llama_get_logits_ith(ctx_, at), nVocab_);
    if (sampled[j] == LLAMA_TOKEN_NULL) return Napi::Number::New(env, kNothingSampled);
  }
  outputs_.clear();
  return Napi::Number::New(env, 0);
}

// seqRemove(seq, p0, p1): boolean. Removes positions [p0, p1) of seq (-1: open end; seq -1: all).
Napi::Value Context::SeqRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  const bool ok = llama_memory_seq_rm(llama_get_memory(ctx_), info[0].ToNumber().Int32Value(),
                                      info[1].ToNumber().Int32Value(), info[2].ToNumber().Int32Value());
  return Napi::Boolean::New(env, ok);
}

// seqCopy(src, dst, p0, p1): gives dst src's positions [p0, p1) (-1: open end); in the pool (one KV stream)
// dst shares src's cells, nothing is copied.
Napi::Value Context::SeqCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  llama_memory_seq_cp(llama_get_memory(ctx_), info[0].ToNumber().Int32Value(), info[1].ToNumber().Int32Value(),
                      info[2].ToNumber().Int32Value(), info[3].ToNumber().Int32Value());
  return env.Undefined();
}

// seqPosMax(seq): the largest position held for seq, -1 when empty.
Napi::Value Context::SeqPosMax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  return Napi::Number::New(env, llama_memory_seq_pos_max(llama_get_memory(ctx_), info[0].ToNumber().Int32Value()));
}

// seqPosMin(seq): the smallest position held for seq in every layer's cache, -1 when empty. With sliding-window
// layers, positions that fell out of the window are gone from theirs.
Napi::Value Context::SeqPosMin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  return Napi::Number::New(env, llama_memory_seq_pos_min(llama_get_memory(ctx_), info[0].ToNumber().Int32Value()));
}

Napi::Value Context::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  Napi::Object o = Napi::Object::New(env);
  o.Set("contextSize", llama_n_ctx(ctx_));
  o.Set("batchSize", llama_n_batch(ctx_));
  o.Set("ubatchSize", llama_n_ubatch(ctx_));
  o.Set("sequences", llama_n_seq_max(ctx_));
  o.Set("wholeModelOnGpu", wholeModelOnGpu_);
  return o;
}

Napi::Value Context::Free(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

// seqStateGet(seq): Buffer. The sequence's KV state, as llama_state_seq_get_data serializes it.
Napi::Value Context::SeqStateGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  const llama_seq_id seq = info[0].ToNumber().Int32Value();
  const size_t size = llama_state_seq_get_size(ctx_, seq);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, size);
  if (llama_state_seq_get_data(ctx_, out.Data(), size, seq) != size) {
    NAPI_THROW(Napi::Error::New(env, "failed to read the sequence's KV state"), env.Undefined());
  }
  return out;
}

// seqStateSize(seq): number. The size of seqStateGet's result, found without copying the state.
Napi::Value Context::SeqStateSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  return Napi::Number::New(env, (double)llama_state_seq_get_size(ctx_, info[0].ToNumber().Int32Value()));
}

// seqStateSet(seq, data): boolean. Replaces the sequence's KV state with one from seqStateGet; false (and
// the sequence left empty) when the data does not fit this context.
Napi::Value Context::SeqStateSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ctx_) NAPI_THROW(Napi::Error::New(env, "context is freed"), env.Undefined());
  const llama_seq_id seq = info[0].ToNumber().Int32Value();
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  llama_memory_seq_rm(llama_get_memory(ctx_), seq, -1, -1);
  const size_t read = llama_state_seq_set_data(ctx_, data.Data(), data.ByteLength(), seq);
  if (read != data.ByteLength()) {
    llama_memory_seq_rm(llama_get_memory(ctx_), seq, -1, -1);
    return Napi::Boolean::New(env, false);
  }
  return Napi::Boolean::New(env, true);
}
