// Greedy sampling inside llama.cpp's decode graph: one argmax over every output row, so the logits never
// leave the graph's buffer.
#pragma once
#include "llama.h"

struct ggml_tensor;

// What the greedy samplers of one context share while llama.cpp builds a graph: the argmax over all of the
// graph's logits rows, built by the first sampler that needs it; each sampler's token is a view of its row.
struct GraphArgmax {
  bool onCpu = false;              // the output layer runs on the CPU (then our own argmax, else ggml's)
  ggml_tensor* logits = nullptr;   // the graph's logits the tokens below were built from
  ggml_tensor* tokens = nullptr;   // I32, one per row of logits
};

// A sampler chain for llama_set_sampler that samples greedily inside the graph, sharing `shared` with the
// context's other such chains (which must outlive none of them).
llama_sampler* newGraphGreedyChain(GraphArgmax* shared);
