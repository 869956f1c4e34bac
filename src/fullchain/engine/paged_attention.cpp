// Decode attention over the paged KV pool on the CPU: one query token per sequence attends to
// the keys its block table names, read in place. Gathering the blocks into a dense tensor first
// (index_select) copies every key and value once per layer and step, and PyTorch's attention
// kernels are built for long query blocks, not the one row of a decode step: for 32 sequences
// of ~270 tokens on a 135M model the two took ~75 ms of a ~220 ms step.
// A layer's pool is [KV, blocks, block_size, D]: one kv head's keys of a block lie together (4 KB
// at 16 keys of 64 fp32 values), and those of consecutive blocks follow each other, so that a
// (sequence, kv head) item reads whole stretches of memory (one long one where its blocks are
// consecutive, as a prompt's are), the next block's requested ahead, instead of every third
// 256 bytes of a [slots, KV, D] pool or 4 KB stretches 12 KB apart of a [blocks, KV, ...] one.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace {

using fullchain::hsum;
using fullchain::to_float;

#ifdef FULLCHAIN_AVX2
using fullchain::load8;
#endif

// asks for the n values from p to be brought into the cache (the stretches the hardware
// prefetcher would only find after their first misses: a block's keys, the next values)
template <typename T>
inline void prefetch(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < n * static_cast<int64_t>(sizeof(T)); off += 64) {
    __builtin_prefetch(bytes + off, 0, 3);
  }
}

// s[0 .. n) = softmax(s), in place: the maximum, e^(s - max) and their sum in vector lanes, then
// one multiplication by the sum's reciprocal (a division per value cost more than the rest)
inline void softmax(float* s, int64_t n) {
  int64_t t = 0;
  float top = -INFINITY, total = 0.f;
#ifdef FULLCHAIN_AVX2
  __m256 most = _mm256_set1_ps(-INFINITY);
  for (; t + 8 <= n; t += 8) most = _mm256_max_ps(most, _mm256_loadu_ps(s + t));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, most);
  top = *std::max_element(lanes, lanes + 8);
#endif
  for (; t < n; ++t) top = std::max(top, s[t]);
  t = 0;
#ifdef FULLCHAIN_AVX2
  __m256 sum = _mm256_setzero_ps();
  for (; t + 8 <= n; t += 8) {
    const __m256 e = fullchain::fast_exp(_mm256_sub_ps(_mm256_loadu_ps(s + t),
                                                       _mm256_set1_ps(top)));
    _mm256_storeu_ps(s + t, e);
    sum = _mm256_add_ps(sum, e);
  }
  total = hsum(sum);
#endif
  for (; t < n; ++t) {
    s[t] = fullchain::fast_exp(s[t] - top);
    total += s[t];
  }
  const float inv = 1.f / total;
  t = 0;
#ifdef FULLCHAIN_AVX2
  for (; t + 8 <= n; t += 8) {
    _mm256_storeu_ps(s + t, _mm256_mul_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(inv)));
  }
#endif
  for (; t < n; ++t) s[t] *= inv;
}

#ifdef FULLCHAIN_AVX2
// the sums of the eight floats of a, b, c and d, in that order
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}
#endif

// scores[g * stride + j] = q_g . k_j * scale for the G query heads q_g = q + g * d that share
// a kv head and `n` of its keys k_j = k + j * row (d values of the cache's type; an int8 pool's
// rows are d + 4 bytes, the last four the key's scale): each key is read and converted once for
// all G heads (per head, an int8 or bf16 pool's attention was bound by the conversions, not by
// memory), K keys at a time so that G * K chains of FMAs are in flight.
template <int G, typename T>
inline void group_dots(const float* q, const T* k, int64_t n, int64_t d, int64_t row,
                       float scale, float* scores, int64_t stride) {
  int64_t j = 0;
#ifdef FULLCHAIN_AVX2
  constexpr int K = G <= 3 ? 4 : 2;
  if (d % 8 == 0) {
    for (; j + K <= n; j += K) {
      __m256 a[G][K];
#pragma GCC unroll 16
      for (int c = 0; c < G * K; ++c) a[c / K][c % K] = _mm256_setzero_ps();
      for (int64_t i = 0; i < d; i += 8) {
#pragma GCC unroll 4
        for (int c = 0; c < K; ++c) {
          const __m256 x = load8(k + (j + c) * row + i);
#pragma GCC unroll 4
          for (int g = 0; g < G; ++g) {
            a[g][c] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * d + i), x, a[g][c]);
          }
        }
      }
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        if constexpr (K == 4) {  // four sums at once: 5 instructions instead of 20
          _mm_storeu_ps(scores + g * stride + j,
                        _mm_mul_ps(hsum4(a[g][0], a[g][1], a[g][2], a[g][3]),
                                   _mm_set1_ps(scale)));
        } else {
          for (int c = 0; c < K; ++c) scores[g * stride + j + c] = hsum(a[g][c]) * scale;
        }
      }
    }
  }
