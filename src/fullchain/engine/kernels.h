// The engine's CPU decode kernels, shared between their sources (see kernels.py).
#pragma once

#include <torch/types.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FULLCHAIN_AVX2 1
#endif

namespace fullchain {

// what a product's weights are stored as: fp32, bf16 (raw 16-bit words) or int8 with one fp32
// scale per output row (weight-only quantisation: w = q * scale)
enum class WeightType { kFloat, kBFloat16, kInt8 };

// a tensor's WeightType; fails naming `what` for any other dtype
WeightType weight_type(const at::Tensor& w, const char* what);

// An int8 KV pool's row is a key's (or value's) D int8 values, then their fp32 scale in the
// last four bytes (kv_quant.py): the head dimension of a pool [KV, blocks, block_size, row],
// and a row's scale
constexpr int64_t kKvScaleBytes = 4;
inline int64_t pool_head_dim(const at::Tensor& cache) {
  return cache.scalar_type() == at::kChar ? cache.size(3) - kKvScaleBytes : cache.size(3);
}
inline float row_scale(const int8_t* row, int64_t d) {
  float s;
  std::memcpy(&s, row + d, sizeof(s));
  return s;
}

// a value of the caches or weights as fp32: fp32 as is, bf16 (raw 16-bit words) shifted up,
// int8 as its integer (the row's scale is applied after the sum)
inline float to_float(float v) { return v; }
inline float to_float(int8_t v) { return static_cast<float>(v); }
inline float to_float(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// e^x in fp32 without a call per value: n = round(x / ln 2), r = x - n ln 2 (in two parts), a
// degree-7 polynomial for e^r on [-ln2/2, ln2/2] (Cephes' expf coefficients), times 2^n.
// Within 1 ulp of e^x on [-87, 88] (checked on every 100th float); below -87.3 it gives ~1e-38
// instead of 0, above 88 e^88. The vector version takes the same steps lane by lane, so a
// value's result does not depend on where it lies in an array. NaN stays NaN.
namespace exp_constants {
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kLow = -87.3f, kHigh = 88.f;
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_constants

inline float fast_exp(float x) {
  using namespace exp_constants;
  if (x != x) return x;
  x = x < kLow ? kLow : (x > kHigh ? kHigh : x);
  const float n = std::floor(std::fma(x, kLog2e, 0.5f));
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  float p = kP[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kP[i]);
  const float y = std::fma(p, r * r, r) + 1.f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

#ifdef FULLCHAIN_AVX2
inline __m256 fast_exp(__m256 x) {
  using namespace exp_constants;
  // min/max return their second operand when either is NaN: x's NaN passes through
  x = _mm256_max_ps(_mm256_set1_ps(kLow), _mm256_min_ps(_mm256_set1_ps(kHigh), x));
  const __m256 n =
      _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP[i]));
  const __m256 y =
      _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// 8 values of the caches or weights from p as fp32 (bf16: raw 16-bit words shifted up; int8:
// the integers)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t* p) {
  const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
}
inline __m256 load8(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// asks for the cache line at `address` (an integer: the prefetches run past the end of the
// weights, where a pointer could not be formed); a prefetch never faults
inline void prefetch_address(uintptr_t address) {
  _mm_prefetch(reinterpret_cast<const char*>(address), _MM_HINT_T0);
}

// the sum of a vector's eight floats
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// products of up to kMaxKernelRows rows of x go through the kernels (gemv_many), fp32, bf16 and
// int8 weights alike: row by row up to tile_limit(type) rows, in register tiles beyond (x
// packed in panels); PyTorch's products from there on (prompt chunks). fp32 tiles from 6 rows
// (a step's products: 8 rows 1.44x the row-by-row loop, 6 rows 1.10x, 5 rows 1.01x), bf16 and
// int8 tiles, which convert each weight first, from 9 (at 8 rows 1.05x and 0.91x, at 6 0.75x
// and 0.71x; scratch, the builds alternating in one process)
constexpr int64_t kMaxKernelRows = 64;
inline int64_t tile_limit(WeightType type) { return type == WeightType::kFloat ? 5 : 8; }

// each row of x [rows, in] as its even values, then its odd ones: what the bf16 loop reads
void split_even_odd(const float* x, int64_t rows, int64_t in, float* split);

// rows of weights of `in` columns taken `chunk` at a time by each thread of a parallel region,
// sized as gemv does: at most ~256 KB of weights, at least four chunks a thread
int64_t gemv_chunk(int64_t total_rows, int64_t in, int64_t element_size, int64_t threads);

// one weight [out, in] (fp32, bf16 as raw 16-bit words, or int8 with `scale` [out]) of
// products sharing an input, and where its output rows [rows, out] go
struct Product {
  const void* weight;
  int64_t out;
  float* y;
  const float* scale = nullptr;
};

// x [rows, in] fp32 in the forms the product loops read: `split` (bf16 weights, up to
// tile_limit rows) each row's even values then its odd ones; `panels` (beyond tile_limit rows)
// x packed by pack_panels
struct ProductInput {
  const float* x;
  const float* split;
  const float* panels;
  int64_t rows, in;
};

// x [rows, in] as panels of 16 rows, column by column: x[16p + b][k] at (p * in + k) * 16 + b,
// zeros past the last row
std::vector<float> pack_panels(const float* x, int64_t rows, int64_t in);

// Called by every thread of a parallel region: takes chunks of `chunk` rows of the products'
// rows laid end to end from `next` until none are left, and computes them (y = x W^T).
void share_products(std::atomic<int64_t>& next, int64_t chunk, const std::vector<Product>& ps,
                    WeightType type, const ProductInput& input);

// y [..., out] = x [..., in] W^T for the rows of decode steps; W row-major [out, in], fp32 or
// bf16, or int8 with its fp32 scales [out] (y = (x q^T) * scale).
at::Tensor gemv(const at::Tensor& weight, const at::Tensor& x,
                const std::optional<at::Tensor>& scale);

// [x W_k^T for each k] (fp32 [rows, out_k]) for weights of one dtype sharing the input x, in
// one parallel region; int8 weights take their scales (one per weight, in order), the others
// none.
std::vector<at::Tensor> gemv_many(at::TensorList weights, const at::Tensor& x,
                                  at::TensorList scales = {});

// q [B, H, D], one token per sequence, over keys 0 .. seq_lens[b]-1 of sequence b, found
// through block_tables [B, nb] in the pool k_cache / v_cache [KV, blocks, block_size, D];
// [B, H, D].
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache, const at::Tensor& block_tables,
                                  const at::Tensor& seq_lens, int64_t block_size, double scale);

// the checks of paged_decode_attention's inputs (block tables and lengths contiguous int64)
void check_paged_attention(const at::Tensor& q, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, int64_t block_size);

// items [begin, end) of paged_decode_attention, item = sequence * KV + kv head, unchecked:
// q fp32 [B, H, D], tables [B, nb], lens [B], out fp32 [B, H, D]
void paged_attention_items(const float* q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const int64_t* tables, int64_t nb, const int64_t* lens,
                           int64_t block_size, int64_t heads, double scale, float* out,
                           int64_t begin, int64_t end);

}  // namespace fullchain
