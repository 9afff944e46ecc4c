// Fused selective scan (Mamba's S6) for CPUs: one pass per channel.
//
// The PyTorch chunked backend makes ~15 passes over (b, d, l) tensors
// (softplus, exp, two cumsums, ...) and is bound by memory traffic; here a
// (batch, channel) row is gathered into cache-sized buffers once, the
// per-step exps are computed in a vectorisable loop, the state is a register
// on a multiply-add chain, and the backward recomputes the states instead of
// storing them.
//
// scan_*: shapes as mamba-ssm: u, delta (b, d, l); A (d, n); B, C
//   (b, g, n, l); D, delta_bias (d) or empty; float32, contiguous.
// cross_scan_*: SS2D's four directions (row-major, column-major, both
//   reversed) read straight from the (b, d, h*w) map and summed back onto
//   it, with dt_proj fused, so neither the direction copies of x, the
//   merge, nor the (b, 4, d, hw) delta exist in memory. Every tensor is in
//   map (row-major) order, for every direction, and so are the gradients:
//   x (b, d, hw); dt_low (b, 4, r, hw), B, C (b, 4, n, hw); dt_weight
//   (4, d, r); A (4d, n); D, delta_bias (4d) or empty. Only the four
//   recurrences walk the map in their directions' orders, interleaved in
//   one loop so that their multiply-add chains overlap.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// exp(x) for x <= 0, inline so that the loops around it vectorise, where
// glibc's vector expf is a call per 8 floats (with project's register
// blocks, the cross scan forward at SparX-T's stage shapes is 7-12 %
// faster):
// 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 in
// [-ln 2 / 2, ln 2 / 2]; exp(r) by Cephes' expf polynomial (about 1 ulp);
// 2^n goes into the exponent bits. Below -87 it returns exp(-87) (1.6e-38),
// keeping results normal. Callers pass -|x|, or dt * A with dt >= 0 and
// A <= 0.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.f);
  // truncating 0.5 - x / ln 2 >= 0.5 rounds x / ln 2 to the nearest integer
  const int32_t n = -static_cast<int32_t>(0.5f - x * 1.44269504f);
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  uint32_t bits;
  __builtin_memcpy(&bits, &p, sizeof bits);
  bits += static_cast<uint32_t>(n) << 23;
  __builtin_memcpy(&p, &bits, sizeof p);
  return p;
}

// log1p(e) for e in [0, 1] as e q(e), q a degree-9 polynomial through
// log1p(e) / e's Chebyshev nodes on [0, 1] (1.6e-7 relative error when
// evaluated in float32): multiply-adds that vectorise inline, where
// glibc's vector log1pf cost twice its expf and a third of the cross
// scan's forward.
inline float log1p_unit(float e) {
  float q = -0.0031760570f;
  q = q * e + 0.019542526f;
  q = q * e - 0.056373611f;
  q = q * e + 0.10543624f;
  q = q * e - 0.15269667f;
  q = q * e + 0.19663274f;
  q = q * e - 0.24951616f;
  q = q * e + 0.33329710f;
  q = q * e - 0.49999893f;
  q = q * e + 1.f;
  return e * q;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)): one exp in (0, 1], no
// overflow; above PyTorch's threshold of 20 the second term is below half
// an ulp of x, so it is x, as PyTorch's.
inline float softplus(float x) {
  return std::max(x, 0.f) + log1p_unit(exp_nonpositive(-std::abs(x)));
}

// sigmoid(x) from e = exp(-|x|), the exp softplus(x) used.
inline float sigmoid_from(float x, float e) {
  return (x >= 0.f ? 1.f : e) / (1.f + e);
}

inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

inline bool given(const at::Tensor& t) { return t.defined() && t.numel(); }

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.device().is_cpu(),
              name, " must be a contiguous float32 CPU tensor");
}

// Per-thread buffers for one sequence of length L.
struct Scratch {
  std::vector<float> dt, decay, drive, states, gh;
  explicit Scratch(int64_t L)
      : dt(L), decay(L), drive(L), states(L), gh(L) {}
};

