// The decoder layers of a decode step in one call: per layer RMSNorm, q/k/v products, RoPE, the
// new keys and values written to the paged pool, attention over it, the output product and
// residual, RMSNorm, SwiGLU and residual. The arithmetic is the same as the modules' (fp32, HF's
// order of operations); what goes away is the ~50 Python-level operator calls per layer and
// token, which cost as much as reading the weights for a small model (~15 ms per token for a
// 135M one). Two ways through: a few sequences (batch-1 decode) run all the layers in one
// parallel region (`decode_layers_few`); more run layer by layer (`decode_layer`), their
// products through PyTorch's own multi-threaded GEMM where that is faster.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <optional>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using fullchain::to_float;

#ifdef _OPENMP
inline int thread_num() { return omp_get_thread_num(); }
#else
inline int thread_num() { return 0; }
#endif

// out [rows, n] = w * x / rms(x) for x [rows, n], HF's RMSNorm in fp32; w fp32 or bf16 (as
// raw words), contiguous [n]
template <typename W>
void rms_norm_rows(const float* x, const W* w, float* out, int64_t rows, int64_t n,
                   double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) sum += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
    for (int64_t i = 0; i < n; ++i) out[r * n + i] = to_float(w[i]) * (xr[i] * inv);
  }
}

void rms_norm_rows(const float* x, const at::Tensor& w, float* out, int64_t rows, int64_t n,
                   double eps) {
  if (w.scalar_type() == at::kBFloat16) {
    rms_norm_rows(x, reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()), out, rows,
                  n, eps);
  } else {
    rms_norm_rows(x, w.data_ptr<float>(), out, rows, n, eps);
  }
}

// what rms_norm_rows reads of a norm weight: a contiguous fp32 or bf16 [c]
void check_norm(const at::Tensor& weight, int64_t c, const char* what) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == c && weight.is_contiguous() &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "decode_layers: ", what, " must be a contiguous fp32 or bf16 [", c, "], not ",
              weight.sizes(), " ", weight.scalar_type());
}

// x [T, C] fp32 -> w * x / rms(x)
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_norm(weight, x.size(1), "a norm weight");
  at::Tensor out = at::empty_like(x);
  rms_norm_rows(x.data_ptr<float>(), weight, out.data_ptr<float>(), x.size(0), x.size(1), eps);
  return out;
}

// y [rows, n] += b [n] (b empty: nothing)
void add_rows(float* y, const at::Tensor& b, int64_t rows, int64_t n) {
  if (!b.defined()) return;
  const float* bp = b.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) y[r * n + i] += bp[i];
  }
}

// x [T, in] fp32 -> [x W_k^T (+ b_k)] fp32 for weights sharing x (int8 ones with their
// scales): the kernels up to kMaxKernelRows rows (all products in one parallel region), else
// fp32 products as W x^T
std::vector<at::Tensor> project(const at::Tensor& x, std::vector<at::Tensor> weights,
                                std::vector<std::optional<at::Tensor>> biases,
                                std::vector<at::Tensor> scales) {
  std::vector<at::Tensor> ys;
  if (x.size(0) <= fullchain::kMaxKernelRows) {
    ys = fullchain::gemv_many(weights, x, scales);
  } else {
    for (size_t k = 0; k < weights.size(); ++k) {
      at::Tensor w = weights[k].to(at::kFloat);
      if (!scales.empty()) w.mul_(scales[k].unsqueeze(1));
      ys.push_back(at::mm(w, x.t()).t().contiguous());
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
  int64_t i = 0;
#ifdef FULLCHAIN_AVX2
  const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 e = fullchain::fast_exp(_mm256_sub_ps(zero, gi));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gi, _mm256_add_ps(one, e)),
                                          _mm256_loadu_ps(u + i)));
  }
#endif
  for (; i < n; ++i) g[i] = g[i] / (1.f + fullchain::fast_exp(-g[i])) * u[i];
}

