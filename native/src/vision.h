// Images for vision models: a model's multimodal projector (mmproj GGUF) through llama.cpp's mtmd library.
// The preparation workers tokenize images (decode, resize, count their tokens); the engine thread encodes
// them and decodes their embeddings into the KV cache beside the other sequences' tokens.
#pragma once
#include <napi.h>

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "llama.h"
#include "mtmd.h"

/** What an image becomes in the prompt: mtmd's text chunks (the format's image markers) and image chunks. */
struct VisionPart {
  std::vector<llama_token> text;  // a text chunk's tokens; empty for an image chunk
  std::string chunk;              // an image chunk's key (see Projector::tokenize)
  size_t tokens = 0;              // an image chunk's token count
};

/**
 * One projector per mmproj file and model in this process, shared by every thread's Vision: the engine
 * thread and the preparation workers. Keeps, by image, its parts, its file's bytes (recent images', within a
 * byte budget) and its resized pixels (the last few images'): a request's images are encoded only when the
 * engine computes their tokens, which may be after many other images went by, so pixels dropped by then are
 * made again from the file.
 */
class Projector {
 public:
  static std::shared_ptr<Projector> open(const std::string& mmproj, const std::string& model, bool gpu, int threads);
  ~Projector();

  /**
   * The parts of the image whose file bytes are given, `id` its content hash; an image seen lately is not
   * decoded again. Image chunks are keyed `id` (or `id#k` for the k-th of several). Throws when the bytes
   * are not an image the decoder reads.
   */
  std::vector<VisionPart> tokenize(const uint8_t* bytes, size_t size, const std::string& id);
  /** Encodes an image chunk into `out` (tokens x nEmbd floats); false when its image is no longer kept, or it fails. */
  bool encode(const std::string& chunk, std::vector<float>& out);

  mtmd_context* mtmd() const { return ctx_; }
  int nEmbd() const { return nEmbd_; }

 private:
  Projector() = default;
  struct ChunkFree {
    void operator()(mtmd_input_chunk* chunk) const { mtmd_input_chunk_free(chunk); }
  };
  using Chunk = std::unique_ptr<mtmd_input_chunk, ChunkFree>;
  struct Image {
    std::vector<VisionPart> parts;
    std::vector<uint8_t> file;  // empty once dropped
    std::vector<Chunk> chunks;  // the image chunks, in order; empty once dropped
  };
  /** Decodes and resizes an image file (thread-safe: mtmd_tokenize may run on several threads at once). */
  Image prepare(const uint8_t* bytes, size_t size, const std::string& id) const;
  /** Drops what is over the budgets, least recently used first. Under the lock. */
  void trim();

  llama_model* vocab_ = nullptr;  // the text model without weights: mtmd's markers are tokenized with its vocabulary
  mtmd_context* ctx_ = nullptr;
  int nEmbd_ = 0;
  std::mutex mutex_;  // tokenize runs on any thread, encode on the engine thread
  std::list<std::pair<std::string, Image>> images_;  // least recently used first
  std::unordered_map<std::string, decltype(images_)::iterator> byId_;
};

class Vision : public Napi::ObjectWrap<Vision> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Vision(const Napi::CallbackInfo& info);
  ~Vision() override;

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);

  /** The chunk's embeddings, encoded now unless recently; nullptr when the chunk is not kept or fails. */
  const std::vector<float>* embeddings(const std::string& chunk);

  std::shared_ptr<Projector> projector_;
  // Embeddings of recently encoded chunks (this thread's: the engine's), least recently used first: an
  // image's tokens may be computed over several steps, and by several sequences.
  std::list<std::pair<std::string, std::vector<float>>> embeddings_;
  llama_batch batch_{};
  int32_t batchCapacity_ = 0;
  double encodeMs_ = 0;
  uint64_t encoded_ = 0;
};