// One sequence: u, raw (delta before bias), B and C (N rows of L) given.
// Writes y through out[t] (overwriting).
void forward_row(int64_t L, int64_t N, const float* u, const float* raw,
                 const float* B, const float* C, const float* A, float bias,
                 float skip, bool use_softplus, Scratch& s, float* out) {
  for (int64_t t = 0; t < L; ++t) {
    const float x = raw[t] + bias;
    s.dt[t] = use_softplus ? softplus(x) : x;
    out[t] = skip * u[t];
  }
  for (int64_t n = 0; n < N; ++n) {
    const float a = A[n];
    const float* Bn = B + n * L;
    const float* Cn = C + n * L;
    // Vectorisable: the exps and inputs of every step at once ...
    for (int64_t t = 0; t < L; ++t) {
      s.decay[t] = std::exp(s.dt[t] * a);
      s.drive[t] = s.dt[t] * Bn[t] * u[t];
    }
    // ... leaving one multiply-add per step on the sequential chain.
    float h = 0.f;
    for (int64_t t = 0; t < L; ++t) {
      h = s.decay[t] * h + s.drive[t];
      out[t] += Cn[t] * h;
    }
  }
}

// With h_{t-1} and dLoss/dh_t known for every step, the gradients are
// element-wise: adds them into gB, gC, gu, graw and returns A's. The
// buffers never overlap (restrict), so the loop vectorises.
inline float step_grads(int64_t L, float a, const float* __restrict__ g,
                        const float* __restrict__ u,
                        const float* __restrict__ B,
                        const float* __restrict__ dt,
                        const float* __restrict__ decay,
                        const float* __restrict__ states,
                        const float* __restrict__ gh, float* __restrict__ gB,
                        float* __restrict__ gC, float* __restrict__ gu,
                        float* __restrict__ graw) {
  float ga = 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const float prev = t ? states[t - 1] : 0.f;
    const float ghdt = gh[t] * dt[t];
    const float dprev = decay[t] * prev;
    gC[t] += g[t] * states[t];
    gB[t] += ghdt * u[t];
    gu[t] += ghdt * B[t];
    graw[t] += gh[t] * (a * dprev + B[t] * u[t]);
    ga += ghdt * dprev;
  }
  return ga;
}

// Gradients of one sequence given g = dLoss/dy: writes gu, graw (delta
// before bias), gA (N), adds into gB, gC (N rows of L: rows that share B
// and C sum there); returns gskip and gbias.
//
// Everything that does not depend on the previous step runs in passes the
// compiler vectorises (the exps through glibc's vector math); only two
// loops are sequential, one fused multiply-add per step each: the states
// (recomputed) and the reverse recurrence of their gradient.
void backward_row(int64_t L, int64_t N, const float* u, const float* raw,
                  const float* B, const float* C, const float* g,
                  const float* A, float bias, float skip, bool use_softplus,
                  Scratch& s, float* gu, float* graw, float* gB, float* gC,
                  float* gA, float& gskip, float& gbias) {
  float* dt = s.dt.data();
  float* decay = s.decay.data();
  float* drive = s.drive.data();
  float* states = s.states.data();
  float* gh = s.gh.data();
  if (use_softplus) {
    for (int64_t t = 0; t < L; ++t) dt[t] = softplus(raw[t] + bias);
  } else {
    for (int64_t t = 0; t < L; ++t) dt[t] = raw[t] + bias;
  }
  float skip_sum = 0.f;
  for (int64_t t = 0; t < L; ++t) {
    gu[t] = g[t] * skip;
    skip_sum += g[t] * u[t];
    graw[t] = 0.f;
  }
  gskip = skip_sum;
  for (int64_t n = 0; n < N; ++n) {
    const float a = A[n];
    const float* Bn = B + n * L;
    const float* Cn = C + n * L;
    float* gBn = gB + n * L;
    float* gCn = gC + n * L;
    for (int64_t t = 0; t < L; ++t) {
      decay[t] = std::exp(dt[t] * a);
      drive[t] = dt[t] * Bn[t] * u[t];
    }
    float h = 0.f;
    for (int64_t t = 0; t < L; ++t) {  // recompute the states
      h = std::fma(decay[t], h, drive[t]);
      states[t] = h;
    }
    // dLoss/dh_t = g_t C_t + a_{t+1} dLoss/dh_{t+1}: the direct part
    // first, then the carry in reverse (drive now holds a_t g_t C_t).
    for (int64_t t = 0; t < L; ++t) {
      gh[t] = g[t] * Cn[t];
      drive[t] = decay[t] * gh[t];
    }
    float carry = 0.f;
    for (int64_t t = L - 1; t >= 0; --t) {
      gh[t] += carry;
      carry = std::fma(decay[t], carry, drive[t]);
    }
    gA[n] = step_grads(L, a, g, u, Bn, dt, decay, states, gh, gBn, gCn, gu,
                       graw);
  }
  if (use_softplus)
    for (int64_t t = 0; t < L; ++t) graw[t] *= sigmoid(raw[t] + bias);
  float bias_sum = 0.f;
  for (int64_t t = 0; t < L; ++t) bias_sum += graw[t];
  gbias = bias_sum;
}

}  // namespace

