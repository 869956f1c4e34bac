// Linear products of decode steps on the CPU: y = x W^T with W row-major [out, in] (fp32, bf16,
// or int8 with a scale per output row) and x [rows, in], the output rows shared out in chunks
// over PyTorch's intra-op thread count. Up to a few rows (tile_limit) the products are
// bandwidth-bound: every weight is read once, row by row with FMA accumulators (PyTorch's own
// matrix-vector kernels read these small, many matrices at about half the memory bandwidth).
// Beyond, they are compute-bound: register tiles of 6 weight rows x 16 rows of x, as a GEMM's
// micro-kernel (PyTorch's GEMM reaches 46-61% of its own 2048^2 rate with 32 rows,
// bench/bench_kernels.py).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <type_traits>
#include <atomic>
#include <vector>

#include "kernels.h"

namespace {

using fullchain::hsum;
using fullchain::to_float;

#ifdef FULLCHAIN_AVX2

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
// int8: 16 weights, each 8 loaded straight into their widening to 32-bit integers (one 16-byte
// load and a shuffle for the upper half: 0.72x, in a scratch loop on this CPU), then to fp32
inline __m256 fma16(const int8_t* w, const float* x, const float*, const float*, __m256 acc) {
  acc = _mm256_fmadd_ps(fullchain::load8(w), _mm256_loadu_ps(x), acc);
  return _mm256_fmadd_ps(fullchain::load8(w + 8), _mm256_loadu_ps(x + 8), acc);
}
#endif

// int8 rows are read this many bytes ahead: with four times the weights per byte, the loop
// leaves the hardware prefetcher too little time (batch-1 int8 decode 1.11x, 8 alternating
// rounds in one process; 1 KB ahead 0.91x and 4 KB 0.96x of this; bf16 1.03x, not kept)
constexpr int64_t kInt8Prefetch = 2048;

// output columns [begin, end) of y = x W^T for the `rows` rows of x. Each weight row is read
// once, front to back (one stream through memory, which the hardware prefetcher follows; four
// rows read side by side streamed bf16 at 2/3 of this rate), and stays in L1 while every row of
// x passes over it; four accumulators keep four chains of FMAs in flight. int8 rows' sums are
// multiplied by their `scale` (null for the other types).
template <typename W>
void gemv_rows(const W* w, const float* x, const float* split, float* y, int64_t rows,
               int64_t in, int64_t out, int64_t begin, int64_t end,
               const float* scale = nullptr) {
  for (int64_t o = begin; o < end; ++o) {
    const W* r = w + o * in;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * in;
      int64_t i = 0;
      float s = 0.f;
#ifdef FULLCHAIN_AVX2
      const float* xe = split + m * in;  // this row's even values, then its odd ones
      const float* xo = xe + in / 2;
      const int64_t vec_end = in - in % 32;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (; i + 64 <= vec_end; i += 64) {
        if constexpr (std::is_same_v<W, int8_t>) {  // see kInt8Prefetch
          fullchain::prefetch_address(reinterpret_cast<uintptr_t>(r + i) + kInt8Prefetch);
        }
        a0 = fma16(r + i, xm + i, xe + i / 2, xo + i / 2, a0);
        a1 = fma16(r + i + 16, xm + i + 16, xe + i / 2 + 8, xo + i / 2 + 8, a1);
        a2 = fma16(r + i + 32, xm + i + 32, xe + i / 2 + 16, xo + i / 2 + 16, a2);
        a3 = fma16(r + i + 48, xm + i + 48, xe + i / 2 + 24, xo + i / 2 + 24, a3);
      }
      for (; i < vec_end; i += 32) {
        a0 = fma16(r + i, xm + i, xe + i / 2, xo + i / 2, a0);
        a1 = fma16(r + i + 16, xm + i + 16, xe + i / 2 + 8, xo + i / 2 + 8, a1);
      }
      s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
      for (; i < in; ++i) s += to_float(r[i]) * xm[i];
      y[m * out + o] = scale ? s * scale[o] : s;
    }
  }
}

#ifdef FULLCHAIN_AVX2
constexpr bool kTiles = true;

