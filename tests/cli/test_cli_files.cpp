// Files around the tensors, through the tool (issue 12, items 2, 3, 4 and 6): `lola` run as a
// separate process on FIFOs, devices, link loops and dangling links (exit 1 naming them, never a
// hang), on an adapter another process keeps truncating (exit 0 or 1, never a signal), with
// symbolic links planted at temporary names (never followed), writing its output over its input
// under a file-size limit (the input byte-identical, no temporary left), and with absurd
// OMP_NUM_THREADS values or oversized configs.
//
// Each run goes through `sh -c '<setup>; exec timeout -s KILL 120 lola …'`: a hang is killed and
// reported as a crash (exit 137) instead of stalling the suite, and the setup sets limits
// (ulimit -f with SIGXFSZ ignored, so a write past the limit fails with EFBIG as on a full disk)
// or the environment.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/io/load.hpp"
#include "support/file_tree.hpp"
#include "support/peft_adapter.hpp"
#include "support/run_cli.hpp"

namespace io = lola::io;
namespace fs = std::filesystem;

namespace {

using namespace lola_test::cli;
using lola_test::bytes_of;
using lola_test::peft_config_text;
using lola_test::random_peft_tensors;
using lola_test::tree;

/// Runs `lola args…` after the shell commands `setup`, under a 120 s kill timeout.
run_result run_lola_after(const temp_dir& t, const std::string& setup, const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string stem = t / ("logs/files" + std::to_string(++counter));
  run_result r;
  r.command = setup + " lola";
  for (const auto& a : args) r.command += " " + a;
  std::string cmd = setup + " exec timeout -s KILL 120 " + shell_quote(LOLA_CLI_PATH);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " </dev/null >" + shell_quote(stem + ".out") + " 2>" + shell_quote(stem + ".err");
  const int status = std::system(cmd.c_str());
  REQUIRE(status != -1);
  // timeout exits 128 + the signal that killed lola, and 137 when it killed lola itself.
  r.crashed = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 124);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(stem + ".out");
  r.err = read_file(stem + ".err");
  return r;
}

run_result run(const temp_dir& t, const std::vector<std::string>& args) { return run_lola_after(t, "", args); }

/// A PEFT folder t/name: 8 modules 64×96 (about 20 KB of weights), its config and a README.
std::string write_peft_dir(const temp_dir& t, const std::string& name) {
  const std::string dir = t / name;
  lola_test::write_peft_dir(dir, 8, 64, 96, 11);
  io::write_file_atomic(dir + "/README.md", std::string("# an adapter\n"));
  return dir;
}

/// The pid the next process will get, as Linux hands them out (sequentially).
long next_pid() {
  std::ifstream in("/proc/sys/kernel/ns_last_pid");
  long last = 0;
  in >> last;
  return last + 1;
}

}  // namespace

