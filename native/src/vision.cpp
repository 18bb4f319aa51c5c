#include "vision.h"

#include <chrono>
#include <cstring>

#include "context.h"
#include "mtmd-helper.h"
#include "napi_arrays.h"

// What a projector keeps of recent images (their parts are small: many), and the chunk embeddings each
// Vision keeps.
static constexpr size_t kKeptImages = 4096;
static constexpr size_t kKeptFileBytes = 256u << 20;
static constexpr size_t kKeptPixelImages = 8;
static constexpr size_t kKeptEmbeddings = 8;

std::shared_ptr<Projector> Projector::open(const std::string& mmproj, const std::string& model, bool gpu, int threads) {
  static std::mutex registryMutex;
  static std::unordered_map<std::string, std::weak_ptr<Projector>> registry;
  std::lock_guard<std::mutex> lock(registryMutex);
  const std::string key = mmproj + '\n' + model;
  if (auto found = registry[key].lock()) return found;

  std::shared_ptr<Projector> p(new Projector());
  // Its vocabulary, and the hyperparameters mtmd checks the projector against (embedding width, rope type);
  // no weights.
  llama_model_params mp = llama_model_default_params();
  mp.no_alloc = true;
  mp.n_gpu_layers = 0;
  mp.load_mode = LLAMA_LOAD_MODE_NONE;  // no_alloc maps nothing
  p->vocab_ = llama_model_load_from_file(model.c_str(), mp);
  if (!p->vocab_) throw std::runtime_error("failed to load the vocabulary of " + model);
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = gpu;
  params.n_threads = threads;
  params.print_timings = false;  // (warmup, the default, sizes the compute buffers at load: a projector that cannot run fails there)
  p->ctx_ = mtmd_init_from_file(mmproj.c_str(), p->vocab_, params);
  if (!p->ctx_) throw std::runtime_error("failed to load the projector " + mmproj + " for " + model + " (llama.cpp's log says why)");
  if (!mtmd_support_vision(p->ctx_)) throw std::runtime_error(mmproj + " is not a vision projector (an audio one?)");
  // Positions here are one per token; M-RoPE models place an image's tokens on a 2-D grid instead.
  if (mtmd_decode_use_mrope(p->ctx_)) {
    throw std::runtime_error(mmproj + ": models with M-RoPE positions (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) are not supported yet");
  }
  p->nEmbd_ = llama_model_n_embd_inp(p->vocab_);
  registry[key] = p;
  return p;
}

Projector::~Projector() {
  images_.clear();  // its chunks first, while the mtmd context lives
  if (ctx_) mtmd_free(ctx_);
  if (vocab_) llama_model_free(vocab_);
}

Projector::Image Projector::prepare(const uint8_t* bytes, size_t size, const std::string& id) const {
  mtmd_helper_bitmap_wrapper wrapped = mtmd_helper_bitmap_init_from_buf(ctx_, bytes, size, false, mtmd_helper_init_opt_default());
  if (!wrapped.bitmap) throw std::runtime_error("the image could not be decoded");
  std::unique_ptr<mtmd_bitmap, decltype(&mtmd_bitmap_free)> bitmap(wrapped.bitmap, mtmd_bitmap_free);
  std::unique_ptr<mtmd_input_chunks, decltype(&mtmd_input_chunks_free)> chunks(mtmd_input_chunks_init(), mtmd_input_chunks_free);
  const char* marker = mtmd_default_marker();
  mtmd_input_text text{marker, std::strlen(marker), false, true};
  const mtmd_bitmap* bitmaps[] = {bitmap.get()};
  if (mtmd_tokenize(ctx_, chunks.get(), &text, bitmaps, 1) != 0) throw std::runtime_error("the image could not be prepared for the projector");

  Image image;
  const size_t n = mtmd_input_chunks_size(chunks.get());
  size_t images = 0;
  for (size_t i = 0; i < n; i++) images += mtmd_input_chunk_get_type(mtmd_input_chunks_get(chunks.get(), i)) == MTMD_INPUT_CHUNK_TYPE_IMAGE;
  for (size_t i = 0; i < n; i++) {
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
    VisionPart part;
    switch (mtmd_input_chunk_get_type(chunk)) {
      case MTMD_INPUT_CHUNK_TYPE_TEXT: {
        size_t count = 0;
        const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &count);
        if (count == 0) continue;
        part.text.assign(tokens, tokens + count);
        break;
      }
      case MTMD_INPUT_CHUNK_TYPE_IMAGE:
        part.chunk = images == 1 ? id : id + '#' + std::to_string(image.chunks.size());
        part.tokens = mtmd_input_chunk_get_n_tokens(chunk);
        image.chunks.emplace_back(mtmd_input_chunk_copy(chunk));
        break;
      default:
        throw std::runtime_error("the projector made a chunk that is not text or image");
    }
    image.parts.push_back(std::move(part));
  }
  return image;
}

