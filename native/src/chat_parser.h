// Reads a generation back into reasoning, text and tool calls (llama.cpp's common chat parser), as it
// streams: each update parses all text so far and returns what changed since the last update.
#pragma once
#include <napi.h>
#include <string>
#include <vector>
#include "chat.h"  // llama.cpp common/chat.h

class ChatParser : public Napi::ObjectWrap<ChatParser> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ChatParser(const Napi::CallbackInfo& info);

 private:
  Napi::Value Update(const Napi::CallbackInfo& info);

  common_chat_parser_params params_;
  std::string text_;
  common_chat_msg message_;
};
