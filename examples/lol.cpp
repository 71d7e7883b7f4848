// Learning on LoRAs: a GL-net and the LoL feature tables on a small population of adapters.
//
// Builds 16 random two-module adapters, runs a randomly initialised GL-net on them (as one would
// run trained weights loaded with nn::load_gl_net), shows that re-parametrising every module by an
// independent G ∈ GL(r) leaves the outputs unchanged, and builds the svd / canonical / raw feature
// tables, of which only raw moves under the same re-parametrisation.
#include <lola/core/random.hpp>
#include <lola/features/featurize.hpp>
#include <lola/nn/gl_net_weights.hpp>

#include <Eigen/LU>

#include <cstdio>
#include <random>
#include <vector>

int main() {
  std::mt19937_64 rng(42);
  std::normal_distribution<double> normal(0.0, 0.02);
  auto gaussian = [&](Eigen::Index rows, Eigen::Index cols) {
    lola::io::adapter_module<double>::matrix m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
    return m;
  };

  // Two modules per adapter: q (64×48) and v (32×48), rank 4, PEFT names.
  std::vector<lola::io::adapter<double>> population(16), moved;
  for (auto& a : population)
    for (const auto& [name, d] : {std::pair{"base_model.model.layers.0.attn.q", 64},
                                  std::pair{"base_model.model.layers.0.attn.v", 32}}) {
      lola::io::adapter_module<double> m;
      m.name = name;
      m.B = gaussian(d, 4);
      m.A = gaussian(4, 48);
      a.modules.push_back(m);
    }
  moved = population;
  for (auto& a : moved)
    for (auto& m : a.modules) {  // (B·G, G⁻¹·A): the same ΔW in other coordinates
      const Eigen::MatrixXd G = lola::random_gl<double>(4, 100.0, rng);
      m.B = m.B * G;
      m.A = G.partialPivLu().solve(m.A);
    }
  std::vector<const lola::io::adapter<double>*> batch, batch_moved;
  for (std::size_t i = 0; i < population.size(); ++i) {
    batch.push_back(&population[i]);
    batch_moved.push_back(&moved[i]);
  }

  // GL-net: modules numbered in lexicographic key order (q, then v); h = 8, K = 2, head 16 → 3.
  const auto net = lola::nn::gl_net<double>::random({64, 32}, {48, 48}, 8, 2, 16, 3,
                                                    lola::nn::pooling::flatten, rng);
  const Eigen::MatrixXd y = net.forward(batch), y_moved = net.forward(batch_moved);
  std::printf("GL-net: %ld adapters -> %ld outputs each; first row % .6f % .6f % .6f\n",
              static_cast<long>(y.rows()), static_cast<long>(y.cols()), y(0, 0), y(0, 1), y(0, 2));
  std::printf("        max change under per-module GL(4) re-parametrisation: %.2e (relative)\n",
              (y - y_moved).cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff());

  for (auto kind : {lola::feature_kind::svd, lola::feature_kind::canonical, lola::feature_kind::raw}) {
    lola::featurize_options<double> options;
    options.kind = kind;
    const auto X = lola::featurize(batch, options), X_moved = lola::featurize(batch_moved, options);
    std::printf("features %-9s %ld x %-5ld change under re-parametrisation %.2e (relative)\n",
                lola::to_string(kind), static_cast<long>(X.rows()), static_cast<long>(X.cols()),
                (X - X_moved).norm() / X.norm());
  }
  return 0;
}