// one key (or value) of d values as an int8 pool's row: round(x / s), s = max|x| / 127, then s
// (kv_quant.quantize's arithmetic: fp32 division, rounded half to even)
void quantize_row(const float* x, int64_t d, int8_t* row) {
  float top = 0.f;
  for (int64_t i = 0; i < d; ++i) top = std::max(top, std::abs(x[i]));
  const float scale = top / 127.f, safe = scale > 0.f ? scale : 1.f;
  for (int64_t i = 0; i < d; ++i) {
    row[i] = static_cast<int8_t>(std::clamp(std::nearbyint(x[i] / safe), -127.f, 127.f));
  }
  std::memcpy(row + d, &scale, sizeof(scale));
}

// x [T, KV * D] fp32 (the new keys or values) into slots slot_mapping[t] (block * block_size +
// position) of the pool [KV, blocks, block_size, D], fp32, bf16 (rounded to nearest even, as
// `Tensor.to` does) or int8 (rows of D + 4 bytes, quantize_row)
void write_kv(const at::Tensor& cache, const at::Tensor& x, const at::Tensor& slot_mapping) {
  TORCH_CHECK(cache.dim() == 4, "decode_layer: the pool must be [KV, blocks, block_size, D]");
  const int64_t rows = x.size(0), kv_heads = cache.size(0), block_size = cache.size(2);
  const int64_t blocks = cache.size(1), d = fullchain::pool_head_dim(cache),
                slots = blocks * block_size, row = cache.size(3);
  TORCH_CHECK(cache.is_contiguous() && kv_heads * d == x.size(1) &&
                  slot_mapping.scalar_type() == at::kLong && slot_mapping.numel() == rows,
              "decode_layer: the pool, the new keys and the slot mapping do not match");
  const int64_t* sp = slot_mapping.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(sp[r] >= 0 && sp[r] < slots, "decode_layer: slot ", sp[r],
                " is outside the pool of ", slots);
    const int64_t block = sp[r] / block_size, pos = sp[r] % block_size;
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t at = ((h * blocks + block) * block_size + pos) * row;
      const float* src = xp + (r * kv_heads + h) * d;
      if (cache.scalar_type() == at::kFloat) {
        std::memcpy(cache.data_ptr<float>() + at, src, d * sizeof(float));
      } else if (cache.scalar_type() == at::kChar) {
        quantize_row(src, d, cache.data_ptr<int8_t>() + at);
      } else {
        at::BFloat16* dst = cache.data_ptr<at::BFloat16>() + at;
        for (int64_t i = 0; i < d; ++i) dst[i] = at::BFloat16(src[i]);
      }
    }
  }
}

std::optional<at::Tensor> bias_at(const c10::List<std::optional<at::Tensor>>& biases, size_t i) {
  return biases.size() > i ? static_cast<std::optional<at::Tensor>>(biases.get(i))
                           : std::nullopt;
}

