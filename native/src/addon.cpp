// Pensieve's native addon: llama.cpp models and contexts for the engine thread.
#include <napi.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include "chat_parser.h"
#include "chat_templates.h"
#include "context.h"
#include "huge_pages.h"
#include "model.h"
#include "prompt_tokenizer.h"
#include "vision.h"
#include "mtmd-helper.h"

// llama.cpp logs at info level by default; keep warnings and errors unless PENSIEVE_LLAMA_LOG=debug.
static void logCallback(ggml_log_level level, const char* text, void*) {
  static const bool verbose = [] {
    const char* v = std::getenv("PENSIEVE_LLAMA_LOG");
    return v && std::strcmp(v, "debug") == 0;
  }();
  if (verbose || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

static Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), llama_print_system_info());
}

// useHugePages(on): boolean. Whether ggml's large CPU buffers allocated from now on use huge pages (false
// where the addon cannot: off Linux).
static Napi::Value UseHugePages(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), useHugePages(info[0].ToBoolean()));
}

// promptPieceCounts(): { reused, tokenized }, prompt pieces served from the kept tokens and pieces tokenized,
// in this process (all threads).
static Napi::Value PromptPieceCounts(const Napi::CallbackInfo& info) {
  const PieceCounts counts = promptPieceCounts();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("reused", (double)counts.reused);
  o.Set("tokenized", (double)counts.tokenized);
  return o;
}

// devices(): [{ name, description, type: 'cpu' | 'gpu' | 'igpu' | 'accel', free, total }], ggml's backend
// devices with the memory each reports (bytes; for the CPU, the system's).
static Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    const char* type = "accel";
    switch (ggml_backend_dev_type(dev)) {
      case GGML_BACKEND_DEVICE_TYPE_CPU: type = "cpu"; break;
      case GGML_BACKEND_DEVICE_TYPE_GPU: type = "gpu"; break;
      case GGML_BACKEND_DEVICE_TYPE_IGPU: type = "igpu"; break;
      default: break;
    }
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    d.Set("type", type);
    d.Set("free", (double)free);
    d.Set("total", (double)total);
    out.Set((uint32_t)i, d);
  }
  return out;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag initialized;  // once per process, whichever thread loads the addon first
  std::call_once(initialized, [] {
    llama_log_set(logCallback, nullptr);
    mtmd_helper_log_set(logCallback, nullptr);
    llama_backend_init();
  });
  exports.Set("Model", Model::Define(env));
  exports.Set("Context", Context::Define(env));
  exports.Set("ChatTemplates", ChatTemplates::Define(env));
  exports.Set("ChatParser", ChatParser::Define(env));
  exports.Set("Vision", Vision::Define(env));
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
  exports.Set("useHugePages", Napi::Function::New(env, UseHugePages));
  exports.Set("promptPieceCounts", Napi::Function::New(env, PromptPieceCounts));
  exports.Set("devices", Napi::Function::New(env, Devices));
  return exports;
}

NODE_API_MODULE(pensieve, Init)
