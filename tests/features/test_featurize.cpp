// Featurization for LoL datasets: the layout and values of every kind against computations written
// here from the definitions, the invariance of each kind, fold_scale, and every error path.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/SVD>

#include "lola/features/featurize.hpp"
#include "lola/lola.hpp"
#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {

namespace io = lola::io;

struct module_spec {
  std::string name;
  int d, k, r;
};

// The modules in file order, which is not the layout order.
const std::vector<module_spec> specs = {
    {"base_model.model.layers.1.q_proj", 6, 5, 3},
    {"x", 4, 7, 2},
    {"base_model.model.layers.0.v_proj", 3, 8, 2},
    {"x-y", 5, 3, 2},
};

// The layout order, by hand: the A-factor keys "<name>.lora_A.weight" sorted bytewise. '-' (0x2D)
// sorts before '.' (0x2E), so the key of "x-y" precedes the key of "x" although the name "x"
// precedes the name "x-y".
const std::vector<std::string> layout_names = {"base_model.model.layers.0.v_proj",
                                               "base_model.model.layers.1.q_proj", "x-y", "x"};

const module_spec& spec_of(const std::string& name) {
  return *std::find_if(specs.begin(), specs.end(), [&](const module_spec& s) { return s.name == name; });
}

/// A PEFT adapter with Gaussian factors; extra_rank is added to every module's rank.
template <class T>
io::adapter<T> random_adapter(std::mt19937_64& rng, int extra_rank = 0) {
  io::adapter<T> a;
  a.format = io::adapter_format::peft;
  for (const auto& s : specs)
    a.modules.push_back(lola_test::make_module<T>(s.name, gaussian<T>(s.d, s.r + extra_rank, rng),
                                                  gaussian<T>(s.r + extra_rank, s.k, rng)));
  return a;
}

template <class T>
const io::adapter_module<T>& module_of(const io::adapter<T>& a, const std::string& name) {
  const auto* m = a.find(name);
  REQUIRE(m != nullptr);
  return *m;
}

/// Appends M row by row: vec_rowmajor(M), torch's .flatten().
void append_rows(std::vector<double>& row, const matrix_d& M) {
  for (Eigen::Index i = 0; i < M.rows(); ++i)
    for (Eigen::Index j = 0; j < M.cols(); ++j) row.push_back(M(i, j));
}

Eigen::RowVectorXd to_row(const std::vector<double>& v) {
  return Eigen::Map<const Eigen::RowVectorXd>(v.data(), Eigen::Index(v.size()));
}

/// Column offsets of the blocks in layout order, from per-module sizes.
std::vector<Eigen::Index> offsets_of(const std::function<Eigen::Index(const module_spec&)>& size) {
  std::vector<Eigen::Index> out;
  Eigen::Index offset = 0;
  for (const auto& name : layout_names) {
    out.push_back(offset);
    offset += size(spec_of(name));
  }
  out.push_back(offset);  // F
  return out;
}

// |σᵢ − σᵢ(B·A)| for the factor-space SVD in T (test_low_rank_svd.cpp): two triangular factors, the
// r×r core and its SVD, at most 16 times the Householder bound on the Gram route, by Weyl.
template <class T>
double svd_tolerance(int d, int k, int r, double norm_product) {
  return 16.0 * product_tolerance<T>(d + k + r, norm_product);
}

// The GL action's own error in ΔW, 8·r·ε·cond(G)·‖B‖‖A‖ (test_group_action.cpp).
template <class T>
double action_tolerance(int r, double cond, double norm_product) {
  return 8.0 * r * eps<T>() * cond * norm_product;
}

// How far canonical factors move under rounding of size η·σ₁ in ΔW (test_canonical_form.cpp): each
// singular vector turns by η/gap (Wedin), each column of B* has norm column_norm, r columns, and a
// factor 4 for the √Σ and V sides.
template <class T>
double canonical_tolerance(int d, int k, int r, double cond, double norm_product, double sigma1,
                           double gap, double column_norm) {
  const double eta = (8.0 * r + 32.0 * (d + k + r + 2)) * eps<T>() * cond * norm_product / sigma1;
  return 4.0 * std::sqrt(double(r)) * eta / gap * column_norm;
}

// O-Align of X = [B; Aᵀ] to T̄ = [B̄; Āᵀ] is X·Q with Q = polar(M), M = XᵀT̄. Rounding perturbs M by
// γ_{d+k}·‖X‖‖T̄‖ (the product), γ_r·‖M‖ ≤ γ_r·‖X‖‖T̄‖ (the backward error of the r×r SVD) and
// ‖δX‖·‖T̄‖ for an error δX already in the input; the polar factor then moves by at most
// 2·‖δM‖_F/σ_r(M) (R.-C. Li 1995), which X carries into the row, and X·Q adds γ_r·‖X‖·√r. Two
// computed rows are compared, each that far from the exact one, plus δX itself.
template <class T>
double align_tolerance(int d, int k, int r, double norm_x, double norm_t, double sigma_r,
                       double input_error) {
  const double dM = product_tolerance<T>(d + k + r, norm_x * norm_t) + input_error * norm_t;
  return 2.0 * (2.0 * norm_x * dM / sigma_r + product_tolerance<T>(r, std::sqrt(double(r)) * norm_x)) +
         input_error;
}

