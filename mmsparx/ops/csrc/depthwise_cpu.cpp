// Depthwise convolution fused with its residual and activation, for CPU:
// act(x + dwconv(x)) (ConvFFN: GELU; DPE: no activation) and
// act(dwconv(x)) (SS2D: SiLU) in one read and one write of the map; and
// for training its gradients, plane by plane the same way (PyTorch's CPU
// depthwise backward was 21 % of a SparX-Mamba-T step, and the separate
// GELU / SiLU / residual passes around it another ~5 %).
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

// A plane copied into zero borders (pad = k / 2 each side, rows Wp = W +
// k - 1 wide, k spare zeros at the end for the last taps' overrun): every
// tap then runs as one flat loop over H * Wp values instead of rows of W
// with per-tap bounds (at SparX's 14x14 and 7x7 stages rows of 7-14
// pixels were mostly loop overhead). Results come out in rows of Wp whose
// last k - 1 values are junk the callers skip.
struct Padded {
  int64_t H, W, pad, Wp;
  std::vector<float> buf;
  Padded(int64_t k, int64_t H, int64_t W)
      : H(H), W(W), pad(k / 2), Wp(W + k - 1),
        buf((H + k - 1) * (W + k - 1) + k, 0.f) {}
  float* row(int64_t i) { return buf.data() + (i + pad) * Wp + pad; }
  // src + add into the interior; the borders stay zero.
  void load(const float* src, float add = 0.f) {
    for (int64_t i = 0; i < H; ++i) {
      const float* line = src + i * W;
      float* dst = row(i);
      if (add == 0.f) {
        std::copy(line, line + W, dst);
      } else {
        for (int64_t j = 0; j < W; ++j) dst[j] = line[j] + add;
      }
    }
  }
};

// out[q] = sum over taps of wc[ki k + kj] * src[q + ki Wp + kj] for q in
// [0, H Wp): the k x k correlation of a Padded buffer, a kernel row per
// pass (K > 0: k known at compile time, so those taps stay in registers).
template <int64_t K>
inline void correlate_k(const float* src, const float* wc, int64_t k,
                        int64_t H, int64_t Wp, float* out) {
  const int64_t kk = K ? K : k, n = H * Wp;
  for (int64_t ki = 0; ki < kk; ++ki) {
    const float* s = src + ki * Wp;
    const float* wr = wc + ki * kk;
    for (int64_t q = 0; q < n; ++q) {
      float acc = ki ? out[q] : 0.f;
      for (int64_t kj = 0; kj < kk; ++kj) acc += wr[kj] * s[q + kj];
      out[q] = acc;
    }
  }
}

inline void correlate(const float* src, const float* wc, int64_t k,
                      int64_t H, int64_t Wp, float* out) {
  switch (k) {
    case 3: return correlate_k<3>(src, wc, k, H, Wp, out);
    case 5: return correlate_k<5>(src, wc, k, H, Wp, out);
    case 7: return correlate_k<7>(src, wc, k, H, Wp, out);
    default: return correlate_k<0>(src, wc, k, H, Wp, out);
  }
}

// wsum[ki k + kj] += sum over q in [0, n) of g[q] * src[q + ki Wp + kj]:
// the weight's gradient from gs in rows of Wp (zeros past column W) and
// the Padded x. A kernel row per pass, its k sums side by side (K > 0), so
// each g value is loaded once and the sums do not wait on one another.
template <int64_t K>
inline void tap_sums_k(const float* g, const float* src, int64_t k,
                       int64_t n, int64_t Wp, float* wsum) {
  const int64_t kk = K ? K : k;
  for (int64_t ki = 0; ki < kk; ++ki) {
    const float* s = src + ki * Wp;
    if constexpr (K > 0) {
      float acc[K] = {};
      for (int64_t q = 0; q < n; ++q)
        for (int64_t kj = 0; kj < K; ++kj) acc[kj] += g[q] * s[q + kj];
      for (int64_t kj = 0; kj < K; ++kj) wsum[ki * K + kj] += acc[kj];
    } else {
      for (int64_t kj = 0; kj < kk; ++kj) {
        float acc = 0.f;
        for (int64_t q = 0; q < n; ++q) acc += g[q] * s[q + kj];
        wsum[ki * kk + kj] += acc;
      }
    }
  }
}

inline void tap_sums(const float* g, const float* src, int64_t k, int64_t n,
                     int64_t Wp, float* wsum) {
  switch (k) {
    case 3: return tap_sums_k<3>(g, src, k, n, Wp, wsum);
    case 5: return tap_sums_k<5>(g, src, k, n, Wp, wsum);
    case 7: return tap_sums_k<7>(g, src, k, n, Wp, wsum);
    default: return tap_sums_k<0>(g, src, k, n, Wp, wsum);
  }
}