// x [T, C] fp32, one token of T sequences; cos/sin [T, D] fp32; weights: input norm, q, k, v,
// o, post-attention norm, gate, up, down; biases: q, k, v, o, gate, up, down (None for none);
// scales: q, k, v, o, gate, up, down's when the projections are int8 (else none);
// the layer's pool k_cache / v_cache [KV, blocks, block_size, D]; slot_mapping [T] (where the
// new keys go); block_tables [T, nb]; seq_lens [T] (keys after this token). Returns the layer's
// output.
at::Tensor decode_layer(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                        at::TensorList weights,
                        const c10::List<std::optional<at::Tensor>>& biases,
                        const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& slot_mapping,
                        const at::Tensor& block_tables, const at::Tensor& seq_lens,
                        int64_t block_size, int64_t num_heads, int64_t num_kv_heads,
                        double eps, at::TensorList scales) {
  TORCH_CHECK(weights.size() == 9, "decode_layer: 9 weights expected, got ", weights.size());
  TORCH_CHECK(scales.size() == (weights[1].scalar_type() == at::kChar ? 7 : 0),
              "decode_layer: int8 projections take 7 scales, the others none; got ",
              scales.size(), " for ", weights[1].scalar_type());
  auto scales_of = [&](std::initializer_list<size_t> ks) {  // the projections' scales, if any
    std::vector<at::Tensor> out;
    for (size_t k : ks) {
      if (!scales.empty()) out.push_back(scales[k]);
    }
    return out;
  };
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "decode_layer: x must be a contiguous fp32 [T, C]");
  TORCH_CHECK(k_cache.dim() == 4, "decode_layer: the pool must be [KV, blocks, block_size, D]");
  const int64_t rows = x.size(0), d = fullchain::pool_head_dim(k_cache);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.size(0) == rows && cos.size(1) == d,
              "decode_layer: cos/sin must be contiguous fp32 [T, head_dim]");
  at::Tensor h = rms_norm(x, weights[0], eps);
  auto qkv = project(h, {weights[1], weights[2], weights[3]},
                     {bias_at(biases, 0), bias_at(biases, 1), bias_at(biases, 2)},
                     scales_of({0, 1, 2}));
  at::Tensor &q = qkv[0], &k = qkv[1], &v = qkv[2];
  rope(q, cos, sin, num_heads, d);
  rope(k, cos, sin, num_kv_heads, d);
  write_kv(k_cache, k, slot_mapping);
  write_kv(v_cache, v, slot_mapping);
  at::Tensor a = fullchain::paged_decode_attention(q.view({rows, num_heads, d}), k_cache,
                                                   v_cache, block_tables, seq_lens, block_size,
                                                   1.0 / std::sqrt(static_cast<double>(d)));
  at::Tensor y =
      x + project(a.view({rows, num_heads * d}), {weights[4]}, {bias_at(biases, 3)},
                  scales_of({3}))[0];
  h = rms_norm(y, weights[5], eps);
  auto gate_up = project(h, {weights[6], weights[7]}, {bias_at(biases, 4), bias_at(biases, 5)},
                         scales_of({4, 5}));
  silu_mul(gate_up[0], gate_up[1]);
  return y.add_(
      project(gate_up[0], {weights[8]}, {bias_at(biases, 6)}, scales_of({6}))[0]);
}

// The decode steps of a few sequences (rows <= kFewRows), all layers in one parallel region:
// the threads share each product's weight rows in chunks (and the attention's (sequence, kv
// head) items), and the first thread alone does the rest between products (norms, biases,
// RoPE, writing the pool, residuals) while the others wait at a barrier. Forking and joining
// the threads around each of a token's ~120 products (and waking them) cost more than the
// barriers. The inputs are checked before the region: nothing thrown may cross it, so an
// error in the first thread's work is kept and rethrown.
constexpr int64_t kFewRows = 4;

// what every layer of a decode step reads besides its weights and pool: RoPE's cos/sin [T, D],
// where the new keys go (slot_mapping [T]), what each query attends to (block_tables [T, nb],
// seq_lens [T]), and the model's shape
struct StepInputs {
  const at::Tensor &cos, &sin, &slot_mapping, &block_tables, &seq_lens;
  int64_t block_size, num_heads, num_kv_heads;
  double eps;
};

