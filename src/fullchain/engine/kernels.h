// The engine's CPU decode kernels, shared between their sources (see kernels.py).
#pragma once

#include <torch/types.h>

#include <vector>

namespace fullchain {

// y [..., out] = x [..., in] W^T for a few rows of x; W row-major [out, in], fp32 or bf16.
at::Tensor gemv(const at::Tensor& weight, const at::Tensor& x);

// [x W_k^T for each k] (fp32 [rows, out_k]) for weights of one dtype sharing the input x, in
// one parallel region.
std::vector<at::Tensor> gemv_many(at::TensorList weights, const at::Tensor& x);

// q [B, H, D], one token per sequence, over keys 0 .. seq_lens[b]-1 of sequence b, found
// through block_tables [B, nb] in the pool k_cache / v_cache [slots, KV, D]; [B, H, D].
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                                  const at::Tensor& v_cache, const at::Tensor& block_tables,
                                  const at::Tensor& seq_lens, int64_t block_size, double scale);

}  // namespace fullchain