// y[b * out + a] = w_a . x_b for the 6 fp32 weight rows w_a = w + a * in and the `valid` real
// rows of one panel of 16 rows of x: each weight is broadcast once for the panel's rows, into
// 12 accumulators that stay in registers for the whole row (named: GCC keeps an array of them
// in memory as well, storing all 12 at every step). `ahead` is this panel's share of the next
// tile's weights, prefetched `step` bytes further at each column: fetched on demand, the six
// rows' streams from memory left the FMAs waiting (a step's products at 16 rows 1.2-1.3x, 32
// rows 1.1x, fp32, scratch, the builds alternating in one process)
inline void tile_6x16(const float* w, const float* panel, float* y, int64_t in, int64_t out,
                      int64_t valid, uintptr_t ahead, int64_t step) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *w0 = w, *w1 = w + in, *w2 = w + 2 * in, *w3 = w + 3 * in, *w4 = w + 4 * in,
              *w5 = w + 5 * in;
  for (int64_t k = 0; k < in; ++k) {
    fullchain::prefetch_address(ahead + k * step);
    const __m256 x0 = _mm256_loadu_ps(panel + 16 * k), x1 = _mm256_loadu_ps(panel + 16 * k + 8);
    auto row = [&](const float* wa, __m256& lo, __m256& hi) {  // one weight, 16 rows of x
      const __m256 b = _mm256_broadcast_ss(wa + k);
      lo = _mm256_fmadd_ps(b, x0, lo);
      hi = _mm256_fmadd_ps(b, x1, hi);
    };
    row(w0, c00, c01);
    row(w1, c10, c11);
    row(w2, c20, c21);
    row(w3, c30, c31);
    row(w4, c40, c41);
    row(w5, c50, c51);
  }
  alignas(32) float lanes[6][16];
  const __m256 sums[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                             {c30, c31}, {c40, c41}, {c50, c51}};
  for (int a = 0; a < 6; ++a) {
    _mm256_store_ps(lanes[a], sums[a][0]);
    _mm256_store_ps(lanes[a] + 8, sums[a][1]);
  }
  for (int64_t b = 0; b < valid; ++b) {
    for (int a = 0; a < 6; ++a) y[b * out + a] = lanes[a][b];
  }
}

// n weight rows of `in` values from w as fp32: fp32 in place, bf16 converted into buf, int8
// converted and multiplied by each row's scale (bf16 without the multiplication by one: 1.12x
// on a step's bf16 products at 16 rows)
inline const float* as_fp32(const float* w, int64_t, int64_t, const float*, std::vector<float>&) {
  return w;
}
template <typename W>
const float* as_fp32(const W* w, int64_t n, int64_t in, const float* scale,
                     std::vector<float>& buf) {
  buf.resize(n * in);
  for (int64_t r = 0; r < n; ++r) {
    const __m256 s = _mm256_set1_ps(scale ? scale[r] : 1.f);
    const W* src = w + r * in;
    float* dst = buf.data() + r * in;
    int64_t i = 0;
    for (; scale && i + 8 <= in; i += 8) {
      _mm256_storeu_ps(dst + i, _mm256_mul_ps(fullchain::load8(src + i), s));
    }
    for (; !scale && i + 8 <= in; i += 8) _mm256_storeu_ps(dst + i, fullchain::load8(src + i));
    for (; i < in; ++i) dst[i] = to_float(src[i]) * (scale ? scale[r] : 1.f);
  }
  return buf.data();
}

