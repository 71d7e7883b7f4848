// Files around the tensors (issue 12, items 2, 3, 4 and 6): only regular files are read, a file
// that changes while it is read gives its old bytes, its new bytes or an error (never SIGBUS),
// writes never follow a planted link and never leave an input half-replaced (a full disk
// included), and sizes, tensor counts and thread counts are bounded.
//
// Where an unfixed library would hang (a FIFO) or die (a signal), the call runs in a forked child
// with an alarm, so the failure is a failed check instead of a stuck or crashed test run.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/core/parallel.hpp"
#include "lola/io/load.hpp"
#include "support/errors.hpp"
#include "support/file_tree.hpp"
#include "support/peft_adapter.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace io = lola::io;
namespace fs = std::filesystem;
using lola_test::bytes_of;
using lola_test::contains;
using lola_test::peft_config_text;
using lola_test::put_bytes;
using lola_test::random_peft_tensors;
using lola_test::temporaries_under;
using lola_test::temp_dir;
using lola_test::thrown_by;
using lola_test::tree;
using lola_test::write_peft_dir;

// ------------------------------------------------------------------ helpers

/// How a forked child ended, and what it wrote to its message pipe.
struct child_result {
  int code = -1;    ///< exit status, -1 when killed by a signal
  int signal = 0;   ///< the signal that killed it (SIGALRM: it hung)
  std::string message;
};

/// Runs f in a forked child with an alarm of `seconds`; f returns the exit code and may write a
/// message with `say`. The child never returns into doctest.
child_result in_child(const std::function<int(const std::function<void(const std::string&)>&)>& f,
                      unsigned seconds = 20) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(seconds);
    const auto say = [&](const std::string& m) {
      const std::string line = m + "\n";
      (void)!::write(fds[1], line.data(), line.size());
    };
    int code = 97;
    try {
      code = f(say);
    } catch (const std::exception& e) {
      say(std::string("unexpected exception: ") + e.what());
      code = 98;
    } catch (...) {
      code = 99;
    }
    std::_Exit(code);
  }
  ::close(fds[1]);
  child_result r;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    r.message.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

/// A child's body: 0 when f throws lola::error with `code` (its message sent), 1 when f returns.
template <class F>
int expect_error(F&& f, lola::error_code code, const std::function<void(const std::string&)>& say) {
  try {
    f();
  } catch (const lola::error& e) {
    say(e.what());
    return e.code() == code ? 0 : 2;
  }
  return 1;
}

/// A file of each kind that is not a regular file, in dir: name → (path, words its error names).
std::vector<std::pair<std::string, std::string>> special_files(const temp_dir& dir) {
  REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0644) == 0);
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string socket_path = dir.file("socket");
  REQUIRE(socket_path.size() < sizeof address.sun_path);
  std::strcpy(address.sun_path, socket_path.c_str());
  REQUIRE(::bind(s, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  ::close(s);
  fs::create_directory(dir.file("directory"));
  fs::create_symlink("loop_b", dir.file("loop_a"));
  fs::create_symlink("loop_a", dir.file("loop_b"));
  fs::create_symlink("self", dir.file("self"));
  fs::create_symlink("no-such-target", dir.file("dangling"));
  fs::create_symlink("fifo", dir.file("link_to_fifo"));
  return {{dir.file("fifo"), "a FIFO (named pipe), not a regular file"},
          {dir.file("link_to_fifo"), "a FIFO (named pipe), not a regular file"},
          {"/dev/zero", "a character device, not a regular file"},
          {"/dev/null", "a character device, not a regular file"},
          {socket_path, "a socket, not a regular file"},
          {dir.file("directory"), "a directory, not a regular file"},
          {dir.file("loop_a"), "a symbolic link loop"},
          {dir.file("self"), "a symbolic link loop"},
          {dir.file("dangling"), "a dangling symbolic link"},
          {dir.file("missing"), "cannot open: No such file or directory"}};
}

}  // namespace

// ================================================================== item 2: only regular files

