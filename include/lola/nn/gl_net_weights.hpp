#pragma once
/// @file
/// GL-net weights in safetensors, under the names and shapes of the LoL reference code's
/// state_dict (models_metanet.GLInvariantMLP and diffusion GLInvariantMLP, head_type 1), so a model
/// trained in PyTorch and saved with safetensors.torch.save_file(model.state_dict(), …) loads here:
///   equiv_mlp.first_layer.{j}.w_1              Φ_j, h×n_j          j = 0 … L−1
///   equiv_mlp.first_layer.{j}.w_2              Ψ_j, h×m_j
///   equiv_mlp.equivariant_layers_u.{i}         Φ⁽ⁱ⁺²⁾, L×h×h       i = 0 … K−2
///   equiv_mlp.equivariant_layers_v.{i}         Ψ⁽ⁱ⁺²⁾, L×h×h
///   invariant_head.linear1.weight / .bias      H×F and H, F = L·h² (flatten) or L (mean pooling)
///   invariant_head.ln1.weight / .bias          H
///   invariant_head.linear2.weight / .bias      out×H and out
/// K, h, H, out and the pooling are read off the shapes (h = 1 makes flatten and mean the same).
/// Two kinds of key the reference saves but never uses in its forward pass are accepted and
/// listed in `ignored_keys`: equiv_mlp.norms.{i}.scale_u / scale_v (GLNorm, commented out) and
/// invariant_head.invariant_outputs.{j}.x (an unused parameter). Any other key, a missing key, a
/// gap in the numbering, a wrong shape or a non-finite value is a lola::error naming the file and
/// the key. Weights in F32, F64, F16 or BF16 are converted to S.

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lola/io/safetensors.hpp"
#include "lola/nn/gl_net.hpp"

