// One decoder layer of a decode step in one call: RMSNorm, q/k/v products, RoPE, the new keys
// and values written to the paged pool, attention over it, the output product and residual,
// RMSNorm, SwiGLU and residual. The arithmetic is the same as the modules' (fp32, HF's order of
// operations); what goes away is the ~50 Python-level operator calls per layer and token, which
// cost as much as reading the weights for a small model (~15 ms per token for a 135M one).
#include <ATen/ATen.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cmath>
#include <cstring>
#include <optional>

#include "kernels.h"

namespace {

// x [T, C] fp32 -> w * x / rms(x), HF's RMSNorm in fp32
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t rows = x.size(0), n = x.size(1);
  at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * n;
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) sum += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
    for (int64_t i = 0; i < n; ++i) op[r * n + i] = wp[i] * (xr[i] * inv);
  }
  return out;
}

// x [T, in] fp32 -> [x W_k^T (+ b_k)] fp32 for weights sharing x: the gemv kernel for a few
// rows (all products in one parallel region; bf16 weights up to 64 rows, where it is 3.5x the
// emulated bf16 product of CPUs without bf16 units), else fp32 products as W x^T
std::vector<at::Tensor> project(const at::Tensor& x, std::vector<at::Tensor> weights,
                                std::vector<std::optional<at::Tensor>> biases) {
  std::vector<at::Tensor> ys;
  const bool bf16 = weights[0].scalar_type() == at::kBFloat16;
  if (x.size(0) <= 4 || (bf16 && x.size(0) <= 64)) {
    ys = fullchain::gemv_many(weights, x);
  } else {
    for (const at::Tensor& w : weights) {
      ys.push_back(at::mm(w.to(at::kFloat), x.t()).t().contiguous());
    }
  }
  for (size_t k = 0; k < ys.size(); ++k) {
    if (biases[k].has_value() && biases[k]->defined()) ys[k].add_(biases[k]->to(at::kFloat));
  }
  return ys;
}

// x [T, heads * D] in place: HF's rotate_half RoPE with cos/sin [T, D]
void rope(at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t heads,
          int64_t d) {
  const int64_t rows = x.size(0), half = d / 2;
  float* xp = x.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float *c = cp + r * d, *s = sp + r * d;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = xp + (r * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i + half] + a * s[i + half];
      }
    }
  }
}

// gate [T, I] in place: silu(gate) * up
void silu_mul(at::Tensor& gate, const at::Tensor& up) {
  float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  const int64_t n = gate.numel();
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

// x [T, KV * D] fp32 (the new keys or values) into rows slot_mapping[t] of the pool
// [slots, KV, D], fp32 or bf16 (rounded to nearest even, as `Tensor.to` does)
void write_kv(const at::Tensor& cache, const at::Tensor& x, const at::Tensor& slot_mapping) {
  const int64_t rows = x.size(0), n = x.size(1), slots = cache.size(0);
  TORCH_CHECK(cache.is_contiguous() && cache.size(1) * cache.size(2) == n &&
                  slot_mapping.scalar_type() == at::kLong && slot_mapping.numel() == rows,
              "decode_layer: the pool, the new keys and the slot mapping do not match");
  const int64_t* sp = slot_mapping.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(sp[r] >= 0 && sp[r] < slots, "decode_layer: slot ", sp[r],
                " is outside the pool of ", slots);
    if (cache.scalar_type() == at::kFloat) {
      std::memcpy(cache.data_ptr<float>() + sp[r] * n, xp + r * n, n * sizeof(float));
    } else {
      at::BFloat16* dst = cache.data_ptr<at::BFloat16>() + sp[r] * n;
      for (int64_t i = 0; i < n; ++i) dst[i] = at::BFloat16(xp[r * n + i]);
    }
  }
}

std::optional<at::Tensor> bias_at(const c10::List<std::optional<at::Tensor>>& biases, size_t i) {
  return biases.size() > i ? static_cast<std::optional<at::Tensor>>(biases.get(i))
                           : std::nullopt;
}

