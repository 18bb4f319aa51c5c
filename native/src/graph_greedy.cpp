#include "graph_greedy.h"

#include "ggml-backend.h"
#include "ggml.h"
#include "sampler.h"

// llama.cpp's own greedy sampler builds, per sequence, an argmax over that sequence's row of a padded copy
// of the logits. On the CPU, ggml's argmax is a scalar loop on one thread (about 1 ms for 8 rows of 150k);
// on a GPU it is one kernel launch per sequence. Here one argmax covers all rows of the unpadded logits: on
// the CPU a custom op splits the rows over ggml's threads and runs the vectorized argmax of sampler.cpp,
// on a GPU ggml's argmax runs one block per row in one launch. Either way the logits are neither copied
// within the graph nor back to the host.

namespace {

void argmaxRows(ggml_tensor* dst, int ith, int nth, void*) {
  const ggml_tensor* logits = dst->src[0];
  auto* out = static_cast<int32_t*>(dst->data);
  for (int64_t row = ith; row < logits->ne[1]; row += nth) {
    const auto* x = reinterpret_cast<const float*>(static_cast<const char*>(logits->data) + row * logits->nb[1]);
    out[row] = argmax(x, (int32_t)logits->ne[0]);
  }
}

GraphArgmax* sharedOf(const llama_sampler* smpl) { return static_cast<GraphArgmax*>(smpl->ctx); }

const char* name(const llama_sampler*) { return "pensieve-graph-greedy"; }

// Off the graph (never expected: the chain is attached as a backend sampler), still greedy.
void apply(llama_sampler*, llama_token_data_array* cur) {
  int64_t best = 0;
  for (size_t i = 1; i < cur->size; i++) {
    if (cur->data[i].logit > cur->data[best].logit) best = (int64_t)i;
  }
  cur->selected = best;
}

void freeSampler(llama_sampler*) {}  // the shared state belongs to the context

bool backendInit(llama_sampler* smpl, ggml_backend_buffer_type_t buft, uint32_t) {
  ggml_backend_dev_t device = ggml_backend_buft_get_device(buft);
  sharedOf(smpl)->onCpu = device && ggml_backend_dev_type(device) == GGML_BACKEND_DEVICE_TYPE_CPU;
  return true;
}

void backendReset(llama_sampler* smpl) {
  sharedOf(smpl)->logits = nullptr;
  sharedOf(smpl)->tokens = nullptr;
}

// data->logits is a view of one row of llama.cpp's padded logits, which is a ggml_pad of the graph's
// logits (one dummy row added at the end); the argmax reads the unpadded rows where that is what it is.
void backendApply(llama_sampler* smpl, ggml_context* ctx, ggml_cgraph*, llama_sampler_data* data) {
  GraphArgmax* shared = sharedOf(smpl);
  ggml_tensor* padded = data->logits->view_src ? data->logits->view_src : data->logits;
  const int64_t row = (int64_t)(data->logits->view_offs / padded->nb[1]);
  ggml_tensor* logits = padded;
  if (padded->op == GGML_OP_PAD && padded->src[0] && padded->src[0]->ne[1] > row) logits = padded->src[0];
  if (shared->logits != logits) {
    shared->logits = logits;
    shared->tokens = shared->onCpu
        ? ggml_custom_4d(ctx, GGML_TYPE_I32, logits->ne[1], 1, 1, 1, &logits, 1, argmaxRows, GGML_N_TASKS_MAX, nullptr)
        : ggml_argmax(ctx, logits);
    ggml_set_name(shared->tokens, "pensieve_greedy_tokens");
  }
  data->sampled = ggml_view_1d(ctx, shared->tokens, 1, row * shared->tokens->nb[0]);
  data->logits = nullptr;  // else llama.cpp computes the padded copy and copies this row back as "sampled logits"
}

llama_sampler_i graphGreedy = {
    /* .name              = */ name,
    /* .accept            = */ nullptr,
    /* .apply             = */ apply,
    /* .reset             = */ nullptr,
    /* .clone             = */ nullptr,
    /* .free              = */ freeSampler,
    /* .backend_init      = */ backendInit,
    /* .backend_accept    = */ nullptr,
    /* .backend_apply     = */ backendApply,
    /* .backend_set_input = */ nullptr,
    /* .backend_reset     = */ backendReset,
    /* .copy_state        = */ nullptr,
};

}  // namespace

llama_sampler* newGraphGreedyChain(GraphArgmax* shared) {
  llama_sampler* chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(chain, llama_sampler_init(&graphGreedy, shared));
  return chain;
}
