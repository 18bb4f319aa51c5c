#include "chat_parser.h"

Napi::Function ChatParser::Define(Napi::Env env) {
  return DefineClass(env, "ChatParser", { InstanceMethod<&ChatParser::Update>("update") });
}

// new ChatParser({ format, generationPrompt, parser, parseToolCalls })  (fields from ChatTemplates.render)
ChatParser::ChatParser(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChatParser>(info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  params_.format = (common_chat_format)o.Get("format").ToNumber().Int32Value();
  params_.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;
  params_.generation_prompt = o.Get("generationPrompt").ToString().Utf8Value();
  params_.parse_tool_calls = o.Get("parseToolCalls").ToBoolean();
  const std::string parser = o.Get("parser").ToString().Utf8Value();
  try {
    if (!parser.empty()) params_.parser.load(parser);
  } catch (const std::exception& e) {
    NAPI_THROW_VOID(Napi::Error::New(env, std::string("chat parser: ") + e.what()));
  }
}

// update(textAdded, isPartial): the changes since the last update, as an array of
// { reasoning?, content?, toolIndex?, toolName?, toolId?, toolArguments? }. isPartial is false for the
// last update, at the end of generation.
Napi::Value ChatParser::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  text_ += info[0].As<Napi::String>().Utf8Value();
  const bool partial = info[1].ToBoolean();
  common_chat_msg next;
  try {
    next = common_chat_parse(text_, partial, params_);
  } catch (const std::exception&) {
    // Not decidable yet (partial), or the end does not fully fit the format: keep the best partial
    // reading, so that nothing already understood is taken back.
    try {
      next = partial ? message_ : common_chat_parse(text_, true, params_);
    } catch (const std::exception&) {
      next = message_;
    }
  }
  if (next.empty() && message_.empty()) return Napi::Array::New(env);
  const auto diffs = common_chat_msg_diff::compute_diffs(message_, next);
  message_ = std::move(next);
  auto out = Napi::Array::New(env, diffs.size());
  for (size_t i = 0; i < diffs.size(); i++) {
    const auto& d = diffs[i];
    Napi::Object o = Napi::Object::New(env);
    if (!d.reasoning_content_delta.empty()) o.Set("reasoning", d.reasoning_content_delta);
    if (!d.content_delta.empty()) o.Set("content", d.content_delta);
    if (d.tool_call_index != std::string::npos) {
      o.Set("toolIndex", (double)d.tool_call_index);
      if (!d.tool_call_delta.name.empty()) o.Set("toolName", d.tool_call_delta.name);
      if (!d.tool_call_delta.id.empty()) o.Set("toolId", d.tool_call_delta.id);
      if (!d.tool_call_delta.arguments.empty()) o.Set("toolArguments", d.tool_call_delta.arguments);
    }
    out.Set(i, o);
  }
  return out;
}