void Projector::trim() {
  size_t pixelImages = 0, fileBytes = 0;
  for (auto it = images_.rbegin(); it != images_.rend(); ++it) {  // most recently used first
    Image& image = it->second;
    if (!image.chunks.empty() && ++pixelImages > kKeptPixelImages) image.chunks.clear();
    fileBytes += image.file.size();
    if (fileBytes > kKeptFileBytes) {
      fileBytes -= image.file.size();
      image.file = std::vector<uint8_t>();
    }
  }
  while (images_.size() > kKeptImages) {
    byId_.erase(images_.front().first);
    images_.pop_front();
  }
}

std::vector<VisionPart> Projector::tokenize(const uint8_t* bytes, size_t size, const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = byId_.find(id);
    if (found != byId_.end()) {
      images_.splice(images_.end(), images_, found->second);
      Image& image = found->second->second;
      if (image.file.empty()) image.file.assign(bytes, bytes + size);
      trim();
      return image.parts;
    }
  }
  Image image = prepare(bytes, size, id);  // outside the lock: decoding and resizing take a while
  image.file.assign(bytes, bytes + size);
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = byId_.find(id);  // another thread may have tokenized the same image meanwhile
  if (found != byId_.end()) return found->second->second.parts;
  std::vector<VisionPart> parts = image.parts;
  images_.emplace_back(id, std::move(image));
  byId_[id] = std::prev(images_.end());
  trim();
  return parts;
}

bool Projector::encode(const std::string& key, std::vector<float>& out) {
  const size_t hash = key.find('#');
  const std::string id = key.substr(0, hash);
  const size_t k = hash == std::string::npos ? 0 : std::stoul(key.substr(hash + 1));
  std::lock_guard<std::mutex> lock(mutex_);  // keeps the chunk from being dropped meanwhile
  auto found = byId_.find(id);
  if (found == byId_.end()) return false;
  Image& image = found->second->second;
  if (image.chunks.empty()) {
    if (image.file.empty()) return false;
    try {
      image.chunks = prepare(image.file.data(), image.file.size(), id).chunks;
    } catch (const std::exception&) {
      return false;
    }
  }
  if (k >= image.chunks.size() || mtmd_encode_chunk(ctx_, image.chunks[k].get()) != 0) return false;
  const size_t count = mtmd_input_chunk_get_n_tokens(image.chunks[k].get()) * (size_t)nEmbd_;
  const float* embd = mtmd_get_output_embd(ctx_);
  out.assign(embd, embd + count);
  return true;
}

Napi::Function Vision::Define(Napi::Env env) {
  return DefineClass(env, "Vision", {
    InstanceMethod<&Vision::Info>("info"),
    InstanceMethod<&Vision::Tokenize>("tokenize"),
    InstanceMethod<&Vision::Decode>("decode"),
    InstanceMethod<&Vision::Stats>("stats"),
  });
}

// new Vision(mmprojPath, modelPath, { gpu, threads, batchSize }): throws when the projector cannot be used
// with the model. batchSize: the most image tokens one decode takes (the context's batch size).
Vision::Vision(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vision>(info) {
  Napi::Env env = info.Env();
  Napi::Object opts = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);
  const bool gpu = opts.Has("gpu") && opts.Get("gpu").ToBoolean();
  const int threads = opts.Has("threads") ? opts.Get("threads").ToNumber().Int32Value() : 4;
  try {
    projector_ = Projector::open(info[0].ToString().Utf8Value(), info[1].ToString().Utf8Value(), gpu, threads);
  } catch (const std::exception& e) {
    NAPI_THROW_VOID(Napi::Error::New(env, e.what()));
  }
  batchCapacity_ = opts.Has("batchSize") ? opts.Get("batchSize").ToNumber().Int32Value() : 0;
  if (batchCapacity_ > 0) batch_ = llama_batch_init(batchCapacity_, projector_->nEmbd(), 1);
}

Vision::~Vision() {
  if (batchCapacity_ > 0) llama_batch_free(batch_);
}

// info(): { embeddingSize, nonCausal }. nonCausal: an image's tokens attend to each other both ways, so
// all of them must be in one decode, and one micro-batch (engine.ubatch_size).
Napi::Value Vision::Info(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("embeddingSize", projector_->nEmbd());
  o.Set("nonCausal", mtmd_decode_use_non_causal(projector_->mtmd(), nullptr));
  return o;
}