at::Tensor decode_layers_few(const at::Tensor& x, at::TensorList weights,
                             const c10::List<std::optional<at::Tensor>>& biases,
                             at::TensorList scales, at::TensorList k_caches,
                             at::TensorList v_caches, const StepInputs& step,
                             const std::optional<at::Tensor>& final_norm) {
  const at::Tensor &cos = step.cos, &sin = step.sin, &slot_mapping = step.slot_mapping;
  const int64_t block_size = step.block_size, num_heads = step.num_heads,
                num_kv_heads = step.num_kv_heads;
  const double eps = step.eps;
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "decode_layer: x must be a contiguous fp32 [T, C]");
  const int64_t layers = static_cast<int64_t>(k_caches.size()), rows = x.size(0);
  const int64_t c = x.size(1), d = fullchain::pool_head_dim(k_caches[0]);
  const int64_t inter = weights[6].size(0);
  const fullchain::WeightType type = fullchain::weight_type(weights[1], "decode_layers: q");
  const bool bf16 = type == fullchain::WeightType::kBFloat16;
  const bool int8 = type == fullchain::WeightType::kInt8;
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == (int8 ? 7 * layers : 0),
              "decode_layers: int8 projections take 7 scales a layer, the others none; got ",
              scales.size(), " for ", layers, " layers of ", weights[1].scalar_type());
  const int64_t qd = num_heads * d, kvd = num_kv_heads * d;
  for (int64_t l = 0; l < layers; ++l) {  // the kernels read exactly these shapes
    const at::Tensor* w = weights.data() + 9 * l;
    const std::vector<std::vector<int64_t>> shapes = {
        {c}, {qd, c}, {kvd, c}, {kvd, c}, {c, qd}, {c}, {inter, c}, {inter, c}, {c, inter}};
    for (int64_t i = 0; i < 9; ++i) {
      const bool norm = i == 0 || i == 5;
      TORCH_CHECK(w[i].sizes() == at::IntArrayRef(shapes[i]) && w[i].is_contiguous() &&
                      (norm ? w[i].scalar_type() != at::kChar
                            : w[i].scalar_type() == w[1].scalar_type()) &&
                      (w[i].scalar_type() == at::kFloat || w[i].scalar_type() == at::kBFloat16 ||
                       w[i].scalar_type() == at::kChar),
                  "decode_layers: layer ", l, " weight ", i, " is ", w[i].sizes(), " ",
                  w[i].scalar_type(), ", expected a contiguous ", at::IntArrayRef(shapes[i]),
                  " in fp32 or bf16 (the projections all alike, or all int8)");
      if (int8 && !norm) {
        const at::Tensor& sc = scales[7 * l + (i < 5 ? i - 1 : i - 2)];
        TORCH_CHECK(sc.scalar_type() == at::kFloat && sc.is_contiguous() &&
                        sc.numel() == shapes[i][0],
                    "decode_layers: layer ", l, " weight ", i, "'s scale must be a contiguous "
                    "float32 [", shapes[i][0], "]");
      }
    }
    for (int64_t i = 0; i < 7 && biases.size() > 0; ++i) {
      const std::optional<at::Tensor> b = biases.get(7 * l + i);
      const int64_t n = w[i < 4 ? i + 1 : i + 2].size(0);  // q k v o, then gate up down
      TORCH_CHECK(!b.has_value() || !b->defined() || b->numel() == n, "decode_layers: layer ",
                  l, " bias ", i, " has ", b.has_value() ? b->numel() : 0, " values, not ", n);
    }
  }
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.size(0) == rows && cos.size(1) == d,
              "decode_layer: cos/sin must be contiguous fp32 [T, head_dim]");
  const at::Tensor tables = step.block_tables.contiguous(), lens = step.seq_lens.contiguous();
  const at::Tensor q_shape = at::empty({rows, num_heads, d});  // what the checks read of q
  for (int64_t l = 0; l < layers; ++l) {  // every pool the threads will read, checked here
    TORCH_CHECK(k_caches[l].sizes() == k_caches[0].sizes() &&
                    k_caches[l].scalar_type() == k_caches[0].scalar_type(),
                "decode_layers: the layers' pools differ");
    fullchain::check_paged_attention(q_shape, k_caches[l], v_caches[l], tables, lens,
                                     block_size);
  }
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.is_contiguous() &&
                  slot_mapping.numel() == rows,
              "decode_layers: one int64 slot per sequence expected");
  const int64_t slots = k_caches[0].size(1) * k_caches[0].size(2);
  const int64_t* sp = slot_mapping.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(sp[r] >= 0 && sp[r] < slots, "decode_layer: slot ", sp[r],
                " is outside the pool of ", slots);
  }
  std::vector<at::Tensor> bias(7 * layers);
  for (size_t i = 0; i < biases.size(); ++i) {
    const std::optional<at::Tensor> b = biases.get(i);
    if (b.has_value() && b->defined()) bias[i] = b->to(at::kFloat).contiguous();
  }
  const auto opts = x.options();
  at::Tensor h = x.clone();  // the residual stream
  at::Tensor normed = at::empty({rows, c}, opts);
  at::Tensor q = at::empty({rows, qd}, opts), attn = at::empty({rows, qd}, opts);
  at::Tensor k = at::empty({rows, kvd}, opts), v = at::empty_like(k);
  at::Tensor o = at::empty({rows, c}, opts);
  at::Tensor gate = at::empty({rows, inter}, opts), up = at::empty_like(gate);
  at::Tensor down = at::empty({rows, c}, opts);
  at::Tensor result = final_norm.has_value() ? at::empty({rows, c}, opts) : h;
  const int64_t widest = std::max({c, qd, inter});
  std::vector<float> split(bf16 ? rows * widest : 0);
  const int64_t threads = at::get_num_threads();
  std::vector<std::atomic<int64_t>> next(4 * layers), next_item(layers);
  for (auto& n : next) n = 0;
  for (auto& n : next_item) n = 0;
  const int64_t items = rows * num_kv_heads;
  std::exception_ptr error;
  bool failed = false;  // written by the first thread only, read after barriers

  // the first thread's work between products; an error skips all that follows
  auto serial = [&](auto&& work) {
    if (failed) return;
    try {
      work();
    } catch (...) {
      error = std::current_exception();
      failed = true;
    }
  };
  auto prepare = [&](const at::Tensor& input) {  // bf16 loops read the input split
    if (bf16) {
      fullchain::split_even_odd(input.data_ptr<float>(), rows, input.size(1), split.data());
    }
  };
  auto add_bias = [&](at::Tensor& y, int64_t i) {
    add_rows(y.data_ptr<float>(), bias[i], rows, y.size(1));
  };
  auto add = [rows, c](at::Tensor& y, const at::Tensor& z) {  // y += z, both [rows, c]
    float* yp = y.data_ptr<float>();
    const float* zp = z.data_ptr<float>();
    for (int64_t i = 0; i < rows * c; ++i) yp[i] += zp[i];
  };
  auto normalize = [&](const at::Tensor& weight) {  // normed = the norm of h
    rms_norm_rows(h.data_ptr<float>(), weight, normed.data_ptr<float>(), rows, c, eps);
    prepare(normed);
  };
  auto share = [&](std::atomic<int64_t>& counter, const at::Tensor& input,
                   const std::vector<fullchain::Product>& products) {
    if (failed) return;
    int64_t total = 0;
    for (const fullchain::Product& p : products) total += p.out;
    const int64_t in = input.size(1);
    const float* xp = input.data_ptr<float>();
    const int64_t chunk = fullchain::gemv_chunk(total, in, weights[1].element_size(), threads);
    fullchain::share_products(counter, chunk, products, type,
                              {xp, bf16 ? split.data() : xp, nullptr, rows, in});
  };
  // layer l's projection k (q, k, v, o, gate, up, down) into y
  auto product = [&](int64_t l, int64_t k, at::Tensor& y) {
    const at::Tensor& w = weights[9 * l + (k < 4 ? k + 1 : k + 2)];
    const float* sc = int8 ? scales[7 * l + k].data_ptr<float>() : nullptr;
    return fullchain::Product{w.data_ptr(), w.size(0), y.data_ptr<float>(), sc};
  };
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const bool first = thread_num() == 0;
    for (int64_t l = 0; l < layers; ++l) {
      const at::Tensor* w = weights.data() + 9 * l;
      if (first) serial([&] {
        normalize(w[0]);
      });
#pragma omp barrier
      share(next[4 * l], normed, {product(l, 0, q), product(l, 1, k), product(l, 2, v)});
#pragma omp barrier
      if (first) serial([&] {
        add_bias(q, 7 * l);
        add_bias(k, 7 * l + 1);
        add_bias(v, 7 * l + 2);
        rope(q, cos, sin, num_heads, d);
        rope(k, cos, sin, num_kv_heads, d);
        write_kv(k_caches[l], k, slot_mapping);
        write_kv(v_caches[l], v, slot_mapping);
      });
#pragma omp barrier
      if (!failed) {  // (sequence, kv head) items, shared like the products' rows
        for (int64_t i = next_item[l].fetch_add(1); i < items; i = next_item[l].fetch_add(1)) {
          fullchain::paged_attention_items(q.data_ptr<float>(), k_caches[l], v_caches[l],
                                           tables.data_ptr<int64_t>(), tables.size(1),
                                           lens.data_ptr<int64_t>(), block_size, num_heads,
                                           scale, attn.data_ptr<float>(), i, i + 1);
        }
      }
#pragma omp barrier
      if (bf16) {
        if (first) serial([&] { prepare(attn); });
#pragma omp barrier
      }
      share(next[4 * l + 1], attn, {product(l, 3, o)});
#pragma omp barrier
      if (first) serial([&] {
        add_bias(o, 7 * l + 3);
        add(h, o);
        normalize(w[5]);
      });
#pragma omp barrier
      share(next[4 * l + 2], normed, {product(l, 4, gate), product(l, 5, up)});
#pragma omp barrier
      if (first) serial([&] {
        add_bias(gate, 7 * l + 4);
        add_bias(up, 7 * l + 5);
        silu_mul(gate, up);
        prepare(gate);
      });
#pragma omp barrier
      share(next[4 * l + 3], gate, {product(l, 6, down)});
#pragma omp barrier
      if (first) serial([&] {
        add_bias(down, 7 * l + 6);
        add(h, down);
      });
    }
    if (first && final_norm.has_value()) serial([&] {
      rms_norm_rows(h.data_ptr<float>(), *final_norm, result.data_ptr<float>(), rows, c, eps);
    });
  }
  if (error) std::rethrow_exception(error);
  return result;
}