/// The singular values of B·A in double, zero-padded or truncated to n.
Eigen::VectorXd reference_sigma(const matrix_d& B, const matrix_d& A, Eigen::Index n) {
  const Eigen::VectorXd all = Eigen::BDCSVD<matrix_d>(B * A).singularValues();
  Eigen::VectorXd out = Eigen::VectorXd::Zero(n);
  const Eigen::Index m = std::min(n, all.size());
  out.head(m) = all.head(m);
  return out;
}

struct canonical_reference {
  matrix_d U, V;  // the row's blocks: B* (d×r) and A*ᵀ (k×r)
  double sigma1 = 0, gap = 0;
};

/// The canonical factors from the dense SVD in double, with the sign rule of canonical_form.hpp:
/// each column of U has its largest-magnitude entry (first of ties) positive.
canonical_reference reference_canonical(const matrix_d& B, const matrix_d& A, lola::canonical_form form) {
  const Eigen::Index r = B.cols();
  const Eigen::BDCSVD<matrix_d> svd(B * A, Eigen::ComputeThinU | Eigen::ComputeThinV);
  matrix_d U = svd.matrixU().leftCols(r), V = svd.matrixV().leftCols(r);
  const Eigen::VectorXd sigma = svd.singularValues().head(r);
  for (Eigen::Index j = 0; j < r; ++j) {
    Eigen::Index best = 0;
    for (Eigen::Index i = 1; i < U.rows(); ++i)
      if (std::abs(U(i, j)) > std::abs(U(best, j))) best = i;
    if (U(best, j) < 0) {
      U.col(j) *= -1.0;
      V.col(j) *= -1.0;
    }
  }
  canonical_reference out;
  out.sigma1 = sigma(0);
  out.gap = 1.0;
  for (Eigen::Index i = 0; i + 1 < r; ++i) out.gap = std::min(out.gap, (sigma(i) - sigma(i + 1)) / sigma(0));
  if (form == lola::canonical_form::balanced) {
    out.U = U * sigma.cwiseSqrt().asDiagonal();
    out.V = V * sigma.cwiseSqrt().asDiagonal();
  } else {
    out.U = U * sigma.asDiagonal();
    out.V = V;
  }
  return out;
}

/// (B·G, G⁻¹·A) for module j of `a` with an independent G_j drawn by `draw(r)` (T factors).
template <class T, class Draw>
io::adapter<T> moved(const io::adapter<T>& a, Draw draw, bool orthogonal) {
  io::adapter<T> out = a;
  for (auto& m : out.modules) {
    const matrix<T> G = draw(m.rank());
    const matrix<T> B = m.B, A = m.A;
    const auto f = orthogonal ? lola::eval(lola::act_orthogonal(lola::factor(B, A), G))
                              : lola::eval(lola::act(lola::factor(B, A), G));
    m.B = f.B();
    m.A = f.A();
  }
  return out;
}

/// what() of the lola::error `f` throws, its code checked; empty when it throws none.
template <class F>
std::string error_of(F&& f, lola::error_code code) {
  try {
    f();
  } catch (const lola::error& e) {
    CHECK_MESSAGE(e.code() == code, e.what());
    return e.what();
  }
  FAIL_CHECK("no lola::error thrown");
  return {};
}

using lola_test::contains;

}  // namespace

