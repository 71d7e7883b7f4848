#pragma once
/// @file
/// Loading and saving adapters from paths: a PEFT directory (adapter_config.json +
/// adapter_model.safetensors) or a single .safetensors file in either dialect, told apart by its
/// keys. A PEFT file with an adapter_config.json beside it takes its scaling from that config.
/// Every file is read as file_bytes does (regular files only, a snapshot or an error) and written
/// as staged_file does (exclusive temporaries, renamed into place); a directory is written whole
/// and swapped in (write_directory_atomic).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/file.hpp"
#include "lola/io/json.hpp"
#include "lola/io/kohya.hpp"
#include "lola/io/peft.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// Whether path names a directory, following symbolic links: what load_adapter takes for a PEFT
/// adapter directory.
inline bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace detail {

inline bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

/// Whether there is a directory entry at path, of any kind: a dangling link or a link loop counts,
/// so that reading it reports what it is instead of skipping it as absent.
inline bool path_entry_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace detail

/// The dialect of a validated image, from its keys: PEFT (lora_A / lora_B / lora_embedding_*) or
/// kohya (lora_down / lora_up). Errors: both kinds of key (unsupported), or neither (invalid_file).
inline adapter_format detect_format(const safetensors_view& file) {
  bool peft = false, kohya = false;
  for (const auto& t : file.tensors()) {
    const std::string_view n = t.name;
    peft = peft || detail::ends_with(n, ".lora_A.weight") || detail::ends_with(n, ".lora_B.weight") ||
           detail::ends_with(n, ".lora_embedding_A") || detail::ends_with(n, ".lora_embedding_B");
    kohya = kohya || detail::ends_with(n, ".lora_down.weight") || detail::ends_with(n, ".lora_up.weight");
  }
  if (peft && kohya)
    throw error(error_code::unsupported,
                file.source() + ": mixes PEFT (lora_A/lora_B) and kohya (lora_down/lora_up) keys");
  if (!peft && !kohya) {
    bool lycoris = false;
    for (const auto& t : file.tensors())
      lycoris = lycoris || t.name.find(".hada_") != std::string::npos ||
                t.name.find(".lokr_") != std::string::npos;
    throw error(lycoris ? error_code::unsupported : error_code::invalid_file,
                file.source() + (lycoris ? ": a LyCORIS LoHa / LoKr adapter, which lola does not read"
                                         : ": no LoRA factors (keys ending in .lora_A.weight or "
                                           ".lora_down.weight)"));
  }
  return peft ? adapter_format::peft : adapter_format::kohya;
}

/// Reads an adapter of either dialect from a validated image; `peft_config` is used for PEFT.
template <class S = float>
adapter<S> read_adapter(const safetensors_view& file, const json_value* peft_config = nullptr,
                        const std::string& config_source = "adapter_config.json") {
  return detect_format(file) == adapter_format::peft ? read_peft<S>(file, peft_config, config_source)
                                                     : read_kohya<S>(file);
}

/// The largest adapter_config.json (or other JSON config) lola reads: 16 MiB. PEFT writes one
/// rank_pattern and one alpha_pattern entry per module, about 100 bytes per module, so a
/// 10,000-module adapter with both patterns is about 1 MB and this leaves ample headroom; the
/// cap keeps a hostile config's parse memory to some 400 MB (see json.hpp: about 20 bytes per
/// input byte).
inline constexpr std::uint64_t max_config_bytes = 16u << 20;

/// Options for load_adapter and adapter_view::open.
struct load_options {
  read_options file;                            ///< safetensors limits
  std::uint64_t max_config_bytes = io::max_config_bytes;  ///< adapter_config.json size cap
  /// adapter_view::open with factor_reads::on_visit: a module whose two factors together take
  /// fewer bytes than this is read at open with the tensors that are not factors (in the same
  /// reads) and checked there; larger modules are read on visit. A visit's read costs two
  /// system calls a factor (pread, fstat: some 2 µs each on the reference VM); a read at open
  /// costs a fresh page of the image per 4 KiB (a fault, 1–2 µs) and checks the factors on the
  /// thread that opens, where visits check them on the threads that compute: below 16 KiB a
  /// module is cheaper read at open (10,000 modules of 1–4 KiB: σ 150 → 70 ms), above it on visit
  /// (64 Qwen2-like adapters, their modules of 28–48 KiB read at open: features 145 → 230 ms).
  /// 0 reads every module on visit.
  std::uint64_t min_bytes_read_on_visit = 16 << 10;
};

/// The files an adapter path names: the weights, and the adapter_config.json read with them
/// (`config`; it need not exist).
struct adapter_files {
  std::string weights, config;
};

/// The files of the adapter at path: for a PEFT directory its adapter_model.safetensors and
/// adapter_config.json; for a .safetensors file the file and an adapter_config.json beside it.
/// Errors (naming path): a directory without adapter_model.safetensors (error_code::io), or one
/// with only a pickle adapter_model.bin (error_code::unsupported). A weights entry that is there
/// but is not a readable file (a FIFO, a dangling link) is left for the reader to report.
inline adapter_files locate_adapter_files(const std::string& path) {
  if (!is_directory(path))
    return {path, detail::join_path(detail::parent_directory(path), "adapter_config.json")};
  adapter_files files{detail::join_path(path, "adapter_model.safetensors"),
                      detail::join_path(path, "adapter_config.json")};
  if (!detail::path_entry_exists(files.weights)) {
    const bool pickle = detail::path_exists(detail::join_path(path, "adapter_model.bin"));
    throw error(pickle ? error_code::unsupported : error_code::io,
                path + (pickle ? ": holds adapter_model.bin, a pickle; lola reads only "
                                 "safetensors (convert it with PEFT's save_pretrained)"
                               : ": no adapter_model.safetensors in this directory"));
  }
  return files;
}

/// Reads the adapter in a validated image into `out` (an adapter<S> or an adapter_view): kohya by
/// its keys, else PEFT with the config at config_path when an entry is there. A config entry that
/// is there but unreadable (a FIFO, a dangling link, a link loop) is an error, never taken as
/// absent; one larger than options.max_config_bytes is error_code::invalid_file.
template <class Adapter>
void read_adapter_into(Adapter& out, const safetensors_view& file, const std::string& config_path,
                       const load_options& options) {
  if (detect_format(file) == adapter_format::kohya) {
    read_kohya_into(out, file);
  } else if (!detail::path_entry_exists(config_path)) {
    read_peft_into(out, file, nullptr);
  } else {
    const json_value config = parse_json(read_text_file(config_path, options.max_config_bytes), config_path);
    read_peft_into(out, file, &config, config_path);
  }
}

/// Loads the adapter at path (locate_adapter_files, read_adapter_into), its factors decoded to S.
template <class S = float>
adapter<S> load_adapter(const std::string& path, const load_options& options = {}) {
  const auto files = locate_adapter_files(path);
  const auto file = safetensors_file::open(files.weights, options.file);
  adapter<S> a;
  read_adapter_into(a, file.view(), files.config, options);
  return a;
}

/// Where and how to save.
enum class save_form {
  directory,  ///< a PEFT directory (PEFT adapters only)
  file,       ///< one .safetensors file (plus adapter_config.json beside it for PEFT scalings)
};

/// Whether a PEFT config gives every module of the adapter its rank and (to 1e-12 relative) its
/// scale under PEFT's rules. Errors in the config name `source`.
template <class Module>
bool peft_config_reproduces(const json_value& config, const basic_adapter<Module>& a,
                            const std::string& source = "adapter_config.json") {
  const auto cfg = peft_config::from_json(config, source);
  for (const auto& m : a.modules) {
    const auto s = cfg.scaling(detail::peft_model_name(m.name));
    if (s.r != static_cast<double>(m.rank()) ||
        std::abs(s.scale - m.scale) > 1e-12 * std::max(std::abs(s.scale), std::abs(m.scale)))
      return false;
  }
  return true;
}

/// Saves the adapter (an adapter<S>, or an encoded_adapter: io/encoded_adapter.hpp) in its own
/// dialect. Nothing is ever written through a symbolic link or into
/// an existing file: every file is staged under an exclusive temporary name and renamed into place
/// (staged_file), so a failure (a full disk included) leaves every requested path as it was and no
/// temporary behind.
/// PEFT as a directory: the directory is written whole and swapped in (write_directory_atomic),
/// so saving over the directory the adapter was loaded from either fully succeeds or leaves it
/// byte-identical. Entries of an existing directory other than adapter_model.safetensors and
/// adapter_config.json (a README, training arguments, checkpoints) are carried over into the new
/// one; an adapter_model.bin among them would shadow nothing (PEFT prefers safetensors).
/// PEFT as a file: the scaling needs an adapter_config.json beside the file. One that exists there
/// is kept when it reproduces every module's rank and scale, and is never overwritten otherwise
/// (error_code::io naming it: save as a directory instead). A new one is staged together with the
/// weights, committed after them, and never replaces a config that appeared meanwhile.
template <class Module>
void save_adapter(const basic_adapter<Module>& a, const std::string& path, save_form form) {
  if (a.format == adapter_format::kohya) {
    if (form == save_form::directory)
      throw error(error_code::invalid_argument, path + ": a kohya adapter is saved as one file");
    const auto list = kohya_tensor_list(a);
    const auto layout = detail::lay_out_tensors(list.items, a.metadata);
    write_file_atomic(path, layout.runs());
    return;
  }
  metadata_map metadata = a.metadata;
  if (std::none_of(metadata.begin(), metadata.end(), [](const auto& kv) { return kv.first == "format"; }))
    metadata.emplace_back("format", "pt");
  const auto list = peft_tensor_list(a);
  const auto layout = detail::lay_out_tensors(list.items, metadata);
  const auto weights_runs = layout.runs();
  const bool needs_config = form == save_form::directory || peft_needs_config(a);
  const std::string config_text = needs_config ? peft_config_json(a).dump(2) + "\n" : "";
  if (form == save_form::directory) {
    write_directory_atomic(path, {"adapter_model.safetensors", "adapter_config.json"}, [&](const std::string& dir) {
      staged_file weights(detail::join_path(dir, "adapter_model.safetensors"), weights_runs);
      staged_file config(detail::join_path(dir, "adapter_config.json"), config_text.data(), config_text.size());
      weights.commit();
      config.commit();
    });
    return;
  }
  // A config beside the file is what PEFT (and lola) will read with it: keep one that reproduces
  // every module, refuse to contradict one, and write one (after the weights) where it is needed.
  const std::string config_path = detail::join_path(detail::parent_directory(path), "adapter_config.json");
  const bool config_exists = detail::path_entry_exists(config_path);
  if (config_exists && !peft_config_reproduces(parse_json(read_text_file(config_path, max_config_bytes), config_path),
                                               a, config_path))
    throw error(error_code::io, config_path + " exists and gives other ranks or scalings; " + path +
                                    " needs its own adapter_config.json: save it as a directory or "
                                    "in another directory");
  staged_file weights(path, weights_runs);
  if (!needs_config || config_exists) {
    weights.commit();
    return;
  }
  staged_file config(config_path, config_text.data(), config_text.size());
  weights.commit();
  config.commit(if_exists::fail);
}

}  // namespace lola::io