// all layers of a decode step, one `decode_layer` each: weights 9 per layer, biases 7 per layer
// (or none), scales 7 per layer (int8 projections) or none, one pool per layer; the last
// layer's output, through the model's final norm if one is given
at::Tensor decode_layers(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                         at::TensorList weights,
                         const c10::List<std::optional<at::Tensor>>& biases,
                         at::TensorList k_caches, at::TensorList v_caches,
                         const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                         const at::Tensor& seq_lens, int64_t block_size, int64_t num_heads,
                         int64_t num_kv_heads, double eps, at::TensorList scales,
                         const std::optional<at::Tensor>& final_norm) {
  const size_t layers = k_caches.size();
  TORCH_CHECK(layers > 0 && weights.size() == 9 * layers && v_caches.size() == layers &&
                  (biases.size() == 0 || biases.size() == 7 * layers) &&
                  (scales.size() == 0 || scales.size() == 7 * layers),
              "decode_layers: 9 weights, 7 biases (or none), 7 scales (or none) and one pool "
              "per layer expected, got ", weights.size(), ", ", biases.size(), ", ",
              scales.size(), " and ", layers);
  TORCH_CHECK(k_caches[0].dim() == 4,
              "decode_layers: the pools must be [KV, blocks, block_size, D]");
  if (final_norm.has_value()) check_norm(*final_norm, x.size(1), "the final norm weight");
  if (x.size(0) <= kFewRows) {
    const StepInputs step{cos, sin, slot_mapping, block_tables, seq_lens,
                          block_size, num_heads, num_kv_heads, eps};
    return decode_layers_few(x, weights, biases, scales, k_caches, v_caches, step, final_norm);
  }
  at::Tensor h = x;
  for (size_t l = 0; l < layers; ++l) {
    c10::List<std::optional<at::Tensor>> layer_biases;
    for (size_t i = 0; biases.size() > 0 && i < 7; ++i) {
      layer_biases.push_back(biases.get(7 * l + i));
    }
    h = decode_layer(h, cos, sin, weights.slice(9 * l, 9), layer_biases, k_caches[l],
                     v_caches[l], slot_mapping, block_tables, seq_lens, block_size, num_heads,
                     num_kv_heads, eps, scales.empty() ? scales : scales.slice(7 * l, 7));
  }
  return final_norm.has_value() ? rms_norm(h, *final_norm, eps) : h;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fullchain, m) {
  m.def("decode_layer(Tensor x, Tensor cos, Tensor sin, Tensor[] weights, Tensor?[] biases, "
        "Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping, Tensor block_tables, "
        "Tensor seq_lens, int block_size, int num_heads, int num_kv_heads, float eps, "
        "Tensor[] scales) -> Tensor");
  m.def("decode_layers(Tensor x, Tensor cos, Tensor sin, Tensor[] weights, Tensor?[] biases, "
        "Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, Tensor slot_mapping, Tensor block_tables, "
        "Tensor seq_lens, int block_size, int num_heads, int num_kv_heads, float eps, "
        "Tensor[] scales, Tensor? final_norm=None) -> Tensor");
}
TORCH_LIBRARY_IMPL(fullchain, CPU, m) {
  m.impl("decode_layer", &decode_layer);
  m.impl("decode_layers", &decode_layers);
}