// output columns [begin, end) of y = x W^T for more than tile_limit rows of x (packed in
// panels): six weight rows at a time (in L1, bf16 and int8 converted once) against every
// panel; the rows left over one at a time
template <typename W>
void tile_rows(const W* w, const fullchain::ProductInput& input, float* y, int64_t out,
               int64_t begin, int64_t end, const float* scale) {
  const int64_t in = input.in, rows = input.rows, panels = (rows + 15) / 16;
  const int64_t share = 6 * in * static_cast<int64_t>(sizeof(W)) / panels;  // of a tile's bytes
  std::vector<float> buf;
  int64_t o = begin;
  for (; o + 6 <= end; o += 6) {
    const float* w6 = as_fp32(w + o * in, 6, in, scale ? scale + o : nullptr, buf);
    const uintptr_t next = reinterpret_cast<uintptr_t>(w + o * in) + 6 * in * sizeof(W);
    for (int64_t p = 0; p < panels; ++p) {
      tile_6x16(w6, input.panels + p * in * 16, y + p * 16 * out + o, in, out,
                std::min<int64_t>(16, rows - p * 16), next + p * share, (share + in - 1) / in);
    }
  }
  if (o < end) {
    gemv_rows(as_fp32(w + o * in, end - o, in, scale ? scale + o : nullptr, buf), input.x,
              input.x, y + o, rows, in, out, 0, end - o);
  }
}
#else
constexpr bool kTiles = false;

template <typename W>
void tile_rows(const W*, const fullchain::ProductInput&, float*, int64_t, int64_t, int64_t,
               const float*) {
  TORCH_CHECK(false, "gemv: the register tiles need AVX2 and FMA");
}
#endif

// the rows [lo, hi) of one product's output, for weights stored as W
template <typename W>
void product_rows(const fullchain::Product& p, const fullchain::ProductInput& input, int64_t lo,
                  int64_t hi) {
  const W* w = static_cast<const W*>(p.weight);
  if (input.panels != nullptr) {
    tile_rows(w, input, p.y, p.out, lo, hi, p.scale);
  } else {
    gemv_rows(w, input.x, input.split, p.y, input.rows, input.in, p.out, lo, hi, p.scale);
  }
}

}  // namespace

namespace fullchain {

WeightType weight_type(const at::Tensor& w, const char* what) {
  switch (w.scalar_type()) {
    case at::kFloat: return WeightType::kFloat;
    case at::kBFloat16: return WeightType::kBFloat16;
    case at::kChar: return WeightType::kInt8;
    default: TORCH_CHECK(false, what, " must be float32, bfloat16 or int8, not ", w.scalar_type());
  }
}

void split_even_odd(const float* x, int64_t rows, int64_t in, float* split) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < in / 2; ++j) {
      split[m * in + j] = x[m * in + 2 * j];
      split[m * in + in / 2 + j] = x[m * in + 2 * j + 1];
    }
  }
}

int64_t gemv_chunk(int64_t total_rows, int64_t in, int64_t element_size, int64_t threads) {
  return std::max<int64_t>(8, std::min((int64_t{256} << 10) / (in * element_size),
                                       (total_rows + 4 * threads - 1) / (4 * threads)));
}

std::vector<float> pack_panels(const float* x, int64_t rows, int64_t in) {
  std::vector<float> packed((rows + 15) / 16 * in * 16, 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = packed.data() + (r / 16) * in * 16 + r % 16;
    for (int64_t k = 0; k < in; ++k) dst[k * 16] = x[r * in + k];
  }
  return packed;
}

void share_products(std::atomic<int64_t>& next, int64_t chunk, const std::vector<Product>& ps,
                    WeightType type, const ProductInput& input) {
  int64_t total = 0;
  for (const Product& p : ps) total += p.out;
  for (int64_t b = next.fetch_add(chunk); b < total; b = next.fetch_add(chunk)) {
    const int64_t e = std::min(total, b + chunk);
    int64_t start = 0;  // this product's first row among all of them
    for (const Product& p : ps) {
      const int64_t lo = std::max(b, start) - start, hi = std::min(e, start + p.out) - start;
      if (lo < hi && type == WeightType::kBFloat16) {
        product_rows<uint16_t>(p, input, lo, hi);
      } else if (lo < hi && type == WeightType::kInt8) {
        product_rows<int8_t>(p, input, lo, hi);
      } else if (lo < hi) {
        product_rows<float>(p, input, lo, hi);
      }
      start += p.out;
    }
  }
}