namespace lola::nn {

template <class S>
struct gl_net_weights {
  gl_net<S> net;
  std::vector<std::string> ignored_keys;  ///< saved by the reference, unused by its forward pass
};

namespace detail {

/// "12" → 12; nullopt for anything but a canonical decimal below 10⁷ (no sign, no leading zero).
inline std::optional<index> parse_module_number(std::string_view s) {
  if (s.empty() || s.size() > 7 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  index v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

template <class S>
class gl_net_reader {
 public:
  explicit gl_net_reader(const io::safetensors_view& file) : file_(file) {}

  gl_net_weights<S> read() {
    sort_keys();
    gl_net_weights<S> out;
    out.ignored_keys = ignored_;
    auto& net = out.net;

    const index L = count(first_w1_, "equiv_mlp.first_layer.", ".w_1");
    if (L == 0) fail("equiv_mlp.first_layer.0.w_1", "is missing (no first-layer weights)");
    const index L2 = count(first_w2_, "equiv_mlp.first_layer.", ".w_2");
    if (L2 != L)
      fail(L2 > L ? key("equiv_mlp.first_layer.", L, ".w_1") : key("equiv_mlp.first_layer.", L2, ".w_2"),
           "is missing (every module needs w_1 and w_2)");
    std::vector<matrix<S>> phi, psi;
    index h = -1;
    for (index j = 0; j < L; ++j) {
      const auto* w1 = require(first_w1_, j, "equiv_mlp.first_layer.", ".w_1");
      const auto* w2 = require(first_w2_, j, "equiv_mlp.first_layer.", ".w_2");
      if (h < 0) h = dim(*w1, 2, 0);
      phi.push_back(read_matrix(*w1, {h, -1}));
      psi.push_back(read_matrix(*w2, {h, -1}));
    }
    net.first = equivariant_linear<S>(std::move(phi), std::move(psi));

    const index K1 = count(hidden_u_, "equiv_mlp.equivariant_layers_u.", "");
    const index K1_v = count(hidden_v_, "equiv_mlp.equivariant_layers_v.", "");
    if (K1_v != K1)
      fail(K1 < K1_v ? key("equiv_mlp.equivariant_layers_u.", K1, "") : key("equiv_mlp.equivariant_layers_v.", K1_v, ""),
           "is missing (equivariant_layers_u.{i} and equivariant_layers_v.{i} come in pairs)");
    for (index i = 0; i < K1; ++i) {
      const auto* u = require(hidden_u_, i, "equiv_mlp.equivariant_layers_u.", "");
      const auto* v = require(hidden_v_, i, "equiv_mlp.equivariant_layers_v.", "");
      net.hidden.emplace_back(read_stack(*u, L, h), read_stack(*v, L, h));
    }

    auto& head = net.head;
    const auto& w1 = head_tensor("invariant_head.linear1.weight");
    const index H = dim(w1, 2, 0), F = dim(w1, 2, 1);
    if (F == L * h * h)
      head.pool = pooling::flatten;
    else if (F == L)
      head.pool = pooling::mean;
    else
      fail(w1.name, "has " + std::to_string(F) + " columns; " + std::to_string(L) +
                        " modules of width " + std::to_string(h) + " need " + std::to_string(L * h * h) +
                        " (flattened P_j) or " + std::to_string(L) + " (mean pooling)");
    head.linear1_weight = read_matrix(w1, {H, F});
    head.linear1_bias = read_vector(head_tensor("invariant_head.linear1.bias"), H);
    head.norm_weight = read_vector(head_tensor("invariant_head.ln1.weight"), H);
    head.norm_bias = read_vector(head_tensor("invariant_head.ln1.bias"), H);
    const auto& w2 = head_tensor("invariant_head.linear2.weight");
    const index out_dim = dim(w2, 2, 0);
    head.linear2_weight = read_matrix(w2, {out_dim, H});
    head.linear2_bias = read_vector(head_tensor("invariant_head.linear2.bias"), out_dim);
    net.validate();
    return out;
  }

 private:
  using entries = std::map<index, const io::tensor_info*>;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw error(error_code::invalid_file, file_.source() + ": GL-net weights: \"" + key + "\" " + what);
  }

  static std::string key(const char* prefix, index i, const char* suffix) {
    return prefix + std::to_string(i) + suffix;
  }

  /// Files each key into its family, or fails on a key GL-net does not know.
  void sort_keys() {
    for (const auto& t : file_.tensors()) {
      const std::string_view n = t.name;
      if (numbered(n, "equiv_mlp.first_layer.", ".w_1", first_w1_, t) ||
          numbered(n, "equiv_mlp.first_layer.", ".w_2", first_w2_, t) ||
          numbered(n, "equiv_mlp.equivariant_layers_u.", "", hidden_u_, t) ||
          numbered(n, "equiv_mlp.equivariant_layers_v.", "", hidden_v_, t))
        continue;
      if (numbered(n, "equiv_mlp.norms.", ".scale_u", unused_, t) ||
          numbered(n, "equiv_mlp.norms.", ".scale_v", unused_, t) ||
          numbered(n, "invariant_head.invariant_outputs.", ".x", unused_, t)) {
        ignored_.push_back(t.name);
        continue;
      }
      static const char* const head_keys[] = {
          "invariant_head.linear1.weight", "invariant_head.linear1.bias", "invariant_head.ln1.weight",
          "invariant_head.ln1.bias",       "invariant_head.linear2.weight", "invariant_head.linear2.bias"};
      if (std::find(std::begin(head_keys), std::end(head_keys), n) != std::end(head_keys)) continue;
      fail(t.name, "is not a GL-net weight (expected the reference state_dict names equiv_mlp.first_layer.{j}."
                   "w_1/w_2, equiv_mlp.equivariant_layers_u/v.{i}, invariant_head.linear1/ln1/linear2.weight/"
                   "bias; a model with another head or a prefixed state_dict is not supported)");
    }
  }

  bool numbered(std::string_view n, std::string_view prefix, std::string_view suffix, entries& into,
                const io::tensor_info& t) {
    if (n.size() <= prefix.size() + suffix.size() || n.substr(0, prefix.size()) != prefix ||
        n.substr(n.size() - suffix.size()) != suffix)
      return false;
    const auto number = parse_module_number(n.substr(prefix.size(), n.size() - prefix.size() - suffix.size()));
    if (!number) return false;
    into[*number] = &t;  // names are unique in a validated file
    return true;
  }

  /// The count of a numbered family, which must be numbered 0 … count−1.
  index count(const entries& e, const char* prefix, const char* suffix) const {
    index expected = 0;
    for (const auto& [i, t] : e) {
      if (i != expected) fail(key(prefix, expected, suffix), "is missing (numbering must run 0, 1, 2, …)");
      ++expected;
    }
    return expected;
  }

  const io::tensor_info* require(const entries& e, index i, const char* prefix, const char* suffix) const {
    const auto it = e.find(i);
    if (it == e.end()) fail(key(prefix, i, suffix), "is missing");
    return it->second;
  }

  const io::tensor_info& head_tensor(const char* name) const {
    const auto* t = file_.find(name);
    if (!t) fail(name, "is missing");
    return *t;
  }

  /// Dimension `which` of a tensor that must have `dims` dimensions, each ≥ 1.
  index dim(const io::tensor_info& t, std::size_t dims, std::size_t which) const {
    if (t.shape.size() != dims)
      fail(t.name, "has shape " + io::shape_to_string(t.shape) + ", expected " + std::to_string(dims) + " dimensions");
    for (auto d : t.shape)
      if (d == 0 || d > static_cast<std::uint64_t>(1) << 40) fail(t.name, "has shape " + io::shape_to_string(t.shape));
    return static_cast<index>(t.shape[which]);
  }

  /// data: t converted to S. Names the element and what the file holds there.
  void require_finite(const io::tensor_info& t, const S* data, index n) const {
    const std::size_t bad = io::detail::first_non_finite(data, static_cast<std::size_t>(n));
    if (bad < static_cast<std::size_t>(n))
      fail(t.name, "holds a non-finite value at element " + std::to_string(bad) + ": " +
                       io::describe_non_finite(file_.bytes(t), t.dtype, bad));
  }

  /// A 2-D tensor of the expected shape (−1: any), as a column-major matrix.
  matrix<S> read_matrix(const io::tensor_info& t, std::pair<index, index> expected) const {
    const index rows = dim(t, 2, 0), cols = dim(t, 2, 1);
    if ((expected.first >= 0 && rows != expected.first) || (expected.second >= 0 && cols != expected.second))
      fail(t.name, "has shape " + io::shape_to_string(t.shape) + ", expected [" +
                       (expected.first >= 0 ? std::to_string(expected.first) : "*") + ", " +
                       (expected.second >= 0 ? std::to_string(expected.second) : "*") + "]");
    const auto m = file_.matrix<S>(t, rows, cols);
    require_finite(t, m.data(), m.size());
    return m;
  }

  vector<S> read_vector(const io::tensor_info& t, index n) const {
    if (dim(t, 1, 0) != n)
      fail(t.name, "has shape " + io::shape_to_string(t.shape) + ", expected [" + std::to_string(n) + "]");
    vector<S> v = file_.matrix<S>(t, n, 1);
    require_finite(t, v.data(), n);
    return v;
  }

  /// An L×h×h stack, one h×h weight per module.
  std::vector<matrix<S>> read_stack(const io::tensor_info& t, index L, index h) const {
    if (dim(t, 3, 0) != L || dim(t, 3, 1) != h || dim(t, 3, 2) != h)
      fail(t.name, "has shape " + io::shape_to_string(t.shape) + ", expected [" + std::to_string(L) + ", " +
                       std::to_string(h) + ", " + std::to_string(h) + "] (modules × h × h)");
    const auto all = file_.matrix<S>(t, L * h, h);
    require_finite(t, all.data(), all.size());
    std::vector<matrix<S>> out;
    for (index j = 0; j < L; ++j) out.push_back(all.middleRows(j * h, h));
    return out;
  }

  const io::safetensors_view& file_;
  entries first_w1_, first_w2_, hidden_u_, hidden_v_, unused_;
  std::vector<std::string> ignored_;
};

}  // namespace detail

/// Reads GL-net weights from a validated safetensors image (see the file comment).
template <class S>
gl_net_weights<S> read_gl_net(const io::safetensors_view& file) {
  return detail::gl_net_reader<S>(file).read();
}

/// The largest safetensors header of a GL-net weights file that load_gl_net reads: 16 MiB, the
/// cap on JSON configs (io::max_config_bytes). A GL-net has 2L + 2(K − 1) + 6 tensors of about
/// 100 header bytes each, so this holds networks of some 80,000 modules, while a hostile header
/// costs some 400 MB of parse memory (about 20 bytes per header byte) instead of some 2 GB under
/// the safetensors limit of 10⁸ bytes.
inline constexpr std::uint64_t max_gl_net_header_bytes = 16u << 20;

/// Reads (a regular file only, see io::file_bytes), validates and reads the GL-net weights file at
/// path. A header larger than options.max_header_bytes (default max_gl_net_header_bytes) is
/// error_code::invalid_file naming the file.
template <class S>
gl_net_weights<S> load_gl_net(const std::string& path,
                              const io::read_options& options = {max_gl_net_header_bytes}) {
  const auto file = io::safetensors_file::open(path, options);
  return read_gl_net<S>(file.view());
}

/// The network's tensors under the reference state_dict names, encoded as dtype t.
template <class S>
std::vector<io::tensor> gl_net_tensors(const gl_net<S>& net, io::dtype t = io::dtype::F32) {
  net.validate();
  using io::tensor;
  auto u64 = [](index v) { return static_cast<std::uint64_t>(v); };
  std::vector<tensor> out;
  const index L = net.modules(), h = net.hidden_size();
  for (index j = 0; j < L; ++j) {
    const std::string prefix = "equiv_mlp.first_layer." + std::to_string(j);
    out.push_back(tensor::from_matrix(prefix + ".w_1", t, {u64(h), u64(net.first.phi(j).cols())}, net.first.phi(j)));
    out.push_back(tensor::from_matrix(prefix + ".w_2", t, {u64(h), u64(net.first.psi(j).cols())}, net.first.psi(j)));
  }
  for (std::size_t i = 0; i < net.hidden.size(); ++i) {
    matrix<S> u(L * h, h), v(L * h, h);
    for (index j = 0; j < L; ++j) {
      u.middleRows(j * h, h) = net.hidden[i].phi(j);
      v.middleRows(j * h, h) = net.hidden[i].psi(j);
    }
    const std::vector<std::uint64_t> shape{u64(L), u64(h), u64(h)};
    out.push_back(tensor::from_matrix("equiv_mlp.equivariant_layers_u." + std::to_string(i), t, shape, u));
    out.push_back(tensor::from_matrix("equiv_mlp.equivariant_layers_v." + std::to_string(i), t, shape, v));
  }
  const auto& head = net.head;
  auto vec = [&](const char* name, const vector<S>& x) {
    out.push_back(tensor::from_matrix(name, t, {u64(x.size())}, x));
  };
  out.push_back(tensor::from_matrix("invariant_head.linear1.weight", t,
                                    {u64(head.hidden_size()), u64(head.input_size())}, head.linear1_weight));
  vec("invariant_head.linear1.bias", head.linear1_bias);
  vec("invariant_head.ln1.weight", head.norm_weight);
  vec("invariant_head.ln1.bias", head.norm_bias);
  out.push_back(tensor::from_matrix("invariant_head.linear2.weight", t,
                                    {u64(head.outputs()), u64(head.hidden_size())}, head.linear2_weight));
  vec("invariant_head.linear2.bias", head.linear2_bias);
  return out;
}

/// Writes the weights to path (written to a temporary name, then renamed).
template <class S>
void save_gl_net(const gl_net<S>& net, const std::string& path, io::dtype t = io::dtype::F32) {
  io::write_safetensors(path, gl_net_tensors(net, t));
}

}  // namespace lola::nn