#endif
  for (; j < n; ++j) {
    const T* kj = k + j * row;
    for (int g = 0; g < G; ++g) {
      float s = 0.f;
      for (int64_t i = 0; i < d; ++i) s += q[g * d + i] * to_float(kj[i]);
      scores[g * stride + j] = s * scale;
    }
  }
  if constexpr (std::is_same_v<T, int8_t>) {  // each key's own scale
    for (j = 0; j < n; ++j) {
      const float s = fullchain::row_scale(k + j * row, d);
      for (int g = 0; g < G; ++g) scores[g * stride + j] *= s;
    }
  }
}

// values are requested this many keys ahead of the weighted sum (a block's worth; 32 ahead and
// the keys two blocks ahead measured 0.94x of this)
constexpr int64_t kValuesAhead = 16;

#ifdef FULLCHAIN_AVX2
// dims [c, c + 8 V) of out_g = sum_t p_g[t] v_t (group_weighted_sum), in G * V registers. In
// an int8 pool's first chunk (c == 0) each weight p_g[t] is first multiplied, in place, by
// value t's scale, read from its row as the row itself is: the values come from memory here,
// their next ones requested ahead, while the FMAs run (a separate pass over the scales stalled
// on every row: 37% of the samples of the function that held it, about a fifth of the
// kernel's, in perf)
template <int G, int V, typename T>
inline void weighted_chunk(float* p, int64_t stride, const T* v, const int64_t* off,
                           int64_t len, int64_t d, int64_t c, float* out) {
  const bool scale = std::is_same_v<T, int8_t> && c == 0;
  __m256 a[G][V];
#pragma GCC unroll 16
  for (int r = 0; r < G * V; ++r) a[r / V][r % V] = _mm256_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    const T* vt = v + off[t] + c;
    if (c == 0 && t + kValuesAhead < len) prefetch(v + off[t + kValuesAhead], d);
    if (scale) {
      const float s = fullchain::row_scale(reinterpret_cast<const int8_t*>(v + off[t]), d);
      for (int g = 0; g < G; ++g) p[g * stride + t] *= s;
    }
    __m256 pg[G];
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) pg[g] = _mm256_set1_ps(p[g * stride + t]);
#pragma GCC unroll 8
    for (int r = 0; r < V; ++r) {
      const __m256 x = load8(vt + 8 * r);
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) a[g][r] = _mm256_fmadd_ps(pg[g], x, a[g][r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < G * V; ++r) {
    _mm256_storeu_ps(out + (r / V) * d + c + 8 * (r % V), a[r / V][r % V]);
  }
}
#endif

// out_g[0 .. d) = sum_t p_g[t] s_t v_t for the G query heads of a kv head (weights p_g = p + g
// * stride, outputs out_g = out + g * d) over its `len` values, v_t at v + off[t] (slot order
// through the block table), s_t its scale in an int8 pool (p is multiplied by it in place), 1
// otherwise: each value read and converted once for all G heads, 8 V dims at a time (as many
// as the registers hold: 64 for one head), then 8, then one by one
template <int G, typename T>
inline void group_weighted_sum(float* p, int64_t stride, const T* v, const int64_t* off,
                               int64_t len, int64_t d, float* out) {
  constexpr bool int8 = std::is_same_v<T, int8_t>;
  int64_t c = 0;
#ifdef FULLCHAIN_AVX2
  constexpr int V = G == 1 ? 8 : (G == 2 ? 4 : 2);
  for (; c + 8 * V <= d; c += 8 * V) weighted_chunk<G, V>(p, stride, v, off, len, d, c, out);
  for (; c + 8 <= d; c += 8) weighted_chunk<G, 1>(p, stride, v, off, len, d, c, out);
#endif
  if (int8 && c == 0) {  // no vector chunk has scaled the weights
    for (int64_t t = 0; t < len; ++t) {
      const float s = fullchain::row_scale(reinterpret_cast<const int8_t*>(v + off[t]), d);
      for (int g = 0; g < G; ++g) p[g * stride + t] *= s;
    }
  }
  for (; c < d; ++c) {
    for (int g = 0; g < G; ++g) {
      float s = 0.f;
      for (int64_t t = 0; t < len; ++t) s += p[g * stride + t] * to_float(v[off[t] + c]);
      out[g * d + c] = s;
    }
  }
}