at::Tensor scan_forward(const at::Tensor& u, const at::Tensor& delta,
                        const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const at::Tensor& D,
                        const at::Tensor& bias, bool use_softplus) {
  for (const auto& [t, name] : {std::pair{&u, "u"}, {&delta, "delta"},
                                {&A, "A"}, {&B, "B"}, {&C, "C"}})
    check_float(*t, name);
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2);
  const int64_t N = A.size(1), groups = B.size(1), per_group = dim / groups;
  TORCH_CHECK(delta.sizes() == u.sizes() && A.size(0) == dim &&
                  dim % groups == 0 && B.sizes() == C.sizes() &&
                  B.size(0) == batch && B.size(2) == N && B.size(3) == L,
              "selective scan: inconsistent shapes");
  auto y = at::empty_like(u);
  const float *pu = u.data_ptr<float>(), *pdt = delta.data_ptr<float>();
  const float *pA = A.data_ptr<float>(), *pB = B.data_ptr<float>();
  const float* pC = C.data_ptr<float>();
  const float* pD = given(D) ? D.data_ptr<float>() : nullptr;
  const float* pbias = given(bias) ? bias.data_ptr<float>() : nullptr;
  float* py = y.data_ptr<float>();
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    Scratch s(L);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      const int64_t gbase = (b * groups + d / per_group) * N * L;
      forward_row(L, N, pu + row * L, pdt + row * L, pB + gbase, pC + gbase,
                  pA + d * N, pbias ? pbias[d] : 0.f, pD ? pD[d] : 0.f,
                  use_softplus, s, py + row * L);
    }
  });
  return y;
}

// B and C are shared by the channels of a group and A, D, delta_bias by the
// batch: each row writes its own slice and the sums over rows come after,
// so threads never race.
std::vector<at::Tensor> scan_backward(
    const at::Tensor& grad_y, const at::Tensor& u, const at::Tensor& delta,
    const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
    const at::Tensor& D, const at::Tensor& bias, bool use_softplus) {
  check_float(grad_y, "grad_y");
  const int64_t batch = u.size(0), dim = u.size(1), L = u.size(2);
  const int64_t N = A.size(1), groups = B.size(1), per_group = dim / groups;
  auto gu = at::empty_like(u), gdelta = at::empty_like(delta);
  auto gA_rows = at::empty({batch, dim, N}, u.options());
  auto gB_rows = at::zeros({batch, dim, N, L}, u.options());
  auto gC_rows = at::zeros({batch, dim, N, L}, u.options());
  auto gD_rows = at::empty({batch, dim}, u.options());
  auto gbias_rows = at::empty({batch, dim}, u.options());
  const float *pg = grad_y.data_ptr<float>(), *pu = u.data_ptr<float>();
  const float *pdt = delta.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>();
  const float* pD = given(D) ? D.data_ptr<float>() : nullptr;
  const float* pbias = given(bias) ? bias.data_ptr<float>() : nullptr;
  at::parallel_for(0, batch * dim, 1, [&](int64_t begin, int64_t end) {
    Scratch s(L);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      const int64_t gbase = (b * groups + d / per_group) * N * L;
      backward_row(L, N, pu + row * L, pdt + row * L, pB + gbase,
                   pC + gbase, pg + row * L, pA + d * N,
                   pbias ? pbias[d] : 0.f, pD ? pD[d] : 0.f, use_softplus, s,
                   gu.data_ptr<float>() + row * L,
                   gdelta.data_ptr<float>() + row * L,
                   gB_rows.data_ptr<float>() + row * N * L,
                   gC_rows.data_ptr<float>() + row * N * L,
                   gA_rows.data_ptr<float>() + row * N,
                   gD_rows.data_ptr<float>()[row],
                   gbias_rows.data_ptr<float>()[row]);
    }
  });
  auto gB = gB_rows.view({batch, groups, per_group, N, L}).sum(2);
  auto gC = gC_rows.view({batch, groups, per_group, N, L}).sum(2);
  return {gu, gdelta, gA_rows.sum(0), gB, gC, gD_rows.sum(0),
          gbias_rows.sum(0)};
}

