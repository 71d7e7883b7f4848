// Analysing a set of LoRA modules from their factors: spectra, canonical forms, alignment,
// resizing, merging, and the LoRA paper's subspace analyses. Random factors with a decaying
// spectrum stand in for a real adapter (the file readers are another part of lola).
#include <lola/lola.hpp>

#include <lola/canon/canonical_form.hpp>
#include <lola/canon/o_align.hpp>
#include <lola/core/parallel.hpp>
#include <lola/features/base_projection.hpp>
#include <lola/features/similarity.hpp>
#include <lola/features/spectrum.hpp>
#include <lola/features/subspace_similarity.hpp>
#include <lola/ops/combine.hpp>
#include <lola/ops/resize.hpp>

#include <cstdio>
#include <random>
#include <vector>

namespace {
// A d×k rank-r module whose singular values decay like 1/i, in arbitrary GL(r) coordinates.
lola::low_rank_matrix<float> random_module(int d, int k, int r, std::mt19937_64& rng) {
  const Eigen::MatrixXf U = lola::random_orthogonal<float>(d, rng).leftCols(r);
  const Eigen::MatrixXf V = lola::random_orthogonal<float>(k, rng).leftCols(r);
  Eigen::VectorXf sigma(r);
  for (int i = 0; i < r; ++i) sigma(i) = 1.0f / float(i + 1);
  const Eigen::MatrixXf G = lola::random_gl<float>(r, 30.0, rng);
  Eigen::MatrixXf B = U * sigma.asDiagonal() * G;
  Eigen::MatrixXf A = G.partialPivLu().solve(V.transpose());
  return lola::low_rank_matrix<float>(std::move(B), std::move(A), 27.0f / r);  // alpha 27, rank r
}
}  // namespace

int main() {
  std::mt19937_64 rng(7);
  const int d = 320, k = 768, r = 8;
  std::vector<lola::low_rank_matrix<float>> modules;
  for (int i = 0; i < 6; ++i) modules.push_back(random_module(d, k, r, rng));

  // Singular values of every module, in parallel over modules, zero-padded to 10 (the LoL rule).
  const auto spectra = lola::parallel_map(modules, [](const auto& m) { return lola::singular_values(m, 10); });
  std::printf("module 0 σ (padded to 10):");
  for (int i = 0; i < 10; ++i) std::printf(" %.3f", spectra[0](i));
  const auto summary = lola::spectral_summary(modules[0]);
  std::printf("\n‖ΔW‖_F %.3f, ‖ΔW‖₂ %.3f, nuclear %.3f, stable rank %.2f, effective rank %.2f\n",
              summary.frobenius, summary.spectral, summary.nuclear, summary.stable_rank,
              summary.effective_rank);

  // The canonical form is the same for every factorisation of the same ΔW.
  const Eigen::MatrixXf G = lola::random_gl<float>(r, 100.0, rng);
  const auto c0 = lola::canonicalize(modules[0]);
  const auto c1 = lola::canonicalize(lola::act(modules[0], G));
  std::printf("canonical form: rank %ld, min relative gap %.3f, degenerate %s, |B* − B*(G)| = %.1e\n",
              long(c0.rank), c0.min_relative_gap, c0.degenerate ? "yes" : "no",
              (c0.factors.B() - c1.factors.B()).norm());

  // O-Align module 1 to module 0 (the LoL template): only an O(r) rotation, same ΔW.
  const auto aligned = lola::o_align(modules[1], modules[0]);
  std::printf("O-Align: |ΔW change| = %.1e, σ_r/σ₁ of the Procrustes matrix %.3f\n",
              (lola::dense(aligned.aligned) - lola::dense(modules[1])).norm(), aligned.min_singular_value);

  // kohya-style resize: keep 90% of the Frobenius norm.
  const auto resized = lola::resize(modules[0], lola::rank_rule::sv_fro(0.9));
  std::printf("resize sv_fro 0.9: rank %ld keeps %.1f%% of ‖ΔW‖_F\n", long(resized.rank),
              100.0 * resized.retained_fro_fraction);

  // Merge the six modules with weights: the exact sum has rank 48; re-compress it to rank 8.
  const std::vector<float> weights(modules.size(), 1.0f / modules.size());
  const auto exact = lola::combine(modules, weights);
  const auto compressed = lola::combine(modules, weights, lola::combination::weighted_sum, r);
  std::printf("merge: exact rank %ld, rank-%d re-compression keeps cos = %.4f\n", long(exact.rank()), r,
              lola::cosine_similarity(exact, compressed));

  // The LoRA paper's φ between the input subspaces of two modules' A factors (eq. 4).
  const auto phi = lola::subspace_similarity(lola::input_subspace(modules[0].A()),
                                             lola::input_subspace(modules[1].A()));
  std::printf("φ(A₀, A₁, 1, 1) = %.4f, φ(A₀, A₀-with-G, 8, 8) = %.4f\n", phi(0, 0),
              lola::subspace_similarity(lola::input_subspace(modules[0].A()),
                                        lola::input_subspace(c1.factors.A()))(r - 1, r - 1));

  // §7.3: how much does ΔW amplify directions of a base weight W?
  const Eigen::MatrixXf W = lola::random_orthogonal<float>(d, rng).leftCols(d) *
                            Eigen::MatrixXf::Identity(d, k) * 0.05f;
  const auto projection = lola::project_base_weight(W, modules[0], 4);
  std::printf("‖UᵀWV‖_F: ΔW's top-4 %.4f, W's own top-4 %.4f, random %.4f; amplification %.1f\n",
              projection.projection_norm, projection.w_top_r_norm, projection.random_norm,
              projection.amplification);
  return 0;
}