// One (sequence, kv head): its G query heads over keys 0 .. len-1 of its blocks, read in place
// from that kv head's part of the pool (kc, vc: [blocks, block_size, row], a row d values, or
// d int8 values and their scale): scores block by block, softmax, then the weighted sum of
// values (an int8 value's scale folded into its weights).
template <int G, typename T>
void attend(const float* q, const T* kc, const T* vc, const int64_t* table, int64_t len,
            int64_t block_size, int64_t d, float scale, float* out, std::vector<float>& scores,
            std::vector<int64_t>& offsets) {
  scores.resize(G * len);
  constexpr bool int8 = std::is_same_v<T, int8_t>;
  const int64_t row = int8 ? d + fullchain::kKvScaleBytes : d;
  const int64_t block = block_size * row;  // one block of this kv head's keys
  const int64_t num_blocks = (len + block_size - 1) / block_size;
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    const int64_t first = blk * block_size, n = std::min(block_size, len - first);
    if (blk + 1 < num_blocks) {  // the next block's keys, requested while these are read
      prefetch(kc + table[blk + 1] * block, block);
    }
    group_dots<G>(q, kc + table[blk] * block, n, d, row, scale, scores.data() + first, len);
  }
  for (int g = 0; g < G; ++g) softmax(scores.data() + g * len, len);
  // slot offsets once per (sequence, head), shared by the query heads and the value chunks
  offsets.resize(len);
  for (int64_t blk = 0, t = 0; blk < num_blocks; ++blk) {
    const int64_t base = table[blk] * block;
    for (int64_t j = 0; j < block_size && t < len; ++j, ++t) offsets[t] = base + j * row;
  }
  if constexpr (std::is_same_v<T, float>) {  // nothing to convert: one head at a time, each
    // pass over a whole row (shared by the heads, in four passes of 16 dims: 0.87-1.09x)
    for (int g = 0; g < G; ++g) {
      group_weighted_sum<1>(scores.data() + g * len, len, vc, offsets.data(), len, d,
                            out + g * d);
    }
  } else {
    group_weighted_sum<G>(scores.data(), len, vc, offsets.data(), len, d, out);
  }
}

// attend for `group` query heads: together up to four, one by one beyond
template <typename T>
void attend_group(const float* q, const T* kc, const T* vc, const int64_t* table, int64_t len,
                  int64_t block_size, int64_t group, int64_t d, float scale, float* out,
                  std::vector<float>& scores, std::vector<int64_t>& offsets) {
  switch (group) {
    case 1: return attend<1>(q, kc, vc, table, len, block_size, d, scale, out, scores, offsets);
    case 2: return attend<2>(q, kc, vc, table, len, block_size, d, scale, out, scores, offsets);
    case 3: return attend<3>(q, kc, vc, table, len, block_size, d, scale, out, scores, offsets);
    case 4: return attend<4>(q, kc, vc, table, len, block_size, d, scale, out, scores, offsets);
    default:
      for (int64_t g = 0; g < group; ++g) {
        attend<1>(q + g * d, kc, vc, table, len, block_size, d, scale, out + g * d, scores,
                  offsets);
      }
  }
}

}  // namespace