namespace {

// Channels whose B / C gradients one task sums before they go to memory.
constexpr int64_t kChannelsPerChunk = 16;

struct CrossDims {
  int64_t batch, dim, L, N, R;
};

CrossDims cross_check(const at::Tensor& x, const at::Tensor& low,
                      const at::Tensor& weight, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& C, int64_t H,
                      int64_t W) {
  for (const auto& [t, name] :
       {std::pair{&x, "x"}, {&low, "dt_low"}, {&weight, "dt_weight"},
        {&A, "A"}, {&B, "B"}, {&C, "C"}})
    check_float(*t, name);
  CrossDims c{x.size(0), x.size(1), x.size(2), A.size(1), low.size(2)};
  TORCH_CHECK(c.L == H * W, "cross scan: x must be (b, d, h*w)");
  TORCH_CHECK(low.dim() == 4 && low.size(0) == c.batch &&
                  low.size(1) == 4 && low.size(3) == c.L,
              "cross scan: dt_low must be (b, 4, r, h*w)");
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == 4 &&
                  weight.size(1) == c.dim && weight.size(2) == c.R,
              "cross scan: dt_weight must be (4, d, r)");
  TORCH_CHECK(A.size(0) == 4 * c.dim, "cross scan: A must be (4d, n)");
  TORCH_CHECK(B.sizes() == C.sizes() && B.dim() == 4 &&
                  B.size(0) == c.batch && B.size(1) == 4 &&
                  B.size(2) == c.N && B.size(3) == c.L,
              "cross scan: B and C must be (b, 4, n, h*w)");
  return c;
}

// Per-thread buffers of the cross scan: `count` arrays, each holding the
// four directions' rows of L floats (direction k at k * L), in map order.
struct CrossScratch {
  int64_t L;
  std::vector<float> data;
  CrossScratch(int64_t L, int count) : L(L), data(count * 4 * L) {}
  float* operator[](int i) { return data.data() + i * 4 * L; }
};

// Step t of the four directions at once, as f(p0, p1, p2, p3), the map
// positions each reads: direction 0 is row-major (p0 = t), 2 its reverse
// (p2 = L-1-t), 1 column-major (p1 = row*W + col at t = col*H + row), 3
// its reverse (p3 = L-1-p1). Their four recurrences are independent, so
// one step's multiply-adds overlap instead of waiting on each other.
template <typename F>
inline void walk4(int64_t H, int64_t W, F f) {
  const int64_t L = H * W;
  int64_t t = 0;
  for (int64_t col = 0; col < W; ++col)
    for (int64_t p1 = col; p1 < L; p1 += W, ++t)
      f(t, p1, L - 1 - t, L - 1 - p1);
}

// The same steps from t = L-1 down to 0: the reverse recurrences.
template <typename F>
inline void walk4_reverse(int64_t H, int64_t W, F f) {
  const int64_t L = H * W;
  int64_t t = L - 1;
  for (int64_t col = W - 1; col >= 0; --col)
    for (int64_t p1 = (H - 1) * W + col; p1 >= 0; p1 -= W, --t)
      f(t, p1, L - 1 - t, L - 1 - p1);
}

// h = decay h + drive along each direction's walk; the states overwrite
// the drives (both in map order, four rows of L).
void recur_forward(int64_t H, int64_t W, const float* __restrict__ decay,
                   float* __restrict__ drive) {
  const int64_t L = H * W;
  const float *a0 = decay, *a1 = decay + L, *a2 = decay + 2 * L,
              *a3 = decay + 3 * L;
  float *s0 = drive, *s1 = drive + L, *s2 = drive + 2 * L,
        *s3 = drive + 3 * L;
  float h0 = 0.f, h1 = 0.f, h2 = 0.f, h3 = 0.f;
  walk4(H, W, [&](int64_t p0, int64_t p1, int64_t p2, int64_t p3) {
    h0 = a0[p0] * h0 + s0[p0];
    h1 = a1[p1] * h1 + s1[p1];
    h2 = a2[p2] * h2 + s2[p2];
    h3 = a3[p3] * h3 + s3[p3];
    s0[p0] = h0;
    s1[p1] = h1;
    s2[p2] = h2;
    s3[p3] = h3;
  });
}

