// A tour of lola's expression core on random factors of a Llama-like 4096×4096 module, rank 16.
// Every line below works from the factors; only the merge touches a d×k matrix, and only because
// merging into the base weight is its purpose.
#include <lola/lola.hpp>

#include <chrono>
#include <cstdio>
#include <random>

namespace {
Eigen::MatrixXf gaussian(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng, float sd) {
  std::normal_distribution<float> normal(0.0f, sd);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}
double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

int main() {
  const int d = 4096, k = 4096, r = 16;
  const float alpha = 32;
  std::mt19937_64 rng(2024);
  const Eigen::MatrixXf B = gaussian(d, r, rng, 0.02f);  // lora_B: d×r
  const Eigen::MatrixXf A = gaussian(r, k, rng, 0.02f);  // lora_A: r×k

  // ΔW = s·B·A with the PEFT scaling s = lora_alpha / r. factor() borrows B and A: no copy.
  const auto delta = lola::factor(B, A, alpha / r);
  std::printf("lola %s — ΔW is %ldx%ld, stored as rank %ld factors (%.1f MB instead of %.1f MB)\n",
              lola::version_string, long(delta.rows()), long(delta.cols()), long(delta.rank()),
              (d + k) * r * 4 / 1e6, double(d) * k * 4 / 1e6);

  // Applying ΔW to activations right to left: s·B·(A·x), O((d + k)·r) per vector.
  const Eigen::MatrixXf x = gaussian(k, 8, rng, 1.0f);
  auto start = std::chrono::steady_clock::now();
  const Eigen::MatrixXf y = lola::dense(delta * x);
  std::printf("ΔW·x for 8 vectors:             %8.3f ms, |y|_F = %.4f\n", milliseconds_since(start),
              y.norm());

  // Norms and inner products from r×r cores: ‖ΔW‖_F, ⟨ΔW, ΔW₂⟩_F, cosine similarity.
  const Eigen::MatrixXf B2 = gaussian(d, r, rng, 0.02f), A2 = gaussian(r, k, rng, 0.02f);
  const auto other = lola::factor(B2, A2, alpha / r);
  start = std::chrono::steady_clock::now();
  const float norm = lola::norm(delta), norm2 = lola::norm(other);
  const float cosine = lola::inner(delta, other) / (norm * norm2);
  std::printf("‖ΔW‖_F, ‖ΔW₂‖_F and cos(ΔW, ΔW₂): %8.3f ms, %.4f %.4f %.2e\n",
              milliseconds_since(start), norm, norm2, cosine);

  // The GL(r) symmetry: (B·G, G⁻¹·A) is another factorisation of the same ΔW.
  const Eigen::MatrixXf G = lola::random_gl<float>(r, 100.0, rng);
  const auto moved = lola::act(delta, G);
  std::printf("‖act(ΔW, G)‖_F with cond(G) = 100: %.4f (relative change %.1e)\n", lola::norm(moved),
              std::abs(lola::norm(moved) - norm) / norm);

  // Sums stay low-rank (ranks add); lola::eval returns owning factors.
  const auto merged_factors = lola::eval(0.5f * delta + 0.5f * other);
  std::printf("0.5·ΔW + 0.5·ΔW₂ is a rank-%ld factorisation\n", long(merged_factors.rank()));

  // Merging into a base weight: one GEMM accumulating into W, no d×k temporary.
  Eigen::MatrixXf W = gaussian(d, k, rng, 0.02f);
  const Eigen::MatrixXf W0 = W;
  start = std::chrono::steady_clock::now();
  lola::merge_into(W, delta);
  const double merge_ms = milliseconds_since(start);
  lola::unmerge_from(W, delta);
  std::printf("merge_into W (4096x4096):         %8.3f ms, unmerge restores W to %.1e\n", merge_ms,
              (W - W0).norm() / W0.norm());

  // Shape errors are lola::error exceptions that name both shapes, in release builds too.
  try {
    const Eigen::MatrixXf wrong = Eigen::MatrixXf::Zero(r, 1024);
    (void)(delta + lola::factor(B, wrong));
  } catch (const lola::error& e) {
    std::printf("error: %s\n", e.what());
  }
  return 0;
}