namespace fullchain {

// paged_decode_attention's inputs, checked: shapes and types, every length within its block
// table and every block it names within the pool
void check_paged_attention(const at::Tensor& q, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, int64_t block_size) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(),
              "paged_decode_attention: q must be [B, H, D] and the caches [KV, blocks, "
              "block_size, D]");
  TORCH_CHECK(k_cache.size(2) == block_size, "paged_decode_attention: the caches hold blocks "
              "of ", k_cache.size(2), " keys, not ", block_size);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(),
              "paged_decode_attention: the caches must be contiguous");
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type() &&
                  (k_cache.scalar_type() == at::kFloat ||
                   k_cache.scalar_type() == at::kBFloat16 || k_cache.scalar_type() == at::kChar),
              "paged_decode_attention: the caches must be float32, bfloat16 or int8");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong &&
                  block_tables.is_contiguous() && seq_lens.is_contiguous(),
              "paged_decode_attention: block tables and lengths must be contiguous int64");
  const int64_t batch = q.size(0), heads = q.size(1), d = q.size(2);
  const int64_t kv_heads = k_cache.size(0);
  TORCH_CHECK(pool_head_dim(k_cache) == d && heads % kv_heads == 0,
              "paged_decode_attention: head sizes do not match (an int8 pool's rows are D + ",
              kKvScaleBytes, " bytes)");
  TORCH_CHECK(block_tables.size(0) == batch && seq_lens.size(0) == batch,
              "paged_decode_attention: one block table and length per sequence");
  const int64_t nb = block_tables.size(1);
  const int64_t* lp = seq_lens.data_ptr<int64_t>();
  const int64_t* tp = block_tables.data_ptr<int64_t>();
  const int64_t pool_blocks = k_cache.size(1);
  for (int64_t b = 0; b < batch; ++b) {  // every key it will read is in the table and the pool
    TORCH_CHECK(lp[b] >= 1 && lp[b] <= nb * block_size,
                "paged_decode_attention: sequence ", b, " has ", lp[b], " keys but ", nb,
                " blocks of ", block_size);
    for (int64_t j = 0; j < (lp[b] + block_size - 1) / block_size; ++j) {
      TORCH_CHECK(tp[b * nb + j] >= 0 && tp[b * nb + j] < pool_blocks,
                  "paged_decode_attention: sequence ", b, " names block ", tp[b * nb + j],
                  " of a pool of ", pool_blocks);
    }
  }
}

void paged_attention_items(const float* q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const int64_t* tables, int64_t nb, const int64_t* lens,
                           int64_t block_size, int64_t heads, double scale, float* out,
                           int64_t begin, int64_t end) {
  const int64_t kv_heads = k_cache.size(0), d = pool_head_dim(k_cache), group = heads / kv_heads;
  const int64_t per_head = k_cache.stride(0);  // one kv head's part of the (contiguous) pool
  std::vector<float> scores;
  std::vector<int64_t> offsets;
  auto run = [&](auto* kp, auto* vp) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / kv_heads, kvh = item % kv_heads;
      const int64_t head0 = b * heads + kvh * group;  // this kv head's first query head
      attend_group(q + head0 * d, kp + kvh * per_head, vp + kvh * per_head, tables + b * nb,
                   lens[b], block_size, group, d, static_cast<float>(scale), out + head0 * d,
                   scores, offsets);
    }
  };
  if (k_cache.scalar_type() == at::kFloat) {
    run(k_cache.data_ptr<float>(), v_cache.data_ptr<float>());
  } else if (k_cache.scalar_type() == at::kChar) {
    run(k_cache.data_ptr<int8_t>(), v_cache.data_ptr<int8_t>());
  } else {
    run(reinterpret_cast<const uint16_t*>(k_cache.data_ptr<at::BFloat16>()),
        reinterpret_cast<const uint16_t*>(v_cache.data_ptr<at::BFloat16>()));
  }
}

// q [B, H, D]; k_cache, v_cache [KV, blocks, block_size, D]; block_tables [B, nb] (int64, padded);
// seq_lens [B] (int64, >= 1). Returns softmax(q k^T * scale) v over each sequence's first
// seq_lens[b] keys, [B, H, D] in q's dtype, accumulated in fp32.
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache, const at::Tensor& block_tables,
                                  const at::Tensor& seq_lens, int64_t block_size, double scale) {
  const at::Tensor tables = block_tables.contiguous(), lens = seq_lens.contiguous();
  check_paged_attention(q, k_cache, v_cache, tables, lens, block_size);
  const at::Tensor qf = q.to(at::kFloat).contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), kv_heads = k_cache.size(0);
  const int64_t* lp = lens.data_ptr<int64_t>();
  at::Tensor out = at::empty(q.sizes(), qf.options());
  int64_t keys = 0;  // a few short histories (batch-1 decode) are cheaper on one thread
  for (int64_t b = 0; b < batch; ++b) keys += lp[b];
  const int64_t grain = keys * heads * q.size(2) < (int64_t{1} << 16) ? batch * kv_heads : 1;
  at::parallel_for(0, batch * kv_heads, grain, [&](int64_t begin, int64_t end) {
    paged_attention_items(qf.data_ptr<float>(), k_cache, v_cache, tables.data_ptr<int64_t>(),
                          tables.size(1), lp, block_size, heads, scale,
                          out.data_ptr<float>(), begin, end);
  });
  return out.to(q.scalar_type());
}

}  // namespace fullchain

TORCH_LIBRARY_FRAGMENT(fullchain, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
        "Tensor seq_lens, int block_size, float scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(fullchain, CPU, m) {
  m.impl("paged_decode_attention", &fullchain::paged_decode_attention);
}