// dLoss/dh_t = g_t C_t + a_{t+1} dLoss/dh_{t+1}: the carry (the second
// term) runs backwards along each walk, carry = a_t (carry + g_t C_t) with
// `direct` holding a_t g_t C_t, which the carry entering each step
// overwrites.
void recur_reverse(int64_t H, int64_t W, const float* __restrict__ decay,
                   float* __restrict__ direct) {
  const int64_t L = H * W;
  const float *a0 = decay, *a1 = decay + L, *a2 = decay + 2 * L,
              *a3 = decay + 3 * L;
  float *c0 = direct, *c1 = direct + L, *c2 = direct + 2 * L,
        *c3 = direct + 3 * L;
  float k0 = 0.f, k1 = 0.f, k2 = 0.f, k3 = 0.f;
  walk4_reverse(H, W, [&](int64_t p0, int64_t p1, int64_t p2, int64_t p3) {
    const float x0 = c0[p0], x1 = c1[p1], x2 = c2[p2], x3 = c3[p3];
    c0[p0] = k0;
    c1[p1] = k1;
    c2[p2] = k2;
    c3[p3] = k3;
    k0 = a0[p0] * k0 + x0;
    k1 = a1[p1] * k1 + x1;
    k2 = a2[p2] * k2 + x2;
    k3 = a3[p3] * k3 + x3;
  });
}

// The state before each map position's step in direction k, from the
// states in map order: the step before is one position (rows) or one row
// (columns) away, except where a column walk wraps to the next column.
void previous_states(int k, int64_t H, int64_t W, const float* states,
                     float* prev) {
  const int64_t L = H * W;
  switch (k) {
    case 0:
      prev[0] = 0.f;
      std::copy(states, states + L - 1, prev + 1);
      break;
    case 2:
      std::copy(states + 1, states + L, prev);
      prev[L - 1] = 0.f;
      break;
    case 1:  // (row, col) follows (row-1, col); (0, col) follows (H-1, col-1)
      std::copy(states, states + L - W, prev + W);
      prev[0] = 0.f;
      for (int64_t col = 1; col < W; ++col)
        prev[col] = states[(H - 1) * W + col - 1];
      break;
    default:  // the reverse: (H-1, col) follows (0, col+1)
      std::copy(states + W, states + L, prev);
      for (int64_t col = 0; col + 1 < W; ++col)
        prev[(H - 1) * W + col] = states[col + 1];
      prev[L - 1] = 0.f;
  }
}

// raw[t] = sum_r w[r] low[r][t]: dt_proj, fused so the (b, 4, d, L)
// delta never goes through memory. Each block of 32 positions stays in
// four 8-float registers across all R rows, so raw is stored once (2-4 %
// of the scan against four rows per pass over raw). Float8: eight floats
// at any float address (unaligned, may alias float).
typedef float Float8
    __attribute__((vector_size(32), aligned(4), may_alias));

inline void project(int64_t L, int64_t R, const float* w, const float* low,
                    float* __restrict__ raw) {
  int64_t t = 0;
  for (; t + 32 <= L; t += 32) {
    Float8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    const float* row = low + t;
    for (int64_t r = 0; r < R; ++r, row += L) {
      const float wr = w[r];
      const Float8* v = reinterpret_cast<const Float8*>(row);
      a0 += wr * v[0];
      a1 += wr * v[1];
      a2 += wr * v[2];
      a3 += wr * v[3];
    }
    Float8* out = reinterpret_cast<Float8*>(raw + t);
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
    out[3] = a3;
  }
  for (; t + 8 <= L; t += 8) {
    Float8 acc = {};
    const float* row = low + t;
    for (int64_t r = 0; r < R; ++r, row += L)
      acc += w[r] * *reinterpret_cast<const Float8*>(row);
    *reinterpret_cast<Float8*>(raw + t) = acc;
  }
  for (; t < L; ++t) {
    float acc = 0.f;
    for (int64_t r = 0; r < R; ++r) acc += w[r] * low[r * L + t];
    raw[t] = acc;
  }
}