// With u = in + in_add: out = start + dwconv(u) (+ u when residual) over
// one H x W plane; xp gets the padded u, conv (H * Wp) the correlation.
inline void conv_plane(const float* in, float in_add, const float* wc,
                       float start, bool residual, int64_t k, Padded& xp,
                       float* conv, float* out) {
  const int64_t H = xp.H, W = xp.W, Wp = xp.Wp;
  xp.load(in, in_add);
  if (residual) start += in_add;
  correlate(xp.buf.data(), wc, k, H, Wp, conv);
  for (int64_t i = 0; i < H; ++i) {
    const float* c = conv + i * Wp;
    const float* line = in + i * W;
    float* o = out + i * W;
    if (residual) {
      for (int64_t j = 0; j < W; ++j) o[j] = start + c[j] + line[j];
    } else {
      for (int64_t j = 0; j < W; ++j) o[j] = start + c[j];
    }
  }
}

// out = act(s); out may be s.
inline void activate(int64_t act, const float* s, float* out, int64_t n) {
  if (act == kGelu) {
    for (int64_t p = 0; p < n; ++p)
      out[p] = 0.5f * s[p] * (1.f + std::erf(s[p] * 0.70710678f));
  } else if (act == kSilu) {
    for (int64_t p = 0; p < n; ++p) out[p] = s[p] / (1.f + std::exp(-s[p]));
  } else if (out != s) {
    std::copy(s, s + n, out);
  }
}

// gs = g * act'(s) for exact GELU (Phi(s) + s phi(s)) or SiLU
// (sig (1 + s (1 - sig))).
inline void activation_grad(int64_t act, const float* g, const float* s,
                            float* gs, int64_t n) {
  if (act == kGelu) {
    for (int64_t p = 0; p < n; ++p) {
      const float v = s[p];
      gs[p] = g[p] * (0.5f * (1.f + std::erf(v * 0.70710678f)) +
                      v * 0.39894228f * std::exp(-0.5f * v * v));
    }
  } else {
    for (int64_t p = 0; p < n; ++p) {
      const float sig = 1.f / (1.f + std::exp(-s[p]));
      gs[p] = g[p] * sig * (1.f + s[p] * (1.f - sig));
    }
  }
}

void check_map(const at::Tensor& x, const at::Tensor& weight,
               const char* name) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat &&
                  x.is_contiguous() && x.device().is_cpu(),
              name, ": x must be a contiguous float32 CPU (B, C, H, W) "
              "tensor");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(1) &&
                  weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                  weight.size(2) % 2 == 1,
              name, ": weight must be (C, 1, k, k), k odd");
}

// With u = x + in_bias (per channel; none: x): y = act(conv(u) + b (+ u)),
// and the pre-activation into pre when given.
void conv_act_forward(const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& in_bias,
                      bool residual, int64_t act, at::Tensor& y,
                      float* ppre) {
  const int64_t batch = x.size(0), C = x.size(1), H = x.size(2),
                W = x.size(3), k = weight.size(2);
  auto w = weight.contiguous().to(at::kFloat);
  auto b = bias.defined() && bias.numel() ? bias.contiguous().to(at::kFloat)
                                          : at::Tensor();
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>();
  const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
  auto ib = in_bias.defined() && in_bias.numel()
                ? in_bias.contiguous().to(at::kFloat)
                : at::Tensor();
  TORCH_CHECK(!ib.defined() || ib.numel() == C,
              "depthwise_conv_act: in_bias must have one value per channel");
  const float* pib = ib.defined() ? ib.data_ptr<float>() : nullptr;
  float* py = y.data_ptr<float>();
  const int64_t plane_size = H * W;
  at::parallel_for(0, batch * C, 1, [&](int64_t begin, int64_t end) {
    Padded xp(k, H, W);
    std::vector<float> conv(H * xp.Wp);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t c = plane % C;
      float* out = py + plane * plane_size;
      float* s = ppre ? ppre + plane * plane_size : out;
      conv_plane(px + plane * plane_size, pib ? pib[c] : 0.f, pw + c * k * k,
                 pb ? pb[c] : 0.f, residual, k, xp, conv.data(), s);
      activate(act, s, out, plane_size);
    }
  });
}

}  // namespace

at::Tensor depthwise_conv_act(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& bias, bool residual,
                              int64_t act, const at::Tensor& in_bias) {
  check_map(x, weight, "depthwise_conv_act");
  TORCH_CHECK(act >= kNone && act <= kSilu, "depthwise_conv_act: act");
  auto y = at::empty_like(x);
  conv_act_forward(x, weight, bias, in_bias, residual, act, y, nullptr);
  return y;
}

