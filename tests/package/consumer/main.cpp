// Exits 0 when lola's headers, its Eigen dependency and C++17 all arrived through the target.
#include <lola/lola.hpp>

#if defined(LOLA_CONSUMER_SERIAL) && defined(_OPENMP)
#error "lola::headers must not bring OpenMP to its consumers"
#endif

#include <cstdio>
#include <random>

int main() {
  std::mt19937_64 rng(1);
  const Eigen::MatrixXd G = lola::random_gl(3, 10.0, rng);
  const Eigen::MatrixXd B = Eigen::MatrixXd::Random(8, 3), A = Eigen::MatrixXd::Random(3, 6);
  const auto L = lola::factor(B, A, 0.5);
  const double moved = (lola::dense(lola::act(L, G)) - lola::dense(L)).norm();
  std::printf("lola %s: |act(L, G) - L| = %.3g\n", lola::version_string, moved);
  return moved < 1e-10 ? 0 : 1;
}