// dt = softplus(raw + bias) over raw, in place; with sig given also its
// derivative sigmoid(raw + bias), from the same exp.
void delta_row(int64_t L, float bias, bool use_softplus,
               float* __restrict__ dt, float* __restrict__ sig) {
  if (!use_softplus) {
    for (int64_t t = 0; t < L; ++t) dt[t] += bias;
  } else if (!sig) {
    for (int64_t t = 0; t < L; ++t) dt[t] = softplus(dt[t] + bias);
  } else {
    for (int64_t t = 0; t < L; ++t) {
      const float x = dt[t] + bias, e = exp_nonpositive(-std::abs(x));
      dt[t] = std::max(x, 0.f) + log1p_unit(e);
      sig[t] = sigmoid_from(x, e);
    }
  }
}

// The per-step factors of one direction and state: decay = exp(dt a),
// drive = dt B u. With dt >= 0 (softplus) and a <= 0 (SS2D's -exp(A_log))
// every exponent is <= 0: the inline exp.
void decay_drive(int64_t L, float a, bool dt_nonnegative,
                 const float* __restrict__ dt, const float* __restrict__ B,
                 const float* __restrict__ u, float* __restrict__ decay,
                 float* __restrict__ drive) {
  if (dt_nonnegative && a <= 0.f) {
    for (int64_t t = 0; t < L; ++t) {
      decay[t] = exp_nonpositive(dt[t] * a);
      drive[t] = dt[t] * B[t] * u[t];
    }
  } else {
    for (int64_t t = 0; t < L; ++t) {
      decay[t] = std::exp(dt[t] * a);
      drive[t] = dt[t] * B[t] * u[t];
    }
  }
}

// Gradients at every map position of one direction and state, with the
// states, the ones before and the reverse carry known: adds into gB, gC,
// gx, graw and returns A's. As step_grads, with gh = g C + carry.
float cross_grads(int64_t L, float a, const float* __restrict__ g,
                  const float* __restrict__ u, const float* __restrict__ B,
                  const float* __restrict__ C, const float* __restrict__ dt,
                  const float* __restrict__ decay,
                  const float* __restrict__ states,
                  const float* __restrict__ prev,
                  const float* __restrict__ carry, float* __restrict__ gB,
                  float* __restrict__ gC, float* __restrict__ gx,
                  float* __restrict__ graw) {
  float ga = 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const float gh = g[t] * C[t] + carry[t];
    const float ghdt = gh * dt[t];
    const float dprev = decay[t] * prev[t];
    gC[t] += g[t] * states[t];
    gB[t] += ghdt * u[t];
    gx[t] += ghdt * B[t];
    graw[t] += gh * (a * dprev + B[t] * u[t]);
    ga += ghdt * dprev;
  }
  return ga;
}

}  // namespace

// Per (b, d) row: the elementwise work of all four directions runs in map
// order in vectorised passes, then their four recurrences in one
// interleaved loop (walk4), then the outputs are summed in map order.
at::Tensor cross_scan_forward(const at::Tensor& x, const at::Tensor& low,
                              const at::Tensor& weight, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C,
                              const at::Tensor& D, const at::Tensor& bias,
                              bool use_softplus, int64_t H, int64_t W) {
  const CrossDims c = cross_check(x, low, weight, A, B, C, H, W);
  const int64_t L = c.L, N = c.N, R = c.R, dim = c.dim;
  auto y = at::empty_like(x);
  const float *px = x.data_ptr<float>(), *plow = low.data_ptr<float>();
  const float *pw = weight.data_ptr<float>(), *pA = A.data_ptr<float>();
  const float *pB = B.data_ptr<float>(), *pC = C.data_ptr<float>();
  const float* pD = given(D) ? D.data_ptr<float>() : nullptr;
  const float* pbias = given(bias) ? bias.data_ptr<float>() : nullptr;
  float* py = y.data_ptr<float>();
  // Rows are (b, d); the four directions of a row run in one thread because
  // they all add into y[b, d].
  at::parallel_for(0, c.batch * dim, 1, [&](int64_t begin, int64_t end) {
    CrossScratch s(L, 3);
    float *dt = s[0], *decay = s[1], *drive = s[2];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dim, d = row % dim;
      const float* __restrict__ u = px + row * L;
      float* __restrict__ yr = py + row * L;
      float skip = 0.f;
      for (int k = 0; k < 4; ++k) {
        const int64_t kd = k * dim + d;
        project(L, R, pw + kd * R, plow + (b * 4 + k) * R * L, dt + k * L);
        delta_row(L, pbias ? pbias[kd] : 0.f, use_softplus, dt + k * L,
                  nullptr);
        skip += pD ? pD[kd] : 0.f;
      }
      for (int64_t t = 0; t < L; ++t) yr[t] = skip * u[t];
      for (int64_t n = 0; n < N; ++n) {
        const float* Cn[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t bkn = ((b * 4 + k) * N + n) * L;
          decay_drive(L, pA[(k * dim + d) * N + n], use_softplus, dt + k * L,
                      pB + bkn, u, decay + k * L, drive + k * L);
          Cn[k] = pC + bkn;
        }
        recur_forward(H, W, decay, drive);
        const float *__restrict__ h = drive, *__restrict__ C0 = Cn[0],
                     *__restrict__ C1 = Cn[1], *__restrict__ C2 = Cn[2],
                     *__restrict__ C3 = Cn[3];
        for (int64_t t = 0; t < L; ++t)
          yr[t] += C0[t] * h[t] + C1[t] * h[L + t] + C2[t] * h[2 * L + t] +
                   C3[t] * h[3 * L + t];
      }
    }
  });
  return y;
}