// depthwise_conv_act for training: also returns the pre-activation
// s = conv(x) + b (+ x) when save_pre and act is set (else an empty
// tensor), for depthwise_conv_act_backward.
std::vector<at::Tensor> depthwise_conv_act_train(const at::Tensor& x,
                                                 const at::Tensor& weight,
                                                 const at::Tensor& bias,
                                                 bool residual, int64_t act,
                                                 bool save_pre) {
  check_map(x, weight, "depthwise_conv_act_train");
  TORCH_CHECK(act >= kNone && act <= kSilu, "depthwise_conv_act_train: act");
  auto y = at::empty_like(x);
  at::Tensor pre = save_pre && act != kNone ? at::empty_like(x)
                                            : x.new_empty({0});
  conv_act_forward(x, weight, bias, at::Tensor(), residual, act, y,
                   pre.numel() ? pre.data_ptr<float>() : nullptr);
  return {y, pre};
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

// Gradients of y = act(dwconv(x) + bias (+ x)) in one pass over each plane:
// gs = g * act'(s) (s from pre, or recomputed from x when pre is empty)
// into a zero-bordered buffer, then the input's gradient (gs correlated
// with the flipped kernel, plus gs when residual) and the weight's and
// bias's sums (gs against the zero-bordered x). Threads take whole
// channels (all their planes), so the weight and bias sums need no
// reduction across threads, and gs never goes to memory.
std::vector<at::Tensor> depthwise_conv_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& pre, bool residual, int64_t act,
    bool need_input, bool need_weight) {
  check_map(x, weight, "depthwise_conv_act_backward");
  TORCH_CHECK(grad.sizes() == x.sizes() &&
                  grad.scalar_type() == at::kFloat && grad.is_contiguous(),
              "depthwise_conv_act_backward: grad must be contiguous float32 "
              "of x's shape");
  TORCH_CHECK(act >= kNone && act <= kSilu,
              "depthwise_conv_act_backward: act");
  const bool has_pre = pre.defined() && pre.numel();
  TORCH_CHECK(!has_pre || (pre.sizes() == x.sizes() &&
                           pre.scalar_type() == at::kFloat &&
                           pre.is_contiguous()),
              "depthwise_conv_act_backward: pre must be contiguous float32 "
              "of x's shape");
  const int64_t batch = x.size(0), C = x.size(1), H = x.size(2),
                W = x.size(3), k = weight.size(2);
  auto w = weight.contiguous().to(at::kFloat);
  auto b = bias.defined() && bias.numel() ? bias.contiguous().to(at::kFloat)
                                          : at::Tensor();
  const float *pw = w.data_ptr<float>(), *px = x.data_ptr<float>(),
              *pg = grad.data_ptr<float>();
  const float* pb = b.defined() ? b.data_ptr<float>() : nullptr;
  const float* ppre = has_pre ? pre.data_ptr<float>() : nullptr;
  const int64_t plane_size = H * W, taps = k * k;
  at::Tensor gx, gw, gb;
  float *pgx = nullptr, *pgw = nullptr, *pgb = nullptr;
  if (need_input) {
    gx = at::empty_like(x);  // each plane is written whole below
    pgx = gx.data_ptr<float>();
  }
  if (need_weight) {
    gw = at::zeros({C, 1, k, k}, x.options());
    gb = at::zeros({C}, x.options());
    pgw = gw.data_ptr<float>();
    pgb = gb.data_ptr<float>();
  }
  if (!need_input && !need_weight) return {gx, gw, gb};
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    Padded xp(k, H, W), gsp(k, H, W);
    const int64_t Wp = xp.Wp, n = H * Wp;
    std::vector<float> conv(n), flipped(taps);
    std::vector<float> s_buf(act != kNone && !ppre ? plane_size : 0);
    std::vector<float> gs_buf(act != kNone ? plane_size : 0);
    // gs in rows of Wp from (0, 0), zeros past column W: what the weight's
    // sums multiply with the shifted padded x.
    const float* gs_rows = gsp.buf.data() + gsp.pad * Wp + gsp.pad;
    for (int64_t c = begin; c < end; ++c) {
      const float* wc = pw + c * taps;
      for (int64_t t = 0; t < taps; ++t) flipped[t] = wc[taps - 1 - t];
      for (int64_t bi = 0; bi < batch; ++bi) {
        const int64_t offset = (bi * C + c) * plane_size;
        const float* in = px + offset;
        const float* gs = pg + offset;
        if (act != kNone) {
          const float* s = ppre ? ppre + offset : s_buf.data();
          if (!ppre)
            conv_plane(in, 0.f, wc, pb ? pb[c] : 0.f, residual, k, xp,
                       conv.data(), s_buf.data());
          activation_grad(act, gs, s, gs_buf.data(), plane_size);
          gs = gs_buf.data();
        }
        gsp.load(gs);
        if (need_input) {
          correlate(gsp.buf.data(), flipped.data(), k, H, Wp, conv.data());
          float* gin = pgx + offset;
          for (int64_t i = 0; i < H; ++i) {
            const float* cr = conv.data() + i * Wp;
            const float* gr = gs + i * W;
            float* o = gin + i * W;
            if (residual) {
              for (int64_t j = 0; j < W; ++j) o[j] = cr[j] + gr[j];
            } else {
              std::copy(cr, cr + W, o);
            }
          }
        }
        if (need_weight) {
          if (act == kNone || ppre) xp.load(in);  // else conv_plane did
          float bias_sum = 0.f;
          for (int64_t q = 0; q < n; ++q) bias_sum += gs_rows[q];
          pgb[c] += bias_sum;
          tap_sums(gs_rows, xp.buf.data(), k, n, Wp, pgw + c * taps);
        }
      }
    }
  });
  return {gx, gw, gb};
}
