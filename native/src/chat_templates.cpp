#include "chat_templates.h"

#include <cctype>
#include <cstdlib>
#include "model.h"
#include "napi_arrays.h"
#include "sampler.h"

Napi::Function ChatTemplates::Define(Napi::Env env) {
  return DefineClass(env, "ChatTemplates", {
    InstanceMethod<&ChatTemplates::Render>("render"),
    InstanceMethod<&ChatTemplates::Caps>("caps"),
  });
}

// new ChatTemplates(model, templateOverride?)
ChatTemplates::ChatTemplates(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChatTemplates>(info) {
  Napi::Env env = info.Env();
  Model* model = Model::Unwrap(info[0].As<Napi::Object>());
  if (!model->get()) NAPI_THROW_VOID(Napi::Error::New(env, "model is freed"));
  modelRef_ = Napi::Persistent(info[0].As<Napi::Object>());
  vocab_ = model->vocab();
  const std::string override = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  try {
    templates_ = common_chat_templates_init(model->get(), override);
  } catch (const std::exception& e) {
    NAPI_THROW_VOID(Napi::Error::New(env, std::string("cannot load the chat template: ") + e.what()));
  }
}

// What llama.cpp's grammar parser cannot take in a repetition x{m,n}: m past 2000 (MAX_REPETITION_THRESHOLD in
// llama-grammar.cpp; an n past it counts as no bound) it refuses; n below m it counts n - m unsigned and loops,
// allocating, for as good as ever. Returns why, or "" when every repetition is fine. Quoted literals and
// character classes are skipped.
static std::string repetitionProblem(const std::string& gbnf) {
  constexpr unsigned long long kMost = 2000;
  for (size_t i = 0; i < gbnf.size(); i++) {
    if (gbnf[i] == '"' || gbnf[i] == '[') {
      const char close = gbnf[i] == '"' ? '"' : ']';
      for (i++; i < gbnf.size() && gbnf[i] != close; i++) {
        if (gbnf[i] == '\\') i++;
      }
      continue;
    }
    if (gbnf[i] != '{' || i + 1 >= gbnf.size() || !std::isdigit((unsigned char)gbnf[i + 1])) continue;
    char* end;
    const unsigned long long min = std::strtoull(gbnf.c_str() + i + 1, &end, 10);
    unsigned long long max = min;  // {m}, and {m,}: unbounded above, where only m matters
    if (*end == ',') {
      end++;
      if (std::isdigit((unsigned char)*end)) max = std::strtoull(end, &end, 10);
    }
    const std::string counts = gbnf.substr(i, end - gbnf.c_str() - i + 1);
    if (min > kMost) {
      return "its grammar has a repetition " + counts + " over llama.cpp's limit of " + std::to_string(kMost) +
             " (from a minLength, a minItems or a count in a pattern)";
    }
    if (max < min) {
      return "its grammar has a repetition " + counts +
             " whose maximum is below its minimum (from a minLength over its maxLength, a minItems over its maxItems, or such counts in a pattern)";
    }
  }
  return "";
}

static Napi::Array toStringArray(Napi::Env env, const std::vector<std::string>& strings) {
  auto out = Napi::Array::New(env, strings.size());
  for (size_t i = 0; i < strings.size(); i++) out.Set(i, strings[i]);
  return out;
}

// render(requestJson): renders { messages, tools, toolChoice, parallelToolCalls, enableThinking } (messages
// and tools in OpenAI's chat format, which the common layer reads) into the prompt and generation settings.
// Throws when the template cannot render it, or (code ERR_GRAMMAR) when llama.cpp refuses its grammar.
Napi::Value ChatTemplates::Render(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  common_chat_params params;
  try {
    const auto request = common_json::parse(info[0].As<Napi::String>().Utf8Value());
    common_chat_templates_inputs inputs;
    inputs.messages = common_chat_msgs_parse_oaicompat(request.at("messages"));
    if (request.contains("tools")) inputs.tools = common_chat_tools_parse_oaicompat(request.at("tools"));
    inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(request.value("toolChoice", std::string("auto")));
    inputs.parallel_tool_calls = request.value("parallelToolCalls", true);
    inputs.enable_thinking = request.value("enableThinking", false);
    // Reasoning is always split from the answer; the API layer decides whether to show it.
    inputs.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;
    inputs.add_generation_prompt = true;
    params = common_chat_templates_apply(templates_.get(), inputs);
  } catch (const std::exception& e) {
    NAPI_THROW(Napi::Error::New(env, std::string("chat template: ") + e.what()), env.Undefined());
  }

  // Token-level settings need the vocabulary: single-token preserved strings (rendered in the output
  // even when special), token triggers, and the generation prompt the grammar must start from.
  std::vector<llama_token> preserved;
  for (const auto& text : params.preserved_tokens) {
    auto ids = common_tokenize(vocab_, text, false, true);
    if (ids.size() == 1) preserved.push_back(ids[0]);
  }
  std::vector<std::string> triggerPatterns;
  std::vector<llama_token> triggerTokens;
  std::string toolCallStart;  // the literal that opens tool calls in this format, when there is one
  for (const auto& trigger : params.grammar_triggers) {
    if (trigger.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD && toolCallStart.empty()) toolCallStart = trigger.value;
    switch (trigger.type) {
      case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
        triggerTokens.push_back(trigger.token);
        break;
      case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: {
        auto ids = common_tokenize(vocab_, trigger.value, false, true);
        if (ids.size() == 1 && std::find(preserved.begin(), preserved.end(), ids[0]) != preserved.end()) {
          triggerTokens.push_back(ids[0]);
        } else {
          triggerPatterns.push_back(regex_escape(trigger.value));
        }
        break;
      }
      case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
        triggerPatterns.push_back(trigger.value);
        break;
      case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
        const auto& p = trigger.value;
        triggerPatterns.push_back(p.empty() ? "^$" : (p.front() != '^' ? "^" : "") + p + (p.back() != '$' ? "$" : ""));
        break;
      }
    }
  }
  // A grammar that is on from the first token must first accept what the template already put after
  // the assistant header (e.g. an opened <think> block), as llama.cpp's server does.
  std::vector<llama_token> grammarPrefill;
  if (!params.grammar.empty() && !params.grammar_lazy && !params.generation_prompt.empty()) {
    auto ids = common_tokenize(vocab_, params.generation_prompt, false, true);
    for (size_t i = 0; i < ids.size(); i++) {
      const std::string piece = common_token_to_piece(vocab_, ids[i], true);
      if (i == 0 && !piece.empty() && std::isspace((unsigned char)piece[0]) &&
          !std::isspace((unsigned char)params.generation_prompt[0])) {
        continue;  // some tokenizers add a space before the first special token
      }
      grammarPrefill.push_back(ids[i]);
    }
  }

  // The engine builds the grammar's sampler when the request is admitted, where a grammar that llama.cpp
  // refuses (a schema's $ref cycle, a minLength over its repetition limit) could only fail the request, and
  // one whose repetitions it cannot take would hang it. Here such a grammar is refused while the request is
  // prepared: an error with code ERR_GRAMMAR, and `reason` when the repetitions say why. Building the sampler
  // takes milliseconds for Claude Code's tools, which every request repeats: grammars that passed are kept.
  if (!params.grammar.empty() && !checkedGrammars_.count(params.grammar)) {
    std::string reason = repetitionProblem(params.grammar);
    std::string failure = reason;
    if (failure.empty()) {
      try {
        SlotSampler().configure(SamplingParams{}, vocab_,
                                GrammarParams{params.grammar, params.grammar_lazy, triggerPatterns, triggerTokens, grammarPrefill});
      } catch (const std::exception& e) {
        failure = e.what();
      }
    }
    if (!failure.empty()) {
      Napi::Error error = Napi::Error::New(env, "tool-call grammar: " + failure);
      error.Set("code", "ERR_GRAMMAR");
      if (!reason.empty()) error.Set("reason", reason);
      error.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (checkedGrammars_.size() >= kCheckedGrammars) checkedGrammars_.clear();
    checkedGrammars_.insert(params.grammar);
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("prompt", params.prompt);
  out.Set("format", (int)params.format);
  out.Set("formatName", common_chat_format_name(params.format));
  out.Set("grammar", params.grammar);
  out.Set("grammarLazy", params.grammar_lazy);
  out.Set("grammarTriggerPatterns", toStringArray(env, triggerPatterns));
  out.Set("grammarTriggerTokens", toInt32Array(env, triggerTokens));
  out.Set("grammarPrefill", toInt32Array(env, grammarPrefill));
  out.Set("preservedTokens", toInt32Array(env, preserved));
  out.Set("toolCallStart", toolCallStart);
  out.Set("additionalStops", toStringArray(env, params.additional_stops));
  out.Set("generationPrompt", params.generation_prompt);
  out.Set("parser", params.parser);
  out.Set("supportsThinking", params.supports_thinking);
  return out;
}

// caps(): what the template supports (tools, parallel tool calls, thinking, ...).
Napi::Value ChatTemplates::Caps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [name, value] : common_chat_templates_get_caps(templates_.get())) out.Set(name, value);
  out.Set("enableThinking", common_chat_templates_support_enable_thinking(templates_.get()));
  return out;
}