TEST_SUITE("features.featurize") {
  TEST_CASE("kind names round-trip") {
    for (auto kind : {lola::feature_kind::raw, lola::feature_kind::svd, lola::feature_kind::dense,
                      lola::feature_kind::align, lola::feature_kind::canonical})
      CHECK(lola::parse_feature_kind(lola::to_string(kind)) == kind);
    CHECK_FALSE(lola::parse_feature_kind("o-align").has_value());
    CHECK_FALSE(lola::parse_feature_kind("").has_value());
  }

  TEST_CASE_TEMPLATE("raw: torch.cat([u_1, v_1, …]).flatten() in sorted-key order, matched by name",
                     T, float, double) {
    std::mt19937_64 rng(601);
    const io::adapter<T> a0 = random_adapter<T>(rng);
    io::adapter<T> a1 = random_adapter<T>(rng);
    std::reverse(a1.modules.begin(), a1.modules.end());  // another file order, the same names

    // The helper of io/ agrees with the order written out above.
    std::vector<std::string> io_order;
    for (auto i : io::lexicographic_module_order(a0)) io_order.push_back(a0.modules[i].name);
    CHECK(io_order == layout_names);

    lola::featurize_options<T> options;
    options.kind = lola::feature_kind::raw;
    const auto F = lola::featurize<T>({&a0, &a1}, options);
    const auto offsets = offsets_of([](const module_spec& s) { return Eigen::Index(s.d + s.k) * s.r; });
    REQUIRE(F.rows() == 2);
    REQUIRE(F.cols() == offsets.back());
    for (const io::adapter<T>* a : {&a0, static_cast<const io::adapter<T>*>(&a1)}) {
      std::vector<double> expected;
      for (const auto& name : layout_names) {
        const auto& m = module_of(*a, name);
        append_rows(expected, in_double(m.B));              // u_j = B (d×r)
        append_rows(expected, in_double(m.A).transpose());  // v_j = Aᵀ (k×r)
      }
      // A copy: exact.
      CHECK(in_double(F.row(a == &a0 ? 0 : 1)) == to_row(expected));
    }

    const auto blocks = lola::feature_layout(a0, options);
    REQUIRE(blocks.size() == layout_names.size());
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      const auto& s = spec_of(layout_names[j]);
      CHECK(blocks[j].name == layout_names[j]);
      CHECK(blocks[j].offset == offsets[j]);
      CHECK(blocks[j].size == offsets[j + 1] - offsets[j]);
      CHECK(blocks[j].rows == s.d);
      CHECK(blocks[j].cols == s.k);
      CHECK(blocks[j].rank == s.r);
    }

    // featurize_into a block of a larger buffer gives the same rows.
    lola::feature_matrix<T> buffer = lola::feature_matrix<T>::Zero(4, F.cols());
    lola::featurize_into<T>({&a0, &a1}, options, buffer.middleRows(1, 2));
    CHECK(buffer.middleRows(1, 2) == F);
    CHECK(buffer.row(0).isZero(0));
    CHECK(buffer.row(3).isZero(0));

    // Batches against one layout: the first adapter fixes it and checks the others without being
    // featurized again, and messages name it as the layout does.
    const lola::feature_table_layout<T> layout = lola::table_layout(a0, options);
    CHECK(layout.features() == F.cols());
    CHECK(layout.first_name == "adapter 0");
    lola::feature_matrix<T> second(1, F.cols());
    lola::featurize_into(layout, {&a1}, options, second);
    CHECK(second == F.row(1));
    io::adapter<T> short_one = a1;
    const std::string dropped = short_one.modules.back().name;
    short_one.modules.pop_back();
    lola::featurize_options<T> named = options;
    named.indices = {7};
    named.labels = {"b.safetensors"};
    const std::string why = error_of([&] { lola::featurize_into(layout, {&short_one}, named, second); },
                                     lola::error_code::invalid_argument);
    CHECK(why.find("adapter 7 (b.safetensors) lacks module '" + dropped + "' of adapter 0") != std::string::npos);
  }

  TEST_CASE_TEMPLATE("svd: σ of every module, padded or truncated; any rank accepted", T, float,
                     double) {
    std::mt19937_64 rng(602);
    const io::adapter<T> a0 = random_adapter<T>(rng);
    io::adapter<T> a1 = random_adapter<T>(rng, 2);  // ranks 4 and 5: truncated to a0's by default
    std::rotate(a1.modules.begin(), a1.modules.begin() + 1, a1.modules.end());
    for (lola::index rank : {-1, 1, 5}) {
      CAPTURE(rank);
      lola::featurize_options<T> options;  // svd is the default kind
      options.rank = rank;
      const auto F = lola::featurize<T>({&a0, &a1}, options);
      const auto offsets = offsets_of([&](const module_spec& s) { return Eigen::Index(rank < 0 ? s.r : rank); });
      REQUIRE(F.cols() == offsets.back());
      for (int i = 0; i < 2; ++i) {
        const auto& a = i == 0 ? a0 : a1;
        for (std::size_t j = 0; j < layout_names.size(); ++j) {
          const auto& m = module_of(a, layout_names[j]);
          const Eigen::Index R = offsets[j + 1] - offsets[j];
          const Eigen::RowVectorXd got = in_double(F.row(i).segment(offsets[j], R));
          const Eigen::VectorXd want = reference_sigma(in_double(m.B), in_double(m.A), R);
          const double np = in_double(m.B).norm() * in_double(m.A).norm();
          CHECK((got.transpose() - want).cwiseAbs().maxCoeff() <=
                svd_tolerance<T>(int(m.rows()), int(m.cols()), int(m.rank()), np));
          // Beyond min(d, k, r) the padding is exactly zero.
          const Eigen::Index p = std::min({m.rows(), m.cols(), m.rank()});
          if (R > p) CHECK(got.tail(R - p).isZero(0));
        }
      }
    }
  }

  TEST_CASE_TEMPLATE("dense: vec_rowmajor(B·A) per module; any rank accepted", T, float, double) {
    std::mt19937_64 rng(603);
    const io::adapter<T> a0 = random_adapter<T>(rng);
    const io::adapter<T> a1 = random_adapter<T>(rng, 1);
    lola::featurize_options<T> options;
    options.kind = lola::feature_kind::dense;
    const auto F = lola::featurize<T>({&a0, &a1}, options);
    const auto offsets = offsets_of([](const module_spec& s) { return Eigen::Index(s.d) * s.k; });
    REQUIRE(F.cols() == offsets.back());
    for (int i = 0; i < 2; ++i) {
      const auto& a = i == 0 ? a0 : a1;
      std::vector<double> expected;
      for (const auto& name : layout_names) {
        const auto& m = module_of(a, name);
        append_rows(expected, in_double(m.B) * in_double(m.A));
      }
      const Eigen::RowVectorXd want = to_row(expected);
      for (std::size_t j = 0; j < layout_names.size(); ++j) {
        const auto& m = module_of(a, layout_names[j]);
        const Eigen::Index size = offsets[j + 1] - offsets[j];
        // One product with r-term inner products (Higham §3.5).
        const double tolerance =
            product_tolerance<T>(double(m.rank()), in_double(m.B).norm() * in_double(m.A).norm());
        CHECK((in_double(F.row(i).segment(offsets[j], size)) - want.segment(offsets[j], size)).norm() <=
              tolerance);
      }
    }
  }

  TEST_CASE_TEMPLATE("svd, dense and canonical rows are unchanged by an independent GL(r) element per "
                     "module, cond up to 1e3; raw rows move",
                     T, float, double) {
    std::mt19937_64 rng(604);
    const io::adapter<T> a = random_adapter<T>(rng);
    for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
      CAPTURE(cond);
      const io::adapter<T> g = moved(a, [&](lola::index r) { return lola::random_gl<T>(r, cond, rng); }, false);
      const auto features = [&](lola::feature_kind kind) {
        lola::featurize_options<T> options;
        options.kind = kind;
        return lola::featurize<T>({&a, &g}, options);
      };
      const auto svd = features(lola::feature_kind::svd);
      const auto dense = features(lola::feature_kind::dense);
      const auto canonical = features(lola::feature_kind::canonical);
      const auto raw = features(lola::feature_kind::raw);
      const auto svd_at = offsets_of([](const module_spec& s) { return Eigen::Index(s.r); });
      const auto dense_at = offsets_of([](const module_spec& s) { return Eigen::Index(s.d) * s.k; });
      const auto factor_at = offsets_of([](const module_spec& s) { return Eigen::Index(s.d + s.k) * s.r; });
      for (std::size_t j = 0; j < layout_names.size(); ++j) {
        const auto& m = module_of(a, layout_names[j]);
        const int d = int(m.rows()), k = int(m.cols()), r = int(m.rank());
        const double np = in_double(m.B).norm() * in_double(m.A).norm();
        const auto difference = [&](const auto& F, const std::vector<Eigen::Index>& at) {
          return (in_double(F.row(1).segment(at[j], at[j + 1] - at[j])) -
                  in_double(F.row(0).segment(at[j], at[j + 1] - at[j])))
              .norm();
        };
        // σ by Weyl: the action's error plus the SVD's on each side, the moved factors' norm product
        // grown by at most cond(G) (test_low_rank_svd.cpp).
        CHECK(difference(svd, svd_at) <=
              (action_tolerance<T>(r, 1.0, np) + 2.0 * svd_tolerance<T>(d, k, r, np)) * cond);
        // ΔW: the action's error plus one product on each side, (BG)(G⁻¹A) of norm ≤ cond(G)·‖B‖‖A‖.
        CHECK(difference(dense, dense_at) <=
              action_tolerance<T>(r, cond, np) + product_tolerance<T>(r, np) * (1.0 + cond));
        const auto ref = reference_canonical(in_double(m.B), in_double(m.A), lola::canonical_form::balanced);
        REQUIRE(ref.gap > 1e-3);
        CHECK(difference(canonical, factor_at) <=
              2.0 * canonical_tolerance<T>(d, k, r, cond, np, ref.sigma1, ref.gap, std::sqrt(ref.sigma1)));
        // The raw factors move by O(‖B‖ + ‖A‖), far beyond any of the tolerances above.
        CHECK(difference(raw, factor_at) > 0.1 * (in_double(m.B).norm() + in_double(m.A).norm()));
      }
    }
  }

  TEST_CASE_TEMPLATE("canonical: the balanced and left forms of the dense SVD with the sign rule", T,
                     float, double) {
    std::mt19937_64 rng(605);
    const io::adapter<T> a = random_adapter<T>(rng);
    const auto at = offsets_of([](const module_spec& s) { return Eigen::Index(s.d + s.k) * s.r; });
    for (auto form : {lola::canonical_form::balanced, lola::canonical_form::left}) {
      lola::featurize_options<T> options;
      options.kind = lola::feature_kind::canonical;
      options.form = form;
      const auto F = lola::featurize<T>({&a}, options);
      for (std::size_t j = 0; j < layout_names.size(); ++j) {
        const auto& m = module_of(a, layout_names[j]);
        const int d = int(m.rows()), k = int(m.cols()), r = int(m.rank());
        const auto ref = reference_canonical(in_double(m.B), in_double(m.A), form);
        REQUIRE(ref.gap > 1e-3);
        const bool balanced = form == lola::canonical_form::balanced;
        const double tolerance =
            canonical_tolerance<T>(d, k, r, 1.0, in_double(m.B).norm() * in_double(m.A).norm(),
                                   ref.sigma1, ref.gap, balanced ? std::sqrt(ref.sigma1) : ref.sigma1);
        std::vector<double> U, V;
        append_rows(U, ref.U);
        append_rows(V, ref.V);
        CHECK((in_double(F.row(0).segment(at[j], d * r)) - to_row(U)).norm() <= tolerance);
        CHECK((in_double(F.row(0).segment(at[j] + d * r, k * r)) - to_row(V)).norm() <=
              tolerance * (balanced ? 1.0 : 1.0 / ref.sigma1));
        // The table's items are decomposed batched by rank: each is canonicalize's result for the
        // module alone, bit for bit (U row-major, then V = A*ᵀ row-major).
        const auto alone = lola::canonicalize(lola::factor(m.B, m.A), form).factors;
        const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> u = alone.B(), v = alone.A().transpose();
        CHECK((F.row(0).segment(at[j], d * r).array() == Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(u.data(), d * r).array()).all());
        CHECK((F.row(0).segment(at[j] + d * r, k * r).array() == Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(v.data(), k * r).array()).all());
      }
    }
  }

  TEST_CASE_TEMPLATE("align: Procrustes to the template; unchanged under O(r), changed by GL(r)", T,
                     float, double) {
    std::mt19937_64 rng(606);
    const io::adapter<T> a = random_adapter<T>(rng);
    io::adapter<T> templ = random_adapter<T>(rng);
    templ.modules.push_back(
        lola_test::make_module<T>("only.in.template", gaussian<T>(2, 1, rng), gaussian<T>(1, 2, rng)));
    const auto at = offsets_of([](const module_spec& s) { return Eigen::Index(s.d + s.k) * s.r; });
    for (int trial = 0; trial < 3; ++trial) {
      const io::adapter<T> o = moved(a, [&](lola::index r) { return lola::random_orthogonal<T>(r, rng); }, true);
      const io::adapter<T> g = moved(a, [&](lola::index r) { return lola::random_gl<T>(r, 10.0, rng); }, false);
      lola::featurize_options<T> options;
      options.kind = lola::feature_kind::align;
      options.templ = &templ;
      const auto F = lola::featurize<T>({&a, &o, &g}, options);
      for (std::size_t j = 0; j < layout_names.size(); ++j) {
        const auto& m = module_of(a, layout_names[j]);
        const auto& t = module_of(templ, layout_names[j]);
        const int d = int(m.rows()), k = int(m.cols()), r = int(m.rank());
        // The direct computation: X = [B; Aᵀ], T̄ = [B̄; Āᵀ], M = XᵀT̄ = P·Σ·Sᵀ, Q = P·Sᵀ, row X·Q.
        matrix_d X(d + k, r), Tb(d + k, r);
        X << in_double(m.B), in_double(m.A).transpose();
        Tb << in_double(t.B), in_double(t.A).transpose();
        const Eigen::JacobiSVD<matrix_d> svd(X.transpose() * Tb, Eigen::ComputeFullU | Eigen::ComputeFullV);
        const matrix_d XQ = X * svd.matrixU() * svd.matrixV().transpose();
        std::vector<double> expected;
        append_rows(expected, XQ);  // the U rows (d×r) then the V rows (k×r): vec_rowmajor of X·Q
        const double sigma_r = svd.singularValues()(r - 1);
        REQUIRE(sigma_r > 1e-3 * svd.singularValues()(0));
        const auto block = [&](int i) { return in_double(F.row(i).segment(at[j], (d + k) * r)); };
        CHECK((block(0) - to_row(expected)).norm() <=
              align_tolerance<T>(d, k, r, X.norm(), Tb.norm(), sigma_r, 0.0));
        // Q₀ ∈ O(r) rounded to T (orthogonal to ε·√r) and applied in T: the input error.
        const double input_error = product_tolerance<T>(r + std::sqrt(double(r)), std::sqrt(double(r)) * X.norm());
        const double tolerance = align_tolerance<T>(d, k, r, X.norm(), Tb.norm(), sigma_r, input_error);
        CHECK((block(1) - block(0)).norm() <= tolerance);
        // A general G moves the representative: the same check fails.
        CHECK((block(2) - block(0)).norm() > tolerance);
        CHECK((block(2) - block(0)).norm() > 1e-2 * X.norm());
      }
    }
  }

  TEST_CASE_TEMPLATE("fold_scale: U = s·B for raw, align and canonical; σ and dense of s·B·A", T,
                     float, double) {
    std::mt19937_64 rng(607);
    io::adapter<T> a = random_adapter<T>(rng);
    const double scales[] = {0.75, 1.5, 0.25, 3.0};  // in file order, each exact in T
    for (std::size_t i = 0; i < a.modules.size(); ++i) a.modules[i].scale = scales[i];
    const io::adapter<T> templ = random_adapter<T>(rng);
    for (auto kind : {lola::feature_kind::raw, lola::feature_kind::align, lola::feature_kind::canonical,
                      lola::feature_kind::svd, lola::feature_kind::dense}) {
      CAPTURE(lola::to_string(kind));
      lola::featurize_options<T> options;
      options.kind = kind;
      options.templ = &templ;
      const auto plain = lola::featurize<T>({&a}, options);
      options.fold_scale = true;
      const auto folded = lola::featurize<T>({&a}, options);
      const auto blocks = lola::feature_layout(a, options);
      for (const auto& b : blocks) {
        const auto& m = module_of(a, b.name);
        const double s = m.scale, np = in_double(m.B).norm() * in_double(m.A).norm();
        const Eigen::RowVectorXd p = in_double(plain.row(0).segment(b.offset, b.size));
        const Eigen::RowVectorXd f = in_double(folded.row(0).segment(b.offset, b.size));
        if (kind == lola::feature_kind::svd) {
          // Both are σ computed in T, of B·A and of s·B·A.
          CHECK((f - s * p).cwiseAbs().maxCoeff() <=
                2.0 * s * svd_tolerance<T>(int(b.rows), int(b.cols), int(b.rank), np));
        } else if (kind == lola::feature_kind::dense) {
          CHECK((f - s * p).norm() <= 2.0 * product_tolerance<T>(double(b.rank), s * np));
        } else {
          // The kind's factors do not depend on s; U is multiplied by s once (one rounding), V never.
          const Eigen::Index du = b.rows * b.rank;
          CHECK(((f.head(du) - s * p.head(du)).cwiseAbs() - eps<T>() * (s * p.head(du)).cwiseAbs())
                    .maxCoeff() <= 0.0);
          CHECK(f.tail(b.size - du) == p.tail(b.size - du));
        }
      }
      if (kind == lola::feature_kind::raw) {  // and against the definition
        for (const auto& b : blocks) {
          const auto& m = module_of(a, b.name);
          const matrix_d sB = m.scale * in_double(m.B);
          std::vector<double> u;
          append_rows(u, sB);
          CHECK((in_double(folded.row(0).segment(b.offset, b.rows * b.rank)) - to_row(u)).cwiseAbs().maxCoeff() <=
                eps<T>() * sB.cwiseAbs().maxCoeff());
        }
      }
    }
  }

  TEST_CASE_TEMPLATE("rows do not depend on the batch: parallel items write their own blocks", T,
                     float, double) {
    std::mt19937_64 rng(608);
    std::vector<io::adapter<T>> batch;
    for (int i = 0; i < 9; ++i) batch.push_back(random_adapter<T>(rng));
    const io::adapter<T> templ = random_adapter<T>(rng);
    for (auto kind : {lola::feature_kind::raw, lola::feature_kind::svd, lola::feature_kind::dense,
                      lola::feature_kind::align, lola::feature_kind::canonical}) {
      CAPTURE(lola::to_string(kind));
      lola::featurize_options<T> options;
      options.kind = kind;
      options.templ = &templ;
      std::vector<const io::adapter<T>*> pointers;
      for (const auto& a : batch) pointers.push_back(&a);
      const auto all = lola::featurize(pointers, options);
      REQUIRE(all.rows() == 9);
      for (int i = 0; i < 9; ++i) CHECK(all.row(i) == lola::featurize<T>({&batch[std::size_t(i)]}, options));
    }
  }

  TEST_CASE("empty inputs: no adapters is 0x0, adapters without modules are N x 0") {
    lola::featurize_options<double> options;
    CHECK(lola::featurize<double>({}, options).size() == 0);
    const io::adapter<double> empty;
    const auto F = lola::featurize<double>({&empty, &empty}, options);
    CHECK(F.rows() == 2);
    CHECK(F.cols() == 0);
  }

  TEST_CASE("every error is a lola::error naming the adapter, the module and both shapes") {
    std::mt19937_64 rng(609);
    const io::adapter<double> a0 = random_adapter<double>(rng);
    const io::adapter<double> good = random_adapter<double>(rng);
    using lola::error_code;
    const auto run = [](std::vector<const io::adapter<double>*> adapters, lola::feature_kind kind,
                        const io::adapter<double>* templ = nullptr) {
      return [=] {
        lola::featurize_options<double> options;
        options.kind = kind;
        options.templ = templ;
        lola::featurize(adapters, options);
      };
    };
    const auto all_kinds = {lola::feature_kind::raw, lola::feature_kind::svd, lola::feature_kind::dense,
                            lola::feature_kind::align, lola::feature_kind::canonical};

    SUBCASE("module sets differ: missing, extra, duplicate") {
      io::adapter<double> missing = good;
      missing.modules.erase(missing.modules.begin() + 1);  // "x"
      io::adapter<double> extra = good;
      extra.modules.push_back(
          lola_test::make_module<double>("z", gaussian<double>(2, 2, rng), gaussian<double>(2, 2, rng)));
      io::adapter<double> twice = good;
      twice.modules.push_back(twice.modules[3]);  // "x-y"
      for (auto kind : all_kinds) {
        CAPTURE(lola::to_string(kind));
        std::string w = error_of(run({&a0, &missing}, kind, &good), error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "module 'x'"), w);
        CHECK_MESSAGE(contains(w, "adapter 1 lacks"), w);
        w = error_of(run({&a0, &extra}, kind, &good), error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "module 'z'"), w);
        CHECK_MESSAGE(contains(w, "adapter 1"), w);
        w = error_of(run({&a0, &twice}, kind, &good), error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "module 'x-y' twice"), w);
        w = error_of(run({&twice, &a0}, kind, &good), error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "module 'x-y' twice"), w);
        CHECK_MESSAGE(contains(w, "adapter 0"), w);
      }
    }

    SUBCASE("d or k differs, for every kind") {
      io::adapter<double> taller = good;
      auto& m = taller.modules[3];  // "x-y", 5x3
      m.B = gaussian<double>(6, 2, rng);
      for (auto kind : all_kinds) {
        CAPTURE(lola::to_string(kind));
        const std::string w = error_of(run({&a0, &taller}, kind, &good), error_code::shape_mismatch);
        for (const char* part : {"module 'x-y'", "5x3 rank 2", "6x3 rank 2", "adapter 0", "adapter 1"})
          CHECK_MESSAGE(contains(w, part), w);
      }
    }

    SUBCASE("r differs: raw, align and canonical refuse, svd and dense accept") {
      io::adapter<double> wider = good;
      auto& m = wider.modules[1];  // "x", 4x7 rank 2
      m.B = gaussian<double>(4, 3, rng);
      m.A = gaussian<double>(3, 7, rng);
      for (auto kind : {lola::feature_kind::raw, lola::feature_kind::align, lola::feature_kind::canonical}) {
        CAPTURE(lola::to_string(kind));
        const std::string w = error_of(run({&a0, &wider}, kind, &good), error_code::shape_mismatch);
        for (const char* part : {"module 'x'", "4x7 rank 2", "4x7 rank 3", "adapter 1"})
          CHECK_MESSAGE(contains(w, part), w);
      }
      CHECK_NOTHROW(run({&a0, &wider}, lola::feature_kind::svd)());
      CHECK_NOTHROW(run({&a0, &wider}, lola::feature_kind::dense)());
    }

    SUBCASE("align: the template is missing, lacks a module, or has another shape") {
      std::string w = error_of(run({&a0}, lola::feature_kind::align), error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "template"), w);
      io::adapter<double> lacking = good;
      lacking.modules.erase(lacking.modules.begin() + 3);  // "x-y"
      w = error_of(run({&a0}, lola::feature_kind::align, &lacking), error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "template lacks module 'x-y'"), w);
      io::adapter<double> other = good;
      other.modules[1].A = gaussian<double>(2, 9, rng);  // "x", 4x7 → 4x9
      w = error_of(run({&a0}, lola::feature_kind::align, &other), error_code::shape_mismatch);
      for (const char* part : {"module 'x'", "4x7 rank 2", "4x9 rank 2", "template"})
        CHECK_MESSAGE(contains(w, part), w);
    }

    SUBCASE("the size guard refuses before allocating and names the largest block") {
      lola::featurize_options<double> options;
      options.kind = lola::feature_kind::dense;
      const auto F = static_cast<std::uint64_t>(offsets_of([](const module_spec& s) { return Eigen::Index(s.d) * s.k; }).back());
      options.max_elements = 2 * F - 1;
      const std::string w =
          error_of([&] { lola::featurize<double>({&a0, &good}, options); }, error_code::invalid_argument);
      for (const char* part : {"max_elements", "module 'base_model.model.layers.1.q_proj'", "6x5"})
        CHECK_MESSAGE(contains(w, part), w);
      options.max_elements = 2 * F;
      CHECK(lola::featurize<double>({&a0, &good}, options).size() == std::int64_t(2 * F));
      // An svd length so large that the row length L·R overflows an index: refused, not wrapped
      // (one module's R alone fits; the second block's offset does not).
      options.kind = lola::feature_kind::svd;
      options.rank = std::numeric_limits<lola::index>::max() / 2 + 1;
      const std::string huge = error_of([&] { (void)lola::feature_layout(a0, options); }, error_code::invalid_argument);
      CHECK_MESSAGE(contains(huge, "more features than an index holds"), huge);
      CHECK_THROWS_AS(lola::featurize<double>({&a0}, options), lola::error);
    }

    SUBCASE("labels name the adapter; a wrong number of labels, a null pointer, a wrong output") {
      io::adapter<double> missing = good;
      missing.modules.pop_back();
      lola::featurize_options<double> options;
      options.labels = {"first.safetensors", "second.safetensors"};
      std::string w = error_of([&] { lola::featurize<double>({&a0, &missing}, options); },
                               error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "adapter 1 (second.safetensors) lacks module 'x-y'"), w);
      CHECK_MESSAGE(contains(w, "adapter 0 (first.safetensors)"), w);
      w = error_of([&] { lola::featurize<double>({&a0}, options); }, error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "2 labels for 1 adapters"), w);
      w = error_of(run({&a0, nullptr}, lola::feature_kind::svd), error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "adapter 1 is a null pointer"), w);
      lola::feature_matrix<double> out(2, 3);
      w = error_of([&] { lola::featurize_into<double>({&a0, &good}, {}, out); }, error_code::shape_mismatch);
      CHECK_MESSAGE(contains(w, "2x3"), w);
    }

    SUBCASE("indices number the adapters as in the caller's whole run, in every message") {
      // A batch cut from a longer run: the layout adapter (run index 7) first, then 64 and 66.
      io::adapter<double> missing = good, extra = good, twice = good, taller = good, bad = good;
      missing.modules.pop_back();  // lacks "x-y"
      extra.modules.push_back(
          lola_test::make_module<double>("z", gaussian<double>(2, 2, rng), gaussian<double>(2, 2, rng)));
      twice.modules.push_back(twice.modules[3]);
      taller.modules[3].B = gaussian<double>(6, 2, rng);  // "x-y" 5x3 -> 6x3
      bad.modules[1].B(0, 0) = std::nan("");              // "x"
      lola::featurize_options<double> options;
      options.indices = {7, 64, 66};
      options.labels = {"a.safetensors", "b.safetensors", ""};
      const auto message = [&](const io::adapter<double>& third, lola::feature_kind kind, error_code code) {
        options.kind = kind;
        options.templ = kind == lola::feature_kind::align ? &good : nullptr;
        return error_of([&] { lola::featurize<double>({&a0, &good, &third}, options); }, code);
      };
      for (auto kind : all_kinds) {
        CAPTURE(lola::to_string(kind));
        std::string w = message(missing, kind, error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "adapter 66 lacks module 'x-y' of adapter 7 (a.safetensors)"), w);
        w = message(extra, kind, error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "adapter 66 has module 'z', which adapter 7 (a.safetensors) lacks"), w);
        w = message(twice, kind, error_code::invalid_argument);
        CHECK_MESSAGE(contains(w, "adapter 66 has module 'x-y' twice"), w);
        w = message(taller, kind, error_code::shape_mismatch);
        CHECK_MESSAGE(contains(w, "in adapter 7 (a.safetensors) but 6x3 rank 2 in adapter 66"), w);
        // The positions within the batch (0, 2) appear nowhere.
        CHECK_MESSAGE(!contains(w, "adapter 0"), w);
        CHECK_MESSAGE(!contains(w, "adapter 2"), w);
      }
      std::string w = message(bad, lola::feature_kind::svd, error_code::numerical);
      CHECK_MESSAGE(contains(w, "module 'x' (4x7 rank 2) of adapter 66: "), w);
      // The layout adapter's own faults, and a null pointer, by its index too.
      w = error_of([&] { lola::featurize<double>({&twice, &good, &good}, options); }, error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "adapter 7 (a.safetensors) has module 'x-y' twice"), w);
      w = error_of([&] { lola::featurize<double>({&a0, nullptr, &good}, options); }, error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "adapter 64 (b.safetensors) is a null pointer"), w);
      // Indices, like labels, are none or one per adapter.
      options.labels.pop_back();
      w = error_of([&] { lola::featurize<double>({&a0, &good}, options); }, error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "3 indices for 2 adapters"), w);
      options.labels.clear();
      options.indices.clear();
      w = message(missing, lola::feature_kind::svd, error_code::invalid_argument);
      CHECK_MESSAGE(contains(w, "adapter 2 lacks module 'x-y' of adapter 0"), w);
    }

    SUBCASE("a numerical failure inside a module names the module and the adapter") {
      io::adapter<double> bad = good;
      bad.modules[1].B(0, 0) = std::nan("");  // "x"
      const std::string w = error_of(run({&a0, &bad}, lola::feature_kind::svd), error_code::numerical);
      for (const char* part : {"module 'x'", "adapter 1", "not finite"}) CHECK_MESSAGE(contains(w, part), w);
    }
  }
}