// y_k [rows, out_k] = x [rows, in] W_k^T (fp32) for weights sharing their input, in one
// parallel region over all their output rows: one fork and join instead of one per product, and
// longer stretches of memory per thread (q/k/v and gate/up: 20 -> 25 GB/s on 2 threads here)
std::vector<at::Tensor> gemv_many(at::TensorList weights, const at::Tensor& x,
                                  at::TensorList scales) {
  TORCH_CHECK(!weights.empty(), "gemv: no weights");
  const int64_t in = weights[0].size(1), rows = x.numel() / in;
  const WeightType type = weight_type(weights[0], "gemv: the weights");
  const bool int8 = type == WeightType::kInt8;
  TORCH_CHECK(scales.size() == (int8 ? weights.size() : 0), "gemv: int8 weights take one "
              "scale each, the other types none; got ", weights.size(), " weights of ",
              weights[0].scalar_type(), " and ", scales.size(), " scales");
  for (size_t k = 0; k < weights.size(); ++k) {
    const at::Tensor& w = weights[k];
    TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "gemv: weight must be a contiguous "
                "[out, in] matrix");
    TORCH_CHECK(w.size(1) == in && x.size(-1) == in, "gemv: x has ", x.size(-1),
                " features, the weight ", w.size(1), " columns");
    TORCH_CHECK(w.scalar_type() == weights[0].scalar_type(),
                "gemv: the weights must all be of one dtype");
    TORCH_CHECK(!int8 || (scales[k].scalar_type() == at::kFloat && scales[k].is_contiguous() &&
                          scales[k].numel() == w.size(0)),
                "gemv: an int8 weight's scale must be a contiguous float32 [", w.size(0), "]");
  }
  const at::Tensor xf = x.reshape({rows, in}).to(at::kFloat).contiguous();
  const float* xp = xf.data_ptr<float>();
  const bool bf16 = type == WeightType::kBFloat16, tiled = kTiles && rows > tile_limit(type);
  std::vector<float> split(bf16 && !tiled ? rows * in : 0), panels;
  if (!split.empty()) split_even_odd(xp, rows, in, split.data());
  if (tiled) panels = pack_panels(xp, rows, in);
  const ProductInput input{xp, split.empty() ? xp : split.data(), tiled ? panels.data() : nullptr,
                           rows, in};
  std::vector<at::Tensor> ys;
  std::vector<Product> products;
  int64_t total = 0;
  for (size_t k = 0; k < weights.size(); ++k) {
    const at::Tensor& w = weights[k];
    ys.push_back(at::empty({rows, w.size(0)}, xf.options()));
    products.push_back({w.data_ptr(), w.size(0), ys.back().data_ptr<float>(),
                        int8 ? scales[k].data_ptr<float>() : nullptr});
    total += w.size(0);
  }
  // the threads take chunks of weight rows in turn, from one counter: on a shared machine one
  // core is often slower for a while, and with halves fixed in advance the other would wait
  // for it at the end of every product (4 per layer and token). At most ~256 KB of weights a
  // chunk, and at least four chunks a thread, so that small products are shared too.
  const int64_t max_threads = at::get_num_threads();
  int64_t chunk = gemv_chunk(total, in, weights[0].element_size(), max_threads);
  if (tiled) chunk = (chunk + 5) / 6 * 6;  // whole tiles where the products' sizes allow
  const int threads = static_cast<int>(std::min(max_threads, (total + chunk - 1) / chunk));
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
  share_products(next, chunk, products, type, input);
  return ys;
}

// y [..., out] = x [..., in] W^T, for the few rows of decode steps
at::Tensor gemv(const at::Tensor& weight, const at::Tensor& x,
                const std::optional<at::Tensor>& scale) {
  TORCH_CHECK(weight.dim() == 2, "gemv: weight must be a contiguous [out, in] matrix");
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  std::vector<at::Tensor> scales;
  if (scale.has_value()) scales.push_back(*scale);
  return gemv_many({weight}, x, scales)[0].view(shape).to(x.scalar_type());
}

}  // namespace fullchain

TORCH_LIBRARY(fullchain, m) {
  m.def("gemv(Tensor weight, Tensor x, Tensor? scale=None) -> Tensor");
}
TORCH_LIBRARY_IMPL(fullchain, CPU, m) { m.impl("gemv", &fullchain::gemv); }
