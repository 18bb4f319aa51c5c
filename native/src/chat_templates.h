// Renders conversations with the model's own chat template through llama.cpp's common chat layer,
// which also knows each model family's tool-call format: it yields the prompt, the grammar that keeps
// tool calls valid, and the parser settings for reading them back.
#pragma once
#include <napi.h>
#include <string>
#include <unordered_set>
#include "chat.h"  // llama.cpp common/chat.h

class ChatTemplates : public Napi::ObjectWrap<ChatTemplates> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ChatTemplates(const Napi::CallbackInfo& info);

 private:
  Napi::Value Render(const Napi::CallbackInfo& info);
  Napi::Value Caps(const Napi::CallbackInfo& info);

  Napi::ObjectReference modelRef_;
  const llama_vocab* vocab_ = nullptr;
  common_chat_templates_ptr templates_;
  // Tool-call grammars that llama.cpp's grammar sampler accepted (Render checks each new one), at most kCheckedGrammars.
  static constexpr size_t kCheckedGrammars = 16;
  std::unordered_set<std::string> checkedGrammars_;
};
