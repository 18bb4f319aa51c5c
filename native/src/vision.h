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
 * thread and the preparation workers. Keeps the chunks of recently tokenized images, by image.
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
  /** Encodes an image chunk kept by tokenize into `out` (tokens x nEmbd floats); false when it is not kept or fails. */
  bool encode(const std::string& chunk, std::vector<float>& out);

  mtmd_context* mtmd() const { return ctx_; }
  int nEmbd() const { return nEmbd_; }

 private:
  Projector() = default;
  struct Image {
    std::vector<VisionPart> parts;
    std::vector<std::pair<std::string, mtmd_input_chunk*>> chunks;
  };
  void forget(Image& image);

  llama_model* vocab_ = nullptr;  // the text model without weights: mtmd's markers are tokenized with its vocabulary
  mtmd_context* ctx_ = nullptr;
  int nEmbd_ = 0;
  std::mutex mutex_;  // tokenize runs on any thread, encode on the engine thread
  std::list<std::pair<std::string, Image>> images_;  // least recently used first
  std::unordered_map<std::string, decltype(images_)::iterator> byId_;
  std::unordered_map<std::string, mtmd_input_chunk*> chunks_;
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
