// Few-row linear products for decode on the CPU: y = x W^T with W row-major [out, in] (fp32 or
// bf16) and x [rows, in]. Bandwidth-bound: every weight is read once, four rows at a time
// with FMA accumulators, the output rows split over PyTorch's intra-op threads. PyTorch's own
// matrix-vector kernels read these small, many matrices at about half the memory bandwidth.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "kernels.h"

#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FULLCHAIN_AVX2 1
#endif

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float weight(const float* w, int64_t i) { return w[i]; }
inline float weight(const uint16_t* w, int64_t i) { return bf16_to_float(w[i]); }

#ifdef FULLCHAIN_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 weights starting at w (8 for fp32 twice, or 16 bf16) times x, added to acc. bf16 words
// are read 32 bits at a time: the high half is the odd weight as an fp32 already, the low half
// shifted up is the even one; `xe`/`xo` hold x's even and odd values to match (no lane shuffle).
inline __m256 fma16(const float* w, const float* x, const float*, const float*, __m256 acc) {
  acc = _mm256_fmadd_ps(_mm256_loadu_ps(w), _mm256_loadu_ps(x), acc);
  return _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), _mm256_loadu_ps(x + 8), acc);
}
inline __m256 fma16(const uint16_t* w, const float*, const float* xe, const float* xo,
                    __m256 acc) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
  const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(-65536)));
  acc = _mm256_fmadd_ps(even, _mm256_loadu_ps(xe), acc);
  return _mm256_fmadd_ps(odd, _mm256_loadu_ps(xo), acc);
}
#endif

// output columns [begin, end) of y = x W^T for the `rows` rows of x; each block of four weight
// rows is read from memory once and stays in cache while every row of x passes over it
template <typename W>
void gemv_rows(const W* w, const float* x, const float* split, float* y, int64_t rows,
               int64_t in, int64_t out, int64_t begin, int64_t end) {
  int64_t o = begin;
#ifdef FULLCHAIN_AVX2
  const int64_t vec_end = in - in % 32;
  for (; o + 4 <= end; o += 4) {
    const W* r0 = w + o * in;
    const W* r1 = r0 + in;
    const W* r2 = r1 + in;
    const W* r3 = r2 + in;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * in;
      const float* xe = split + m * in;  // this row's even values, then its odd ones
      const float* xo = xe + in / 2;
      // two accumulators per weight row, so that no row waits on one chain of FMAs
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
      __m256 b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
      for (int64_t i = 0; i < vec_end; i += 32) {
        const float *xi = xm + i, *xei = xe + i / 2, *xoi = xo + i / 2;
        a0 = fma16(r0 + i, xi, xei, xoi, a0);
        a1 = fma16(r1 + i, xi, xei, xoi, a1);
        a2 = fma16(r2 + i, xi, xei, xoi, a2);
        a3 = fma16(r3 + i, xi, xei, xoi, a3);
        b0 = fma16(r0 + i + 16, xi + 16, xei + 8, xoi + 8, b0);
        b1 = fma16(r1 + i + 16, xi + 16, xei + 8, xoi + 8, b1);
        b2 = fma16(r2 + i + 16, xi + 16, xei + 8, xoi + 8, b2);
        b3 = fma16(r3 + i + 16, xi + 16, xei + 8, xoi + 8, b3);
      }
      float s0 = hsum(_mm256_add_ps(a0, b0)), s1 = hsum(_mm256_add_ps(a1, b1));
      float s2 = hsum(_mm256_add_ps(a2, b2)), s3 = hsum(_mm256_add_ps(a3, b3));
      for (int64_t i = vec_end; i < in; ++i) {
        s0 += weight(r0, i) * xm[i];
        s1 += weight(r1, i) * xm[i];
        s2 += weight(r2, i) * xm[i];
        s3 += weight(r3, i) * xm[i];
      }
      float* ym = y + m * out + o;
      ym[0] = s0;
      ym[1] = s1;
      ym[2] = s2;
      ym[3] = s3;
    }
  }
#endif
  for (; o < end; ++o) {
    const W* r = w + o * in;
    for (int64_t m = 0; m < rows; ++m) {
      float s = 0.f;
      for (int64_t i = 0; i < in; ++i) s += weight(r, i) * x[m * in + i];
      y[m * out + o] = s;
    }
  }
}

}  // namespace

namespace fullchain {

// y [..., out] = x [..., in] W^T, for the few rows of decode steps
at::Tensor gemv(const at::Tensor& weight, const at::Tensor& x) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "gemv: weight must be a contiguous "
              "[out, in] matrix");
  TORCH_CHECK(x.size(-1) == weight.size(1), "gemv: x has ", x.size(-1), " features, the "
              "weight ", weight.size(1), " columns");
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16,
              "gemv: weights must be float32 or bfloat16");
  const int64_t out = weight.size(0), in = weight.size(1), rows = x.numel() / in;
  const at::Tensor xf = x.reshape({rows, in}).to(at::kFloat).contiguous();
  at::Tensor y = at::empty({rows, out}, xf.options());
  const float* xp = xf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  std::vector<float> split(bf16 ? rows * in : 0);  // per row: its even values, then its odd ones
  for (int64_t m = 0; bf16 && m < rows; ++m) {
    for (int64_t j = 0; j < in / 2; ++j) {
      split[m * in + j] = xp[m * in + 2 * j];
      split[m * in + in / 2 + j] = xp[m * in + 2 * j + 1];
    }
  }
  const float* sp = bf16 ? split.data() : xp;  // fp32 reads x directly
  const int64_t grain = std::max<int64_t>(4, (int64_t{1} << 15) / std::max<int64_t>(in, 1));
  if (!bf16) {
    const float* wp = weight.data_ptr<float>();
    at::parallel_for(0, out, grain, [&](int64_t b, int64_t e) {
      gemv_rows(wp, xp, sp, yp, rows, in, out, b, e);
    });
  } else {
    const auto* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
    at::parallel_for(0, out, grain, [&](int64_t b, int64_t e) {
      gemv_rows(wp, xp, sp, yp, rows, in, out, b, e);
    });
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  return y.view(shape).to(x.scalar_type());
}

}  // namespace fullchain

TORCH_LIBRARY(fullchain, m) { m.def("gemv(Tensor weight, Tensor x) -> Tensor"); }
TORCH_LIBRARY_IMPL(fullchain, CPU, m) { m.impl("gemv", &fullchain::gemv); }