// tokenize(bytes: Uint8Array, id: string): Array<{ text: Int32Array } | { chunk: string, tokens: number }>.
// Throws an error with code 'ERR_IMAGE' when the bytes are not an image the decoder reads.
Napi::Value Vision::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto bytes = info[0].As<Napi::Uint8Array>();
  std::vector<VisionPart> parts;
  try {
    parts = projector_->tokenize(bytes.Data(), bytes.ByteLength(), info[1].ToString().Utf8Value());
  } catch (const std::exception& e) {
    Napi::Error error = Napi::Error::New(env, e.what());
    error.Set("code", "ERR_IMAGE");
    NAPI_THROW(error, env.Undefined());
  }
  Napi::Array out = Napi::Array::New(env, parts.size());
  for (size_t i = 0; i < parts.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    if (parts[i].chunk.empty()) {
      o.Set("text", toInt32Array(env, parts[i].text));
    } else {
      o.Set("chunk", parts[i].chunk);
      o.Set("tokens", (double)parts[i].tokens);
    }
    out.Set((uint32_t)i, o);
  }
  return out;
}

const std::vector<float>* Vision::embeddings(const std::string& chunk) {
  for (auto it = embeddings_.begin(); it != embeddings_.end(); ++it) {
    if (it->first != chunk) continue;
    embeddings_.splice(embeddings_.end(), embeddings_, it);
    return &embeddings_.back().second;
  }
  std::vector<float> out;
  const auto start = std::chrono::steady_clock::now();
  if (!projector_->encode(chunk, out)) return nullptr;
  encodeMs_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  encoded_++;
  embeddings_.emplace_back(chunk, std::move(out));
  if (embeddings_.size() > kKeptEmbeddings) embeddings_.pop_front();
  return &embeddings_.back().second;
}

// decode(context, chunks: string[], offsets, counts, positions, seqs: Int32Array): number. One llama_decode
// of image tokens: for each entry, tokens [offset, offset + count) of the chunk, at positions from
// positions[i], in sequence seqs[i]. Encodes a chunk first unless its embeddings are kept. Returns
// llama_decode's status, or -100 when a chunk is no longer kept (or its encoding failed).
Napi::Value Vision::Decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Context* context = Context::Unwrap(info[0].As<Napi::Object>());
  llama_context* lctx = context->get();
  if (!lctx || batchCapacity_ <= 0) NAPI_THROW(Napi::Error::New(env, "decode: no context, or no batch size given"), env.Undefined());
  auto chunks = info[1].As<Napi::Array>();
  auto offsets = info[2].As<Napi::Int32Array>();
  auto counts = info[3].As<Napi::Int32Array>();
  auto positions = info[4].As<Napi::Int32Array>();
  auto seqs = info[5].As<Napi::Int32Array>();
  const int nEmbd = projector_->nEmbd();
  int32_t n = 0;
  for (uint32_t e = 0; e < chunks.Length(); e++) {
    const std::vector<float>* embd = embeddings(chunks.Get(e).ToString().Utf8Value());
    if (!embd) return Napi::Number::New(env, -100);
    const int32_t offset = offsets[e], count = counts[e];
    if (offset < 0 || count <= 0 || (size_t)(offset + count) * nEmbd > embd->size() || n + count > batchCapacity_) {
      NAPI_THROW(Napi::RangeError::New(env, "decode: bad image token range"), env.Undefined());
    }
    std::memcpy(batch_.embd + (size_t)n * nEmbd, embd->data() + (size_t)offset * nEmbd, (size_t)count * nEmbd * sizeof(float));
    for (int32_t i = 0; i < count; i++, n++) {
      batch_.pos[n] = positions[e] + i;
      batch_.n_seq_id[n] = 1;
      batch_.seq_id[n][0] = seqs[e];
      batch_.logits[n] = 0;
    }
  }
  batch_.n_tokens = n;
  if (!mtmd_decode_use_non_causal(projector_->mtmd(), nullptr)) return Napi::Number::New(env, llama_decode(lctx, batch_));
  // An image whose tokens attend to each other both ways is decoded alone, in one micro-batch (llama.cpp
  // splits a batch into micro-batches, and attention reaches no further than the micro-batch it is in).
  llama_set_causal_attn(lctx, false);
  int32_t status = 0;
  for (int32_t e = 0, start = 0; e < (int32_t)chunks.Length() && status == 0; start += counts[e++]) {
    llama_batch one = batch_;
    one.n_tokens = counts[e];
    one.embd += (size_t)start * nEmbd;
    one.pos += start;
    one.n_seq_id += start;
    one.seq_id += start;
    one.logits += start;
    status = llama_decode(lctx, one);
  }
  llama_set_causal_attn(lctx, true);
  return Napi::Number::New(env, status);
}

// stats(): { encoded, encodeMs }: image chunks this Vision encoded, and the time it took.
Napi::Value Vision::Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("encoded", (double)encoded_);
  o.Set("encodeMs", encodeMs_);
  return o;
}
