// Conversions of C++ vectors to JavaScript typed arrays, for the addon's classes.
#pragma once
#include <napi.h>

#include <algorithm>
#include <vector>

#include "llama.h"

/** Tokens as an Int32Array (a copy). */
inline Napi::Int32Array toInt32Array(Napi::Env env, const std::vector<llama_token>& tokens) {
  auto out = Napi::Int32Array::New(env, tokens.size());
  std::copy(tokens.begin(), tokens.end(), out.Data());
  return out;
}