TEST_SUITE("cli.files") {
  TEST_CASE("inputs that are not regular files: exit 1 naming the path and what it is, never a hang") {
    temp_dir t;
    const std::string good = write_peft_dir(t, "good");
    REQUIRE(::mkfifo((t / "fifo").c_str(), 0644) == 0);
    fs::create_symlink("loop", t / "loop");
    fs::create_symlink("nowhere", t / "dangling");
    const std::string fifo_weights = t / "fifo_weights";
    fs::copy(good, fifo_weights);
    fs::remove(fifo_weights + "/adapter_model.safetensors");
    REQUIRE(::mkfifo((fifo_weights + "/adapter_model.safetensors").c_str(), 0644) == 0);
    const std::string dangling_config = t / "dangling_config";
    fs::copy(good, dangling_config);
    fs::remove(dangling_config + "/adapter_config.json");
    fs::create_symlink("gone.json", dangling_config + "/adapter_config.json");
    const std::string fifo_config = t / "fifo_config";
    fs::copy(good, fifo_config);
    fs::remove(fifo_config + "/adapter_config.json");
    REQUIRE(::mkfifo((fifo_config + "/adapter_config.json").c_str(), 0644) == 0);

    struct input {
      std::vector<std::string> args;
      std::string named, words;
    };
    const std::vector<input> inputs{
        {{"inspect", t / "fifo"}, t / "fifo", "is a FIFO (named pipe), not a regular file"},
        {{"inspect", "/dev/zero"}, "/dev/zero", "is a character device, not a regular file"},
        {{"inspect", t / "loop"}, t / "loop", "a symbolic link loop"},
        {{"inspect", t / "dangling"}, t / "dangling", "a dangling symbolic link"},
        {{"inspect", fifo_weights}, fifo_weights + "/adapter_model.safetensors", "is a FIFO (named pipe)"},
        {{"inspect", fifo_config}, fifo_config + "/adapter_config.json", "is a FIFO (named pipe)"},
        {{"inspect", dangling_config}, dangling_config + "/adapter_config.json", "a dangling symbolic link"},
        {{"glnet", t / "fifo", good}, t / "fifo", "is a FIFO (named pipe), not a regular file"},
    };
    for (const auto& in : inputs) {
      const auto r = run(t, in.args);
      check_invalid_input(r, {in.named, in.words});
    }
  }

  TEST_CASE("configs and GL-net headers above 16 MiB: exit 1 naming the file, its size and the cap") {
    temp_dir t;
    const std::string dir = write_peft_dir(t, "adapter");
    const std::string head = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": ")";
    io::write_file_atomic(dir + "/adapter_config.json", head + std::string((16u << 20) - head.size(), 'm') + "\"}");
    check_invalid_input(run(t, {"inspect", dir}),
                        {dir + "/adapter_config.json", "16777218 bytes", "limit of 16777216 bytes"});

    // A GL-net weights file whose header (here its metadata) is 16 MiB + 8 bytes.
    const std::string weights = t / "glnet.safetensors";
    std::vector<io::tensor> one{io::tensor{"equiv_mlp.first_layer.0.w_1", io::dtype::F32, {1, 1}, std::vector<std::byte>(4)}};
    io::write_safetensors(weights, one, {{"pad", std::string(16u << 20, 'p')}});
    check_invalid_input(run(t, {"glnet", weights, write_peft_dir(t, "other")}),
                        {weights, "exceeds the limit of 16777216 bytes"});
  }

  TEST_CASE("an adapter truncated and rewritten by another process while `lola inspect` reads it: exit 0 or 1, never a signal") {
    // The file holds one small module and a 64 MiB passthrough tensor (all 1s, or all 2s in the
    // rewrite), so inspect's output is the same for both images and the read takes a while.
    temp_dir t;
    const std::string path = t / "adapter.safetensors";
    const auto image = [](float value) {
      std::vector<std::byte> data(std::size_t(64) << 20);
      for (std::size_t i = 0; i < data.size(); i += 4) std::memcpy(data.data() + i, &value, 4);
      auto tensors = random_peft_tensors(2, 16, 24, 4, 3);
      tensors.push_back(io::tensor{"base_model.model.lm_head.weight", io::dtype::F32, {std::uint64_t(16) << 20},
                                   std::move(data)});
      return io::serialize_safetensors(tensors, {{"format", "pt"}});
    };
    const std::vector<std::vector<std::byte>> images{image(1.0f), image(2.0f)};
    io::write_file_atomic(path, images[0].data(), images[0].size());
    const auto baseline = run(t, {"inspect", path});
    check_ok(baseline);

    std::fflush(nullptr);
    const pid_t writer = ::fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {  // truncate to nothing or to half, rewrite in 1 MiB pieces, pause; until killed
      const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      for (int i = 1; fd >= 0; ++i) {
        const auto& bytes = images[std::size_t(i % 2)];
        if (::ftruncate(fd, i % 3 == 0 ? off_t(bytes.size() / 2) : 0) != 0) break;
        for (std::size_t at = 0; at < bytes.size();) {
          const ssize_t w = ::pwrite(fd, bytes.data() + at, std::min<std::size_t>(1 << 20, bytes.size() - at), off_t(at));
          if (w <= 0) std::_Exit(1);
          at += std::size_t(w);
        }
        ::usleep(300000);  // a quiet spell, in which a run sees a stable file
      }
      std::_Exit(1);
    }
    int ok = 0, failed = 0;
    for (int i = 0; i < 8; ++i) {
      const auto r = run(t, {"inspect", path});
      INFO(r.command);
      INFO("stderr: " << r.err);
      CHECK_FALSE(r.crashed);
      CHECK((r.code == 0 || r.code == 1));
      if (r.code == 0) {
        ++ok;
        CHECK(r.out == baseline.out);
      } else {
        ++failed;
        CHECK(r.out.empty());
        CHECK(contains(r.err, path + ": "));
      }
    }
    ::kill(writer, SIGKILL);
    ::waitpid(writer, nullptr, 0);
    MESSAGE("8 runs during rewrites: " << ok << " read a whole image, " << failed << " stopped with an error");
  }

  TEST_CASE("symbolic links planted at the old temporary names of the next 2000 pids are never followed") {
    // The old writer's temporaries were "<output>.lola-tmp-<pid>", and Linux hands out pids in
    // sequence: links planted for the next 2000 pids cover the tool's.
    temp_dir t;
    const std::string victim = t / "victim", victim_dir = t / "victim_dir";
    io::write_file_atomic(victim, std::string("precious"));
    fs::create_directory(victim_dir);
    io::write_file_atomic(victim_dir + "/inside", std::string("also precious"));
    const std::string in_dir = write_peft_dir(t, "in");
    const std::string in_file = t / "in_file/a.safetensors";
    fs::create_directory(t / "in_file");
    io::write_safetensors(in_file, random_peft_tensors(8, 64, 96, 4, 5));
    io::write_file_atomic(t / "in_file/adapter_config.json", peft_config_text);
    const std::string out_dir = t / "out", out_file = t / "in_file/out.safetensors";
    const long first = next_pid();
    int planted = 0;
    for (long p = first; p < first + 2000; ++p, planted += 2) {
      fs::create_symlink(victim_dir, out_dir + ".lola-tmp-" + std::to_string(p));
      fs::create_symlink(victim, out_file + ".lola-tmp-" + std::to_string(p));
    }
    const auto before = std::make_pair(bytes_of(victim), tree(victim_dir));
    check_ok(run(t, {"canonicalize", in_dir, "-o", out_dir}));
    check_ok(run(t, {"canonicalize", in_file, "-o", out_file}));
    check_ok(run(t, {"canonicalize", out_dir, "-o", out_dir}));  // over an existing directory
    CHECK(std::make_pair(bytes_of(victim), tree(victim_dir)) == before);
    CHECK(io::load_adapter<double>(out_dir).modules.size() == 8);
    CHECK(io::load_adapter<double>(out_file).modules.size() == 8);
    CHECK(temporaries_under(t.path).size() == std::size_t(planted));  // only the planted links
  }

  TEST_CASE("output over the input under a full disk (ulimit -f): exit 1, the input byte-identical, no temporary") {
    temp_dir t;
    const std::string dir = write_peft_dir(t, "adapter");
    fs::create_directories(dir + "/checkpoint-10");
    io::write_file_atomic(dir + "/checkpoint-10/trainer_state.json", std::string("{}"));
    const std::string file = t / "single/a.safetensors";
    fs::create_directory(t / "single");
    io::write_safetensors(file, random_peft_tensors(8, 64, 96, 4, 9));
    io::write_file_atomic(t / "single/adapter_config.json", peft_config_text);
    // 16 blocks of 512 bytes (dash's unit; 1024 in bash): 8-16 KiB, under the 20 KB of weights.
    const std::string full_disk = "ulimit -f 16; trap '' XFSZ;";
    const auto inputs = [&] { return std::make_pair(tree(dir), tree(t / "single")); };
    for (const std::string& path : {dir, file}) {
      CAPTURE(path);
      const auto before = inputs();
      const auto r = run_lola_after(t, full_disk, {"canonicalize", path, "-o", path});
      check_invalid_input(r, {path, std::strerror(EFBIG)});
      CHECK(inputs() == before);  // every byte, mode and link
      const auto left = temporaries_under(t.path);
      CHECK_MESSAGE(left.empty(), "left behind: " << (left.empty() ? "" : left.front()));
    }
    // Without the limit the same commands succeed, and the directory keeps its other files.
    const auto readme = bytes_of(dir + "/README.md");
    check_ok(run(t, {"canonicalize", dir, "-o", dir}));
    check_ok(run(t, {"canonicalize", file, "-o", file}));
    CHECK(bytes_of(dir + "/README.md") == readme);
    CHECK(bytes_of(dir + "/checkpoint-10/trainer_state.json") == "{}");
    CHECK(temporaries_under(t.path).empty());
  }

  TEST_CASE("an absurd OMP_NUM_THREADS is clamped: the same output, exit 0") {
    temp_dir t;
    const std::string dir = write_peft_dir(t, "adapter");
    const auto baseline = run(t, {"inspect", dir});
    check_ok(baseline);
    for (const char* value : {"100000", "1099511627776"}) {
      const auto r = run_lola_after(t, std::string("export OMP_NUM_THREADS=") + value + ";", {"inspect", dir});
      check_ok(r);
      CHECK(r.out == baseline.out);
    }
  }
}