// Returns the gradients of x, of the raw delta (b, 4, d, L) (the caller
// turns it into dt_proj's weight and input gradients with two matmuls), A,
// B, C, D and delta_bias; everything per position in map order.
std::vector<at::Tensor> cross_scan_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& low,
    const at::Tensor& weight, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const at::Tensor& D, const at::Tensor& bias,
    bool use_softplus, int64_t H, int64_t W) {
  check_float(grad_y, "grad_y");
  const CrossDims c = cross_check(x, low, weight, A, B, C, H, W);
  const int64_t L = c.L, N = c.N, R = c.R, batch = c.batch, dim = c.dim;
  auto gx = at::empty_like(x);
  auto graw = at::empty({batch, 4, dim, L}, x.options());
  auto gA_rows = at::empty({batch, 4, dim, N}, x.options());
  // B and C gradients summed per chunk of channels, then over the chunks:
  // one (N, L) slice per row would write and re-read b*4*d*N*L floats
  // (77 MB at SparX-T's stage 1, batch 8), a quarter of the backward.
  const int64_t chunk = kChannelsPerChunk;
  const int64_t chunks = (dim + chunk - 1) / chunk;
  auto gB_part = at::zeros({batch, chunks, 4, N, L}, x.options());
  auto gC_part = at::zeros({batch, chunks, 4, N, L}, x.options());
  auto gD_rows = at::empty({batch, 4, dim}, x.options());
  auto gbias_rows = at::empty({batch, 4, dim}, x.options());
  const float *pg = grad_y.data_ptr<float>(), *px = x.data_ptr<float>();
  const float *plow = low.data_ptr<float>(), *pw = weight.data_ptr<float>();
  const float *pA = A.data_ptr<float>(), *pB = B.data_ptr<float>();
  const float* pC = C.data_ptr<float>();
  const float* pD = given(D) ? D.data_ptr<float>() : nullptr;
  const float* pbias = given(bias) ? bias.data_ptr<float>() : nullptr;
  float *pgx = gx.data_ptr<float>(), *pgraw = graw.data_ptr<float>();
  float *pgA = gA_rows.data_ptr<float>(), *pgD = gD_rows.data_ptr<float>();
  float* pgbias = gbias_rows.data_ptr<float>();
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    CrossScratch s(L, 6);
    float *dt = s[0], *sig = s[1], *decay = s[2], *states = s[3],
          *carry = s[4], *prev = s[5];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, part = task % chunks;
      const int64_t d_end = std::min(dim, (part + 1) * chunk);
      for (int64_t d = part * chunk; d < d_end; ++d) {
        const int64_t row = b * dim + d;
        const float* __restrict__ u = px + row * L;
        const float* __restrict__ g = pg + row * L;
        float* __restrict__ gxr = pgx + row * L;
        float skip = 0.f, gskip = 0.f;
        for (int k = 0; k < 4; ++k) {
          const int64_t kd = k * dim + d;
          project(L, R, pw + kd * R, plow + (b * 4 + k) * R * L, dt + k * L);
          delta_row(L, pbias ? pbias[kd] : 0.f, use_softplus, dt + k * L,
                    sig + k * L);
          skip += pD ? pD[kd] : 0.f;
          float* gr = pgraw + ((b * 4 + k) * dim + d) * L;
          for (int64_t t = 0; t < L; ++t) gr[t] = 0.f;
        }
        for (int64_t t = 0; t < L; ++t) {
          gxr[t] = skip * g[t];
          gskip += g[t] * u[t];
        }
        for (int64_t n = 0; n < N; ++n) {
          for (int k = 0; k < 4; ++k) {
            const int64_t bkn = ((b * 4 + k) * N + n) * L;
            const float* Cn = pC + bkn;
            float *dk = decay + k * L, *ck = carry + k * L;
            decay_drive(L, pA[(k * dim + d) * N + n], use_softplus,
                        dt + k * L, pB + bkn, u, dk, states + k * L);
            for (int64_t t = 0; t < L; ++t) ck[t] = dk[t] * (g[t] * Cn[t]);
          }
          recur_forward(H, W, decay, states);
          recur_reverse(H, W, decay, carry);
          for (int k = 0; k < 4; ++k) {
            const int64_t bk = b * 4 + k, bkn = (bk * N + n) * L;
            const int64_t slice = ((task * 4 + k) * N + n) * L;
            previous_states(k, H, W, states + k * L, prev + k * L);
            pgA[(bk * dim + d) * N + n] = cross_grads(
                L, pA[(k * dim + d) * N + n], g, u, pB + bkn, pC + bkn,
                dt + k * L, decay + k * L, states + k * L, prev + k * L,
                carry + k * L, gB_part.data_ptr<float>() + slice,
                gC_part.data_ptr<float>() + slice, gxr,
                pgraw + (bk * dim + d) * L);
          }
        }
        for (int k = 0; k < 4; ++k) {
          const int64_t krow = (b * 4 + k) * dim + d;
          float* __restrict__ gr = pgraw + krow * L;
          const float* __restrict__ sk = sig + k * L;
          if (use_softplus)
            for (int64_t t = 0; t < L; ++t) gr[t] *= sk[t];
          float bias_sum = 0.f;
          for (int64_t t = 0; t < L; ++t) bias_sum += gr[t];
          pgbias[krow] = bias_sum;
          pgD[krow] = gskip;  // the same sum in every direction's order
        }
      }
    }
  });
  return {gx, graw, gA_rows.sum(0).view({4 * dim, N}), gB_part.sum(1),
          gC_part.sum(1), gD_rows.sum(0).view({4 * dim}),
          gbias_rows.sum(0).view({4 * dim})};
}