TEST_SUITE("io.files") {
  TEST_CASE("the harness reports a blocking open of a FIFO as a hang (what the old reader did)") {
    temp_dir dir;
    REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0644) == 0);
    const auto r = in_child([&](const auto&) { return ::open(dir.file("fifo").c_str(), O_RDONLY) >= 0 ? 0 : 3; }, 1);
    CHECK(r.signal == SIGALRM);
  }

  TEST_CASE("a FIFO, device, socket, directory, link loop or dangling link is an io error naming it, never a hang") {
    temp_dir dir;
    for (const auto& [path, words] : special_files(dir)) {
      CAPTURE(path);
      for (int how = 0; how < 3; ++how) {
        CAPTURE(how);
        const auto r = in_child([&, p = path](const auto& say) {
          return expect_error(
              [&] {
                if (how == 0) io::file_bytes{p};
                if (how == 1) io::read_text_file(p);
                if (how == 2) io::safetensors_file::open(p);
              },
              lola::error_code::io, say);
        });
        CHECK(r.signal == 0);  // SIGALRM: the read blocked
        CHECK(r.code == 0);
        CHECK(contains(r.message, path + ": "));
        CHECK(contains(r.message, words));
      }
    }
  }

  TEST_CASE("/dev/stdin on a pipe is refused without reading it") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const auto r = in_child([&](const auto& say) {
      ::dup2(fds[0], 0);  // a pipe no one writes to: a read would block
      return expect_error([] { io::read_text_file("/dev/stdin"); }, lola::error_code::io, say);
    });
    ::close(fds[0]);
    ::close(fds[1]);
    CHECK(r.signal == 0);
    CHECK(r.code == 0);
    CHECK(contains(r.message, "/dev/stdin: is a FIFO (named pipe), not a regular file"));
  }

  TEST_CASE("load_adapter: a directory's weights or config that are not regular files are errors, never skipped") {
    temp_dir dir;
    const std::string good = dir.file("good");
    write_peft_dir(good, 3, 16, 24);
    const auto expected = io::load_adapter<double>(good);

    struct variant {
      const char* entry;  // the entry of a copy of `good` that is replaced
      std::function<void(const std::string&)> make;
      const char* words;
    };
    const std::vector<variant> variants{
        {"adapter_model.safetensors", [](const std::string& p) { REQUIRE(::mkfifo(p.c_str(), 0644) == 0); },
         "a FIFO (named pipe), not a regular file"},
        {"adapter_config.json", [](const std::string& p) { REQUIRE(::mkfifo(p.c_str(), 0644) == 0); },
         "a FIFO (named pipe), not a regular file"},
        {"adapter_model.safetensors", [](const std::string& p) { fs::create_symlink("gone", p); },
         "a dangling symbolic link"},
        {"adapter_config.json", [](const std::string& p) { fs::create_symlink("gone", p); },
         "a dangling symbolic link"},
        {"adapter_config.json", [](const std::string& p) { fs::create_symlink(fs::path(p).filename(), p); },
         "a symbolic link loop"},
        {"adapter_config.json", [](const std::string& p) { fs::create_directory(p); },
         "a directory, not a regular file"},
        {"adapter_config.json", [](const std::string& p) { fs::create_symlink("/dev/zero", p); },
         "a character device, not a regular file"},
    };
    int n = 0;
    for (const auto& v : variants) {
      const std::string copy = dir.file("variant" + std::to_string(n++));
      fs::copy(good, copy);
      const std::string entry = copy + "/" + v.entry;
      fs::remove(entry);
      v.make(entry);
      CAPTURE(entry);
      const auto r = in_child([&](const auto& say) {
        return expect_error([&] { io::load_adapter<double>(copy); }, lola::error_code::io, say);
      });
      CHECK(r.signal == 0);
      CHECK(r.code == 0);  // 1: loaded, the broken entry taken as absent
      CHECK(contains(r.message, entry + ": "));
      CHECK(contains(r.message, v.words));
    }

    // A PEFT file with a dangling adapter_config.json beside it: an error, not default scalings.
    const std::string single = dir.file("single");
    fs::create_directory(single);
    fs::copy_file(good + "/adapter_model.safetensors", single + "/a.safetensors");
    fs::create_symlink("gone", single + "/adapter_config.json");
    const auto e = thrown_by([&] { io::load_adapter<double>(single + "/a.safetensors"); });
    CHECK(e.code() == lola::error_code::io);
    CHECK(contains(e.what(), single + "/adapter_config.json: a dangling symbolic link"));

    // Symbolic links to regular files are followed: a Hugging Face cache layout loads as the
    // directory it mirrors.
    const std::string cache = dir.file("hub");
    fs::create_directories(cache + "/blobs");
    fs::create_directories(cache + "/snapshots/0123abc");
    fs::copy_file(good + "/adapter_model.safetensors", cache + "/blobs/5f2e");
    fs::copy_file(good + "/adapter_config.json", cache + "/blobs/9a1c");
    fs::create_symlink("../../blobs/5f2e", cache + "/snapshots/0123abc/adapter_model.safetensors");
    fs::create_symlink("../../blobs/9a1c", cache + "/snapshots/0123abc/adapter_config.json");
    const auto linked = io::load_adapter<double>(cache + "/snapshots/0123abc");
    REQUIRE(linked.modules.size() == expected.modules.size());
    for (std::size_t i = 0; i < linked.modules.size(); ++i) {
      CHECK(linked.modules[i].name == expected.modules[i].name);
      CHECK(linked.modules[i].scale == expected.modules[i].scale);
      CHECK(linked.modules[i].A == expected.modules[i].A);
      CHECK(linked.modules[i].B == expected.modules[i].B);
    }
  }

  // ================================================================ item 3: files that change

  TEST_CASE("a file truncated and rewritten while it is loaded: its old bytes, its new bytes, or an error naming it") {
    // Two images of one 64 MiB F32 tensor, all 1s and all 2s. A writer thread rewrites the file in
    // place (truncated to nothing or to half, then written in 1 MiB pieces), alternating images,
    // while this thread loads it. A mapping would raise SIGBUS on a page lost to a truncation; a
    // torn read would mix 1s and 2s.
    temp_dir dir;
    const std::string path = dir.file("big.safetensors");
    constexpr std::uint64_t count = std::uint64_t(16) << 20;
    const auto image = [&](float value) {
      std::vector<std::byte> data(count * 4);
      for (std::uint64_t i = 0; i < count; ++i) std::memcpy(data.data() + 4 * i, &value, 4);
      return io::serialize_safetensors({io::tensor{"w", io::dtype::F32, {count}, std::move(data)}});
    };
    const std::vector<std::vector<std::byte>> images{image(1.0f), image(2.0f)};
    REQUIRE(images[0].size() == images[1].size());
    const std::size_t header = images[0].size() - count * 4;
    io::write_file_atomic(path, images[0].data(), images[0].size());

    std::atomic<bool> stop{false};
    std::atomic<int> rewrites{0};
    std::thread writer([&] {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return;
      for (int i = 1; !stop; ++i) {
        const auto& bytes = images[static_cast<std::size_t>(i % 2)];
        if (::ftruncate(fd, i % 3 == 0 ? static_cast<off_t>(bytes.size() / 2) : 0) != 0) break;
        for (std::size_t at = 0; at < bytes.size() && !stop;) {
          const ssize_t w = ::pwrite(fd, bytes.data() + at, std::min<std::size_t>(1 << 20, bytes.size() - at),
                                     static_cast<off_t>(at));
          if (w <= 0) break;
          at += static_cast<std::size_t>(w);
        }
        ++rewrites;
        // A quiet spell after each rewrite, in which a load sees a stable file.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ::close(fd);
    });
    int loads = 0, old_bytes = 0, new_bytes = 0, errors = 0, torn = 0, unnamed = 0;
    // Until 40 loads have overlapped at least 5 rewrites (bounded, in case the writer stalls).
    while ((loads < 40 || rewrites < 5) && loads < 2000) {
      ++loads;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // spread the loads over the rewrites
      try {
        const auto file = io::safetensors_file::open(path);
        const auto* p = file->bytes(file->at("w"));
        if (std::memcmp(p, images[0].data() + header, count * 4) == 0)
          ++old_bytes;
        else if (std::memcmp(p, images[1].data() + header, count * 4) == 0)
          ++new_bytes;
        else
          ++torn;
      } catch (const lola::error& e) {
        ++errors;
        if (!contains(e.what(), path + ": ") ||
            (e.code() != lola::error_code::io && e.code() != lola::error_code::invalid_file)) {
          ++unnamed;
          MESSAGE(e.what());
        }
      }
    }
    stop = true;
    writer.join();
    MESSAGE(loads << " loads during " << rewrites.load() << " rewrites: " << old_bytes << " all-1 images, " << new_bytes
                  << " all-2 images, " << errors << " errors");
    CHECK(rewrites >= 5);
    CHECK(torn == 0);
    CHECK(unnamed == 0);
    CHECK(old_bytes + new_bytes + errors == loads);
  }

  TEST_CASE("file_bytes: a file that grows or shrinks while read is a change; a stable one reads exactly") {
    temp_dir dir;
    const std::string path = dir.file("f");
    std::string text(3 << 20, 'x');
    for (std::size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + i % 26);
    put_bytes(path, text);
    const io::file_bytes whole(path);
    CHECK(std::string(reinterpret_cast<const char*>(whole.data()), whole.size()) == text);
    CHECK(reinterpret_cast<std::uintptr_t>(whole.data()) % 64 == 0);
    const io::file_bytes empty_file = [&] {
      put_bytes(dir.file("empty"), "");
      return io::file_bytes(dir.file("empty"));
    }();
    CHECK(empty_file.size() == 0);
    const auto e = thrown_by([&] { io::file_bytes(path, 1000); });
    CHECK(e.code() == lola::error_code::invalid_file);
    CHECK(contains(e.what(), path + ": " + std::to_string(text.size()) + " bytes, more than the limit of 1000 bytes"));
  }

  // ================================================================ item 4: writes

  TEST_CASE("planted symbolic links at temporary names, old or new, are never followed") {
    temp_dir dir;
    const std::string victim = dir.file("victim"), victim_dir = dir.file("victim_dir");
    put_bytes(victim, "precious");
    fs::create_directory(victim_dir);
    put_bytes(victim_dir + "/inside", "also precious");
    const auto victims = [&] { return std::make_pair(bytes_of(victim), tree(victim_dir)); };
    const auto before = victims();
    const std::string pid = std::to_string(::getpid());
    const auto plant = [&](const std::string& name, const std::string& target) {
      fs::create_symlink(target, name);
    };

    // The names the old writer used (path + ".lola-tmp-<pid>"), and the new pattern's prefix.
    const std::string file_out = dir.file("out.safetensors");
    plant(file_out + ".lola-tmp-" + pid, victim);
    plant(dir.file(".out.safetensors.lola-tmp-" + pid), victim);
    io::write_safetensors(file_out, random_peft_tensors(1, 4, 4, 2, 1));
    CHECK(io::safetensors_file::open(file_out)->tensors().size() == 2);

    // The destination itself a link to the victim: replaced, not written through.
    const std::string linked_out = dir.file("linked.safetensors");
    plant(linked_out, victim);
    io::write_safetensors(linked_out, random_peft_tensors(1, 4, 4, 2, 1));
    CHECK(fs::is_regular_file(fs::symlink_status(linked_out)));

    // A PEFT directory: the old temporary directory name, pointing at a victim directory.
    const std::string dir_out = dir.file("adapter");
    plant(dir_out + ".lola-tmp-" + pid, victim_dir);
    const auto a = io::load_adapter<double>([&] {
      write_peft_dir(dir.file("source"), 3, 16, 24);
      return dir.file("source");
    }());
    io::save_adapter(a, dir_out, io::save_form::directory);
    CHECK(io::load_adapter<double>(dir_out).modules.size() == a.modules.size());
    io::save_adapter(a, dir_out, io::save_form::directory);  // over an existing directory too

    // A PEFT file needing a config beside it: the config's old temporary name.
    const std::string file_dir = dir.file("single");
    fs::create_directory(file_dir);
    plant(file_dir + "/adapter_config.json.lola-tmp-" + pid, victim);
    plant(file_dir + "/a.safetensors.lola-tmp-" + pid, victim);
    auto scaled = a;
    for (auto& m : scaled.modules) m.scale = 3.0;  // not PEFT's default, so a config is needed
    io::save_adapter(scaled, file_dir + "/a.safetensors", io::save_form::file);
    CHECK(fs::is_regular_file(file_dir + "/adapter_config.json"));
    CHECK(io::load_adapter<double>(file_dir + "/a.safetensors").modules.front().scale == 3.0);

    CHECK(victims() == before);
  }

  TEST_CASE("save_adapter over its own directory: swapped in whole, other files carried over") {
    temp_dir dir;
    const std::string out = dir.file("adapter");
    write_peft_dir(out, 3, 16, 24);
    put_bytes(out + "/README.md", "# my adapter\n");
    put_bytes(out + "/training_args.bin", std::string("\x80\x04 pickled", 10));
    fs::create_directories(out + "/checkpoint-500/optimizer");
    put_bytes(out + "/checkpoint-500/optimizer/state.pt", "state");
    fs::create_symlink("README.md", out + "/README.link");
    put_bytes(out + "/read-only.txt", "r/o");
    fs::permissions(out + "/read-only.txt", fs::perms::owner_read | fs::perms::group_read);
    fs::permissions(out, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);
    const auto before = tree(out);

    auto a = io::load_adapter<double>(out);
    for (auto& m : a.modules) m.set_factors(m.B * 2.0, m.A, m.scale);
    io::save_adapter(a, out, io::save_form::directory);

    const auto after = tree(out);
    for (const auto& [name, entry] : before) {
      CAPTURE(name);
      if (name == "/adapter_model.safetensors") {
        CHECK(after.at(name) != entry);
      } else if (name == "/adapter_config.json") {
        CHECK(after.count(name) == 1);
      } else {
        CHECK(after.count(name) == 1);
        if (after.count(name)) CHECK(after.at(name) == entry);  // content, mode, link target
      }
    }
    CHECK(after.size() == before.size());
    CHECK((fs::status(out).permissions() & fs::perms::all) ==
          (fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec));
    const auto back = io::load_adapter<double>(out);
    REQUIRE(back.modules.size() == a.modules.size());
    CHECK(back.modules[0].B == a.modules[0].B);
    CHECK(temporaries_under(dir.path).empty());

    // What lola cannot carry over is refused before anything changes.
    REQUIRE(::mkfifo((out + "/pipe").c_str(), 0644) == 0);
    const auto with_fifo = tree(out);
    const auto e = thrown_by([&] { io::save_adapter(a, out, io::save_form::directory); });
    CHECK(e.code() == lola::error_code::io);
    CHECK(contains(e.what(), out + "/pipe: is a FIFO (named pipe)"));
    CHECK(tree(out) == with_fifo);
    CHECK(temporaries_under(dir.path).empty());

    // An output that exists and is not a directory is refused, untouched.
    put_bytes(dir.file("file"), "not a directory");
    const auto f = thrown_by([&] { io::save_adapter(a, dir.file("file"), io::save_form::directory); });
    CHECK(f.code() == lola::error_code::io);
    CHECK(contains(f.what(), dir.file("file") + ": exists and is a regular file, not a directory"));
    CHECK(bytes_of(dir.file("file")) == "not a directory");
    CHECK(temporaries_under(dir.path).empty());
  }

  TEST_CASE("write_directory_atomic: a failure after some files are in place leaves the directory as it was") {
    // A writer that replaced the files of the directory one by one would leave new weights beside
    // the old config here; the swap leaves the old directory whole.
    temp_dir dir;
    const std::string out = dir.file("adapter");
    write_peft_dir(out, 3, 16, 24);
    const auto before = tree(out);
    const auto e = thrown_by([&] {
      io::write_directory_atomic(out, {"adapter_model.safetensors", "adapter_config.json"}, [](const std::string& d) {
        io::write_file_atomic(d + "/adapter_model.safetensors", std::string("new weights"));
        io::write_file_atomic(d + "/no-such-dir/adapter_config.json", std::string("{}"));
      });
    });
    CHECK(e.code() == lola::error_code::io);
    CHECK(contains(e.what(), out + "/no-such-dir/adapter_config.json: "));  // named as the final path
    CHECK(tree(out) == before);
    CHECK(temporaries_under(dir.path).empty());
    // A fresh target is created whole, or not at all.
    const std::string fresh = dir.file("fresh");
    CHECK_THROWS_AS(io::write_directory_atomic(fresh, {}, [](const std::string& d) {
                      io::write_file_atomic(d + "/a", std::string("a"));
                      throw lola::error(lola::error_code::io, "interrupted");
                    }),
                    lola::error);
    CHECK_FALSE(fs::exists(fs::symlink_status(fresh)));
    io::write_directory_atomic(fresh, {}, [](const std::string& d) { io::write_file_atomic(d + "/a", std::string("a")); });
    CHECK(bytes_of(fresh + "/a") == "a");
    CHECK(temporaries_under(dir.path).empty());
    // A symbolic link at the path is replaced by the new directory; its target is not touched.
    const std::string target = dir.file("target"), link = dir.file("link");
    write_peft_dir(target, 3, 16, 24);
    fs::create_symlink(target, link);
    const auto target_before = tree(target);
    io::write_directory_atomic(link, {}, [](const std::string& d) { io::write_file_atomic(d + "/b", std::string("b")); });
    CHECK(tree(target) == target_before);
    CHECK(fs::is_directory(fs::symlink_status(link)));
    CHECK(bytes_of(link + "/b") == "b");
    CHECK(bytes_of(link + "/adapter_config.json") == bytes_of(target + "/adapter_config.json"));  // carried
  }

  TEST_CASE("a full disk (RLIMIT_FSIZE) while saving over the input: the input stays byte-identical, no temporary") {
    // The child ignores SIGXFSZ, so a write past the limit fails with EFBIG, as on a full disk.
    temp_dir dir;
    const std::string peft_dir = dir.file("peft");
    write_peft_dir(peft_dir, 8, 64, 96);  // 8 · 4 · (64 + 96) · 4 bytes ≈ 20 KB of weights
    put_bytes(peft_dir + "/README.md", "kept");
    const std::string kohya = dir.file("kohya.safetensors");
    {
      auto tensors = random_peft_tensors(8, 64, 96, 4, 3);
      for (std::size_t i = 0; i < tensors.size(); ++i)
        tensors[i].name = "lora_unet_block" + std::to_string(i / 2) +
                          (contains(tensors[i].name, "lora_A") ? ".lora_down.weight" : ".lora_up.weight");
      io::write_safetensors(kohya, tensors);
    }
    const std::string peft_file_dir = dir.file("single");
    fs::create_directory(peft_file_dir);
    io::write_safetensors(peft_file_dir + "/a.safetensors", random_peft_tensors(8, 64, 96, 4, 5));
    io::write_file_atomic(peft_file_dir + "/adapter_config.json", peft_config_text);

    struct target {
      std::string path;
      io::save_form form;
    };
    for (const auto& t : {target{peft_dir, io::save_form::directory}, target{kohya, io::save_form::file},
                          target{peft_file_dir + "/a.safetensors", io::save_form::file}}) {
      CAPTURE(t.path);
      const auto before = tree(dir.path);
      const auto r = in_child([&](const auto& say) {
        auto a = io::load_adapter<double>(t.path);
        for (auto& m : a.modules) m.set_factors(m.B * 2.0, m.A, m.scale);
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{8192, 8192};  // bytes: less than the weights, more than a config
        if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 5;
        return expect_error([&] { io::save_adapter(a, t.path, t.form); }, lola::error_code::io, say);
      });
      CHECK(r.signal == 0);
      CHECK(r.code == 0);  // 1: saved despite the limit
      CHECK(contains(r.message, t.path));
      CHECK(contains(r.message, std::strerror(EFBIG)));
      CHECK(tree(dir.path) == before);  // every byte, mode and link of every input
      CHECK(temporaries_under(dir.path).empty());

      // The same save without the limit succeeds, and reads back doubled.
      auto a = io::load_adapter<double>(t.path);
      for (auto& m : a.modules) m.set_factors(m.B * 2.0, m.A, m.scale);
      io::save_adapter(a, t.path, t.form);
      CHECK(io::load_adapter<double>(t.path).modules[0].B == a.modules[0].B);
      CHECK(temporaries_under(dir.path).empty());
    }
    CHECK(bytes_of(peft_dir + "/README.md") == "kept");
  }

  TEST_CASE("staged_file from byte runs: their concatenation, in writev batches; a short disk names the bytes written") {
    // 1,000 runs (several writev batches of 256), empty ones among them, sizes from 0 to 3 KiB.
    temp_dir dir;
    std::mt19937 rng(11);
    std::vector<std::string> pieces(1000);
    std::string want;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      pieces[i].assign(i % 7 == 0 ? 0 : rng() % 3072, char('a' + i % 26));
      want += pieces[i];
    }
    std::vector<io::byte_run> runs;
    for (const auto& p : pieces) runs.push_back({p.data(), p.size()});
    const std::string path = dir.file("runs.bin");
    io::write_file_atomic(path, runs);
    CHECK(bytes_of(path) == want);
    io::write_file_atomic(path, std::vector<io::byte_run>{});  // no runs: an empty file
    CHECK(bytes_of(path).empty());

    // Under a file size limit below the total (in a child, SIGXFSZ ignored), the write stops short:
    // the error says how many bytes of how many were written, and nothing is left behind.
    const std::size_t limit_bytes = want.size() / 2;
    const auto r = in_child([&](const auto& say) {
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{limit_bytes, limit_bytes};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 5;
      return expect_error([&] { io::write_file_atomic(dir.file("short.bin"), runs); }, lola::error_code::io, say);
    });
    CHECK(r.signal == 0);
    CHECK(r.code == 0);
    CHECK(contains(r.message, std::to_string(limit_bytes) + " of " + std::to_string(want.size()) + " bytes written"));
    CHECK(temporaries_under(dir.path).empty());
    CHECK(!fs::exists(dir.file("short.bin")));
  }

  namespace {
  /// Whether this process may mount a tmpfs (root in CI; not in unprivileged containers).
  bool tmpfs_mount_permitted() {
    char pattern[] = "/tmp/lola_mount_probe_XXXXXX";
    if (!::mkdtemp(pattern)) return false;
    const bool ok = ::mount("tmpfs", pattern, "tmpfs", 0, "size=64k") == 0;
    const int err = errno;
    if (ok) ::umount(pattern);
    ::rmdir(pattern);
    return ok || (err != EPERM && err != EACCES);  // any other failure shows in the test itself
  }
  }  // namespace

  TEST_CASE("a full 1 MiB tmpfs while saving over the input: byte-identical, no temporary" *
            doctest::skip(!tmpfs_mount_permitted())) {
    temp_dir dir;
    const std::string mnt = dir.file("mnt");
    fs::create_directory(mnt);
    REQUIRE(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") == 0);
    struct unmount {
      std::string path;
      ~unmount() { ::umount(path.c_str()); }
    } unmount_at_end{mnt};
    const std::string adapter = mnt + "/adapter";
    write_peft_dir(adapter, 8, 512, 512);  // 8 · 4 · 1024 · 4 = 128 KiB of weights
    for (int i = 0; i < 6; ++i) put_bytes(adapter + "/extra" + std::to_string(i), std::string(100 << 10, 'x'));
    // 600 KiB of other files (carried over as links, taking no space); then fill the disk so that
    // the new weights cannot fit.
    put_bytes(mnt + "/filler", std::string(200 << 10, 'f'));
    const auto before = tree(mnt);
    auto a = io::load_adapter<double>(adapter);
    for (auto& m : a.modules) m.set_factors(m.B * 2.0, m.A, m.scale);
    const auto e = thrown_by([&] { io::save_adapter(a, adapter, io::save_form::directory); });
    CHECK(e.code() == lola::error_code::io);
    CHECK(contains(e.what(), adapter));
    CHECK(contains(e.what(), std::strerror(ENOSPC)));
    CHECK(tree(mnt) == before);
    CHECK(temporaries_under(mnt).empty());
    fs::remove(mnt + "/filler");
    io::save_adapter(a, adapter, io::save_form::directory);  // fits once there is room
    CHECK(io::load_adapter<double>(adapter).modules[0].B == a.modules[0].B);
    CHECK(temporaries_under(mnt).empty());
  }

  // ================================================================ item 6: bounded resources

  TEST_CASE("adapter_config.json above the 16 MiB cap is refused naming its size and the cap") {
    temp_dir dir;
    const std::string adapter = dir.file("adapter");
    write_peft_dir(adapter, 3, 16, 24);
    const std::string config = adapter + "/adapter_config.json";
    const auto padded = [&](std::uint64_t total) {
      const std::string head = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": ")";
      const std::string tail = "\"}";
      return head + std::string(total - head.size() - tail.size(), 'm') + tail;
    };
    put_bytes(config, padded(io::max_config_bytes));
    CHECK(io::load_adapter<double>(adapter).modules.size() == 3);  // at the cap: read
    put_bytes(config, padded(io::max_config_bytes + 1));
    const auto e = thrown_by([&] { io::load_adapter<double>(adapter); });
    CHECK(e.code() == lola::error_code::invalid_file);
    CHECK(contains(e.what(), config + ": 16777217 bytes, more than the limit of 16777216 bytes"));
    io::load_options small;
    small.max_config_bytes = 10;
    write_peft_dir(adapter, 3, 16, 24);
    CHECK(thrown_by([&] { io::load_adapter<double>(adapter, small); }).code() == lola::error_code::invalid_file);
  }

  TEST_CASE("JSON parse memory is a bounded multiple of the input (measured in a child)") {
    // 16 MiB of "[0,0,…]", the densest input in values per byte. The peak resident set may grow by
    // 20 bytes per input byte (40-byte values, 2 bytes each, see json.hpp); 32 leaves room for the
    // allocator and fails for any per-value overhead twice as large.
    const auto r = in_child([](const auto& say) {
      std::string text = "[0";
      text.reserve(16u << 20);
      while (text.size() + 2 < (16u << 20)) text += ",0";
      text += "]";
      put_bytes("/proc/self/clear_refs", "5");  // resets the peak resident set (VmHWM) inherited from the parent
      const auto peak_kib = [] {
        std::ifstream status("/proc/self/status");
        for (std::string line; std::getline(status, line);)
          if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
        return 0L;
      };
      const long before = peak_kib();
      const auto v = io::parse_json(text);
      const double per_byte = double(peak_kib() - before) * 1024 / double(text.size());
      say(std::to_string(per_byte));
      return v.size() == (text.size() - 1) / 2 && per_byte <= 32 ? 0 : 1;
    }, 60);
    MESSAGE("parse memory per input byte: " << r.message);
    CHECK(r.signal == 0);
    CHECK(r.code == 0);
  }

  TEST_CASE("json objects built by set(): indexed past 16 members, find/set/erase/copy stay consistent") {
    io::json_value o = io::json_value::object();
    const int n = 100000;
    for (int i = 0; i < n; ++i) o.set("k" + std::to_string(i), io::json_value(i));
    for (int i = 0; i < n; i += 3) o.set("k" + std::to_string(i), io::json_value(-i));  // replaced in place
    REQUIRE(o.size() == std::size_t(n));
    for (int i = 0; i < n; ++i) {
      REQUIRE(std::as_const(o).members()[std::size_t(i)].first == "k" + std::to_string(i));
      REQUIRE(o.find("k" + std::to_string(i)));
      REQUIRE(o.find("k" + std::to_string(i))->as_int64() == (i % 3 ? i : -i));
    }
    CHECK(o.find("k100000") == nullptr);
    const io::json_value copy = o;  // a copy has no index yet; find scans
    CHECK(copy.find("k99998")->as_int64() == 99998);
    CHECK(copy == o);
    CHECK(o.erase("k5"));
    CHECK(o.find("k5") == nullptr);
    o.set("k5", io::json_value(5));
    CHECK(o.members().back().first == "k5");
    o.members()[0].first = "renamed";  // mutable access drops the index
    CHECK(o.find("renamed") != nullptr);
    CHECK(o.find("k0") == nullptr);
    o.set("k0", io::json_value(0));
    CHECK(o.size() == std::size_t(n + 1));
    const auto parsed = io::parse_json(o.dump());
    CHECK(parsed == o);
  }

  TEST_CASE("80,000 tensors serialize and read back identically") {
    // Mixed dtypes and shapes, names in no particular order; every byte distinct per tensor.
    const io::dtype dtypes[] = {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64};
    std::vector<io::tensor> tensors;
    const int n = 80000;
    for (int i = 0; i < n; ++i) {
      const int j = (i * 7919) % n;
      io::tensor t;
      t.name = "base_model.model.layers." + std::to_string(j) + ".mlp.lora_" + (j % 2 ? "A" : "B") + ".weight";
      t.dtype = dtypes[j % 4];
      t.shape = {std::uint64_t(1 + j % 3)};
      t.data.resize(t.shape[0] * io::dtype_bits(t.dtype) / 8);
      for (std::size_t b = 0; b < t.data.size(); ++b) t.data[b] = std::byte(static_cast<unsigned char>(j * 31 + b));
      tensors.push_back(std::move(t));
    }
    temp_dir dir;
    const std::string path = dir.file("many.safetensors");
    io::write_safetensors(path, tensors, {{"format", "pt"}});
    const auto file = io::safetensors_file::open(path);
    REQUIRE(file->tensors().size() == tensors.size());
    CHECK(file->metadata() == io::metadata_map{{"format", "pt"}});
    for (const auto& t : tensors) {
      const auto* back = file->find(t.name);
      REQUIRE(back);
      REQUIRE(back->dtype == t.dtype);
      REQUIRE(back->shape == t.shape);
      REQUIRE(std::memcmp(file->bytes(*back), t.data.data(), t.data.size()) == 0);
    }
    // The reference layout: dtype descending, then name.
    const auto& in_file = file->tensors();
    for (std::size_t i = 1; i < in_file.size(); ++i)
      REQUIRE((in_file[i - 1].dtype > in_file[i].dtype ||
               (in_file[i - 1].dtype == in_file[i].dtype && in_file[i - 1].name < in_file[i].name)));
  }

  TEST_CASE("40,000 PEFT modules save as a directory and load back") {
    temp_dir dir;
    const std::string source = dir.file("source"), out = dir.file("out");
    write_peft_dir(source, 40000, 2, 3);
    const auto a = io::load_adapter<double>(source);
    REQUIRE(a.modules.size() == 40000);
    io::save_adapter(a, out, io::save_form::directory);
    const auto b = io::load_adapter<double>(out);
    REQUIRE(b.modules.size() == a.modules.size());
    for (std::size_t i = 0; i < a.modules.size(); ++i) {
      REQUIRE(b.modules[i].name == a.modules[i].name);
      REQUIRE(b.modules[i].A == a.modules[i].A);
      REQUIRE(b.modules[i].B == a.modules[i].B);
      REQUIRE(b.modules[i].scale == a.modules[i].scale);
    }
  }

  TEST_CASE("an absurd OMP_NUM_THREADS is clamped (run in a child process with it set)") {
    // The child re-runs this test binary on the test case below with OMP_NUM_THREADS set;
    // libgomp alone takes 100000 at its word and crashes creating the team, and reads 2^40 as 0.
    temp_dir dir;
    for (const char* value : {"100000", "1099511627776", "-3"}) {
      CAPTURE(value);
      const std::string log = dir.file("child.log");
      const std::string command = "OMP_NUM_THREADS=" + std::string(value) +
                                  " LOLA_TEST_THREAD_CHILD=1 /proc/" + std::to_string(::getpid()) +
                                  "/exe -tc='parallel_for in the child*' >" + log + " 2>&1";
      const int status = std::system(command.c_str());
      INFO(bytes_of(log));
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
      CHECK(contains(bytes_of(log), "test cases: 1 | 1 passed"));  // the case ran, and passed
    }
  }

  TEST_CASE("parallel_for in the child: every item once, threads within the cap") {
    CHECK(lola::parallel_threads() >= 1);
    CHECK(lola::parallel_threads() <= lola::parallel_thread_cap());
    std::vector<std::atomic<int>> seen(5000);
    lola::parallel_for(5000, [&](lola::index i) { ++seen[static_cast<std::size_t>(i)]; });
    CHECK(std::all_of(seen.begin(), seen.end(), [](const auto& s) { return s == 1; }));
    // Eigen's parallel GEMM asks OpenMP for its thread count directly.
    const Eigen::MatrixXd x = Eigen::MatrixXd::Ones(600, 600);
    const Eigen::MatrixXd y = x * x;
    CHECK(y(599, 599) == 600.0);
    if (std::getenv("LOLA_TEST_THREAD_CHILD")) MESSAGE("ran with OMP_NUM_THREADS=" << std::getenv("OMP_NUM_THREADS"));
  }
}
