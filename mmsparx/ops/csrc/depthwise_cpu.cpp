// Depthwise convolution fused with its residual and activation, for CPU
// inference: act(x + dwconv(x)) (ConvFFN: GELU; DPE: no activation) and
// act(dwconv(x)) (SS2D: SiLU) in one read and one write of the map; and
// the convolution's gradients for training, plane by plane the same way
// (PyTorch's CPU depthwise backward was 21 % of a SparX-Mamba-T step).
//
// oneDNN's NCHW depthwise path reorders to a blocked layout and back, and
// the residual add and activation are two more passes: at SparX's stage-1
// sizes (8 x 384 x 56 x 56) that is ~65 ms of memory traffic on 2 threads
// where one pass over a cache-resident plane costs ~12 ms.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

enum Act : int64_t { kNone = 0, kGelu = 1, kSilu = 2 };

// Calls f(tap, dy, dx, i0, i1, j0, j1) for each tap of a k x k kernel with
// padding k / 2: output rows [i0, i1) and columns [j0, j1) are those whose
// input (i + dy, j + dx) lies inside the H x W map. Tap by tap over a whole
// (cache-resident) plane gives long inner loops.
template <typename F>
inline void for_each_tap(int64_t k, int64_t H, int64_t W, F f) {
  const int64_t pad = k / 2;
  for (int64_t ki = 0; ki < k; ++ki) {
    const int64_t dy = ki - pad;
    const int64_t i0 = std::max<int64_t>(0, -dy);
    const int64_t i1 = std::min<int64_t>(H, H - dy);
    for (int64_t kj = 0; kj < k; ++kj) {
      const int64_t dx = kj - pad;
      f(ki * k + kj, dy, dx, i0, i1, std::max<int64_t>(0, -dx),
        std::min<int64_t>(W, W - dx));
    }
  }
}

}  // namespace

at::Tensor depthwise_conv_act(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& bias, bool residual,
                              int64_t act) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat &&
                  x.is_contiguous() && x.device().is_cpu(),
              "depthwise_conv_act: x must be a contiguous float32 CPU "
              "(B, C, H, W) tensor");
  const int64_t batch = x.size(0), C = x.size(1), H = x.size(2),
                W = x.size(3);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C &&
                  weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                  weight.size(2) % 2 == 1,
              "depthwise_conv_act: weight must be (C, 1, k, k), k odd");
  TORCH_CHECK(act >= kNone && act <= kSilu, "depthwise_conv_act: act");
  const int64_t k = weight.size(2);
  auto w = weight.contiguous().to(at::kFloat);
  auto b = bias.defined() && bias.numel() ? bias.contiguous().to(at::kFloat)
                                          : at::Tensor();
  auto y = at::empty_like(x);
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>();
  const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
  float* py = y.data_ptr<float>();
  const int64_t plane_size = H * W;
  at::parallel_for(0, batch * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t c = plane % C;
      const float* in = px + plane * plane_size;
      const float* wc = pw + c * k * k;
      float* out = py + plane * plane_size;
      const float start = pb ? pb[c] : 0.f;
      for (int64_t p = 0; p < plane_size; ++p) out[p] = start;
      for_each_tap(k, H, W, [&](int64_t tap, int64_t dy, int64_t dx,
                                int64_t i0, int64_t i1, int64_t j0,
                                int64_t j1) {
        const float wt = wc[tap];
        for (int64_t i = i0; i < i1; ++i) {
          float* o = out + i * W;
          const float* line = in + (i + dy) * W + dx;
          for (int64_t j = j0; j < j1; ++j) o[j] += wt * line[j];
        }
      });
      if (residual)
        for (int64_t p = 0; p < plane_size; ++p) out[p] += in[p];
      if (act == kGelu) {
        for (int64_t p = 0; p < plane_size; ++p)
          out[p] = 0.5f * out[p] * (1.f + std::erf(out[p] * 0.70710678f));
      } else if (act == kSilu) {
        for (int64_t p = 0; p < plane_size; ++p)
          out[p] = out[p] / (1.f + std::exp(-out[p]));
      }
    }
  });
  return y;
}

// Gradients of y = dwconv(x) + bias (stride 1, padding k/2): the input's
// (each output tap scattered back through the same weight), the weight's
// (per channel and tap, the dot product of the output gradient with the
// shifted input, summed over the batch) and the bias's. Planes of one
// channel go to one thread for the weight, so no two threads add into
// the same sum.
std::vector<at::Tensor> depthwise_conv_backward(const at::Tensor& grad,
                                                const at::Tensor& x,
                                                const at::Tensor& weight,
                                                bool need_input,
                                                bool need_weight) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat &&
                  x.is_contiguous() && grad.sizes() == x.sizes() &&
                  grad.scalar_type() == at::kFloat && grad.is_contiguous(),
              "depthwise_conv_backward: x and grad must be contiguous "
              "float32 (B, C, H, W) tensors of one shape");
  const int64_t batch = x.size(0), C = x.size(1), H = x.size(2),
                W = x.size(3), k = weight.size(2);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C &&
                  weight.size(1) == 1 && weight.size(3) == k && k % 2 == 1,
              "depthwise_conv_backward: weight must be (C, 1, k, k), k odd");
  auto w = weight.contiguous().to(at::kFloat);
  const float *pw = w.data_ptr<float>(), *px = x.data_ptr<float>(),
              *pg = grad.data_ptr<float>();
  const int64_t plane_size = H * W;
  at::Tensor gx, gw, gb;
  if (need_input) {
    gx = at::zeros_like(x);
    float* pgx = gx.data_ptr<float>();
    at::parallel_for(0, batch * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const float* wc = pw + (plane % C) * k * k;
        const float* g = pg + plane * plane_size;
        float* gin = pgx + plane * plane_size;
        for_each_tap(k, H, W, [&](int64_t tap, int64_t dy, int64_t dx,
                                  int64_t i0, int64_t i1, int64_t j0,
                                  int64_t j1) {
          const float wt = wc[tap];
          for (int64_t i = i0; i < i1; ++i) {
            const float* gl = g + i * W;
            float* line = gin + (i + dy) * W + dx;
            for (int64_t j = j0; j < j1; ++j) line[j] += wt * gl[j];
          }
        });
      }
    });
  }
  if (need_weight) {
    gw = at::zeros({C, 1, k, k}, x.options());
    gb = at::zeros({C}, x.options());
    float *pgw = gw.data_ptr<float>(), *pgb = gb.data_ptr<float>();
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        float* wsum = pgw + c * k * k;
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t plane = b * C + c;
          const float* g = pg + plane * plane_size;
          const float* in = px + plane * plane_size;
          float bias_sum = 0.f;
          for (int64_t p = 0; p < plane_size; ++p) bias_sum += g[p];
          pgb[c] += bias_sum;
          for_each_tap(k, H, W, [&](int64_t tap, int64_t dy, int64_t dx,
                                    int64_t i0, int64_t i1, int64_t j0,
                                    int64_t j1) {
            float acc = 0.f;
            for (int64_t i = i0; i < i1; ++i) {
              const float* gl = g + i * W;
              const float* line = in + (i + dy) * W + dx;
              for (int64_t j = j0; j < j1; ++j) acc += gl[j] * line[j];
            }
            wsum[tap] += acc;
          });
        }
      }
    });
  }
  return {gx, gw, gb};
}