// x [T, C] fp32, one token of T sequences; cos/sin [T, D] fp32; weights: input norm, q, k, v,
// o, post-attention norm, gate, up, down; biases: q, k, v, o, gate, up, down (None for none);
// the layer's pool k_cache / v_cache [slots, KV, D]; slot_mapping [T] (where the new keys go);
// block_tables [T, nb]; seq_lens [T] (keys after this token). Returns the layer's output.
at::Tensor decode_layer(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                        at::TensorList weights,
                        const c10::List<std::optional<at::Tensor>>& biases,
                        const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& slot_mapping,
                        const at::Tensor& block_tables, const at::Tensor& seq_lens,
                        int64_t block_size, int64_t num_heads, int64_t num_kv_heads,
                        double eps) {
  TORCH_CHECK(weights.size() == 9, "decode_layer: 9 weights expected, got ", weights.size());
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "decode_layer: x must be a contiguous fp32 [T, C]");
  const int64_t rows = x.size(0), d = k_cache.size(2);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.size(0) == rows && cos.size(1) == d,
              "decode_layer: cos/sin must be contiguous fp32 [T, head_dim]");
  at::Tensor h = rms_norm(x, weights[0], eps);
  auto qkv = project(h, {weights[1], weights[2], weights[3]},
                     {bias_at(biases, 0), bias_at(biases, 1), bias_at(biases, 2)});
  at::Tensor &q = qkv[0], &k = qkv[1], &v = qkv[2];
  rope(q, cos, sin, num_heads, d);
  rope(k, cos, sin, num_kv_heads, d);
  write_kv(k_cache, k, slot_mapping);
  write_kv(v_cache, v, slot_mapping);
  at::Tensor a = fullchain::paged_decode_attention(q.view({rows, num_heads, d}), k_cache,
                                                   v_cache, block_tables, seq_lens, block_size,
                                                   1.0 / std::sqrt(static_cast<double>(d)));
  at::Tensor y =
      x + project(a.view({rows, num_heads * d}), {weights[4]}, {bias_at(biases, 3)})[0];
  h = rms_norm(y, weights[5], eps);
  auto gate_up = project(h, {weights[6], weights[7]}, {bias_at(biases, 4), bias_at(biases, 5)});
  silu_mul(gate_up[0], gate_up[1]);
  return y.add_(project(gate_up[0], {weights[8]}, {bias_at(biases, 6)})[0]);
}

// all layers of a decode step, one `decode_layer` each: weights 9 per layer, biases 7 per layer
// (or none), one pool per layer; the last layer's output
at::Tensor decode_layers(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                         at::TensorList weights,
                         const c10::List<std::optional<at::Tensor>>& biases,
                         at::TensorList k_caches, at::TensorList v_caches,
                         const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                         const at::Tensor& seq_lens, int64_t block_size, int64_t num_heads,
                         int64_t num_kv_heads, double eps) {
  const size_t layers = k_caches.size();
  TORCH_CHECK(weights.size() == 9 * layers && v_caches.size() == layers &&
                  (biases.size() == 0 || biases.size() == 7 * layers),
              "decode_layers: 9 weights, 7 biases (or none) and one pool per layer expected, "
              "got ", weights.size(), ", ", biases.size(), " and ", layers);
  at::Tensor h = x;
  for (size_t l = 0; l < layers; ++l) {
    c10::List<std::optional<at::Tensor>> layer_biases;
    for (size_t i = 0; biases.size() > 0 && i < 7; ++i) {
      layer_biases.push_back(biases.get(7 * l + i));
    }
    h = decode_layer(h, cos, sin, weights.slice(9 * l, 9), layer_biases, k_caches[l],
                     v_caches[l], slot_mapping, block_tables, seq_lens, block_size, num_heads,
                     num_kv_heads, eps);
  }
  return h;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fullchain, m) {
  m.def("decode_layer(Tensor x, Tensor cos, Tensor sin, Tensor[] weights, Tensor?[] biases, "
        "Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping, Tensor block_tables, "
        "Tensor seq_lens, int block_size, int num_heads, int num_kv_heads, float eps) -> Tensor");
  m.def("decode_layers(Tensor x, Tensor cos, Tensor sin, Tensor[] weights, Tensor?[] biases, "
        "Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, Tensor slot_mapping, Tensor block_tables, "
        "Tensor seq_lens, int block_size, int num_heads, int num_kv_heads, float eps) -> Tensor");
}
TORCH_LIBRARY_IMPL(fullchain, CPU, m) {
  m.impl("decode_layer", &decode_layer);
  m.impl("decode_layers", &decode_layers);
}
