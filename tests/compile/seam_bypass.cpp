// The seam's proof can fail: an algorithm that reaches the factors through Eigen's operators
// instead of a primitive (backend/primitives.hpp) does not compile for the probe backend. Built
// twice by tests/compile/CMakeLists.txt: as it is (through the primitive: must compile) and with
// LOLA_SEAM_BYPASS (through operator*: must fail, naming the operator).
#include "lola/backend/eigen/evaluate.hpp"
#include "support/probe_backend.hpp"

namespace {

/// tr(ΔW) for any backend's expression.
template <class E>
auto trace_of(const E& e) {
  decltype(auto) f = lola::detail::evaluator::factors(e);
#ifdef LOLA_SEAM_BYPASS
  return f.scale() * (f.B() * f.A()).trace();
#else
  using lola::detail::frobenius_dot;
  return f.scale() * frobenius_dot(f.B(), f.A().transpose());
#endif
}

}  // namespace

int main() {
  const lola_test::probe::matrix<float> B(6, 2), A(2, 6);
  return trace_of(lola::factor(B.as_view(), A.as_view())) == 0 ? 0 : 1;
}