// depthwise_cpu.cpp
at::Tensor depthwise_conv_act(const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& bias, bool residual,
                              int64_t act, const at::Tensor& in_bias);
std::vector<at::Tensor> depthwise_conv_backward(const at::Tensor& grad,
                                                const at::Tensor& x,
                                                const at::Tensor& weight,
                                                bool need_input,
                                                bool need_weight);
std::vector<at::Tensor> depthwise_conv_act_train(const at::Tensor& x,
                                                 const at::Tensor& weight,
                                                 const at::Tensor& bias,
                                                 bool residual, int64_t act,
                                                 bool save_pre);
std::vector<at::Tensor> depthwise_conv_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& pre, bool residual, int64_t act,
    bool need_input, bool need_weight);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmsparx CPU kernels: fused selective scan, depthwise conv";
  m.def("depthwise_conv_act", &depthwise_conv_act,
        "act(u + dwconv(u)) or act(dwconv(u)), u = x + in_bias per channel "
        "(in_bias empty: u = x), inference only");
  m.def("depthwise_conv_backward", &depthwise_conv_backward,
        "gradients of dwconv(x) + bias: input, weight, bias");
  m.def("depthwise_conv_act_train", &depthwise_conv_act_train,
        "depthwise_conv_act and (save_pre) its pre-activation");
  m.def("depthwise_conv_act_backward", &depthwise_conv_act_backward,
        "gradients of depthwise_conv_act: input, weight, bias");
  m.def("forward", &scan_forward, "selective scan forward");
  m.def("backward", &scan_backward, "selective scan backward");
  m.def("cross_forward", &cross_scan_forward,
        "SS2D four-direction selective scan, summed onto the map");
  m.def("cross_backward", &cross_scan_backward,
        "gradients of cross_forward");
}
