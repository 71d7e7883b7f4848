// Conformance tests for the safetensors reader and writer: every byte fixture of the reference
// implementation's test suite (safetensors/src/tensor.rs, mod tests), every rule lola adds on top,
// the diagnosis of files that are not safetensors, element decoding, alignment and zero-copy views,
// and the writer's layout, round trip and atomic write.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/file.hpp"
#include "lola/io/json.hpp"
#include "lola/io/safetensors.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace io = lola::io;
using byte_vector = std::vector<std::byte>;

/// The name every in-memory fixture is parsed under; every message must carry it.
constexpr std::string_view fixture_source = "fixture.safetensors";

byte_vector to_bytes(std::string_view s) {
  byte_vector out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

/// Exactly the bytes of a C++ string literal, embedded NULs included (the terminator excluded).
template <std::size_t N>
byte_vector literal_bytes(const char (&s)[N]) {
  return to_bytes(std::string_view(s, N - 1));
}

std::string le64(std::uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

/// A safetensors image: the header's length as a little-endian u64, the header, the data buffer.
byte_vector st_image(std::string_view header, std::string_view data) {
  return to_bytes(le64(header.size()) + std::string(header) + std::string(data));
}

/// The same with a data buffer of `zero_bytes` zero bytes.
byte_vector st_image(std::string_view header, std::size_t zero_bytes) {
  return st_image(header, std::string(zero_bytes, '\0'));
}

/// The header padded with spaces to a multiple of 8, as the reference writer does, so that the
/// data buffer starts at an 8-aligned file offset.
std::string padded(std::string header) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return header;
}

std::uint64_t header_length(const byte_vector& image) {
  return io::detail::load_le<std::uint64_t>(image.data());
}

io::safetensors_view parse(const byte_vector& image, const io::read_options& options = {}) {
  return io::safetensors_view::parse(image.data(), image.size(), std::string(fixture_source), options);
}

/// The same, owning the bytes, for views that outlive the expression that built the image.
io::safetensors_file load(byte_vector image) {
  return io::safetensors_file::from_bytes(std::move(image), std::string(fixture_source));
}

bool contains(std::string_view text, std::string_view fragment) {
  return text.find(fragment) != std::string_view::npos;
}

/// The message of the lola::error the reader must throw for image, after checking that the code is
/// invalid_file and that the message starts by naming the source; "" when it was accepted.
std::string rejection(const byte_vector& image, const io::read_options& options = {}) {
  try {
    parse(image, options);
  } catch (const lola::error& e) {
    CHECK(e.code() == lola::error_code::invalid_file);
    const std::string what = e.what();
    CHECK_MESSAGE(what.rfind("lola: " + std::string(fixture_source) + ": ", 0) == 0,
                  "the message must begin with the source: ", what);
    return what;
  }
  FAIL_CHECK("the image was accepted");
  return "";
}

/// Requires rejection with a message that holds every fragment (the rule, the tensor's name).
void check_rejected(const byte_vector& image, std::initializer_list<std::string_view> fragments,
                    const io::read_options& options = {}) {
  const std::string what = rejection(image, options);
  for (auto fragment : fragments)
    CHECK_MESSAGE(contains(what, fragment), "\"", std::string(fragment), "\" is not in: ", what);
}

/// "tensor \"name\"", as the reader names a tensor.
std::string tensor_named(std::string_view name) { return "tensor \"" + std::string(name) + "\""; }

struct temp_dir : lola_test::temp_dir {
  temp_dir() : lola_test::temp_dir("lola_safetensors") {}
};

void write_bytes(const std::string& path, const byte_vector& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

/// The reference's dtypes with their bit sizes, in the reference's declaration (alignment) order
/// (research note §1.2): an oracle independent of lola's own table.
struct reference_dtype {
  std::string_view name;
  unsigned bits;
};
constexpr reference_dtype reference_dtypes[] = {
    {"BOOL", 8},         {"F4", 4},           {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},           {"F8_E5M2", 8},      {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8},  {"I16", 16},         {"U16", 16},    {"F16", 16},    {"BF16", 16},
    {"I32", 32},         {"U32", 32},         {"F32", 32},    {"C64", 64},    {"F64", 64},
    {"I64", 64},         {"U64", 64},
};

/// One tensor entry of a header.
std::string entry(std::string_view name, std::string_view dtype, std::string_view shape,
                  std::uint64_t begin, std::uint64_t end) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" +
         std::string(shape) + ",\"data_offsets\":[" + std::to_string(begin) + "," +
         std::to_string(end) + "]}";
}

std::string le16(std::uint16_t v) { return {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)}; }
std::string le32(std::uint32_t v) { return le64(v).substr(0, 4); }

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    out += le32(bits);
  }
  return out;
}

}  // namespace

TEST_SUITE("io.safetensors") {
  // ---------------------------------------------------------------------------------------------
  // The reference suite's byte fixtures that must be accepted.

  TEST_CASE("reference test_deserialization: I32 [2,2] at [0,16)") {
    const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
    const auto image = st_image(header, 16);
    // The reference's literal: b"<\x00...\x00{...}" followed by sixteen zero bytes.
    CHECK(image == literal_bytes("<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],"
                                 "\"data_offsets\":[0,16]}}"
                                 "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"));
    CHECK(header_length(image) == 0x3C);
    const auto view = parse(image);
    REQUIRE(view.tensors().size() == 1);
    const auto& t = view.tensors()[0];
    CHECK(t.name == "test");
    CHECK(t.dtype == io::dtype::I32);
    CHECK(t.shape == std::vector<std::uint64_t>{2, 2});
    CHECK(t.begin == 0);
    CHECK(t.end == 16);
    CHECK(t.byte_count() == 16);
    CHECK(t.element_count() == 4);
    CHECK(view.data_offset() == 8 + 0x3C);
    CHECK(view.bytes(t) == image.data() + 8 + 0x3C);
    CHECK(std::all_of(view.bytes(t), view.bytes(t) + 16, [](std::byte b) { return b == std::byte{0}; }));
    CHECK(view.metadata().empty());
    CHECK(view.source() == fixture_source);
  }

  TEST_CASE("reference test_empty_shapes_allowed: a 0-d tensor of 4 bytes") {
    const auto image = st_image(R"({"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", 4);
    CHECK(header_length(image) == std::uint64_t{'8'});
    const auto view = parse(image);
    REQUIRE(view.tensors().size() == 1);
    CHECK(view.tensors()[0].shape.empty());
    CHECK(view.tensors()[0].element_count() == 1);
    CHECK(view.tensors()[0].byte_count() == 4);
  }

  TEST_CASE("reference test_zero_sized_tensor: [2,0] at [0,0)") {
    const auto image = st_image(R"({"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}})", 0);
    CHECK(header_length(image) == 0x3C);
    const auto view = parse(image);
    REQUIRE(view.tensors().size() == 1);
    const auto& t = view.tensors()[0];
    CHECK(t.shape == std::vector<std::uint64_t>{2, 0});
    CHECK(t.element_count() == 0);
    CHECK(t.byte_count() == 0);
    CHECK(view.bytes(t) == image.data() + image.size());  // one past the end, never dereferenced
  }

  TEST_CASE("reference test_whitespace_padded_header: trailing JSON whitespace is accepted") {
    const auto image = literal_bytes("\x06\x00\x00\x00\x00\x00\x00\x00{}\x0D\x20\x09\x0A");
    CHECK(image == st_image("{}\r \t\n", 0));
    const auto view = parse(image);
    CHECK(view.tensors().empty());
    CHECK(view.metadata().empty());
  }

  TEST_CASE("reference test_whitespace_leading_padded_header: leading JSON whitespace is accepted") {
    const auto image = literal_bytes("\x06\x00\x00\x00\x00\x00\x00\x00\x09\x0A{}\x0D\x20");
    CHECK(parse(image).tensors().empty());
    // Only JSON's four whitespace bytes: NUL padding is not whitespace.
    check_rejected(st_image(std::string("{}\0\0\0\0\0\0", 8), 0), {"header", "invalid JSON"});
    check_rejected(st_image("{}\v", 0), {"invalid JSON"});
  }

  // ---------------------------------------------------------------------------------------------
  // The reference suite's rejections.

  TEST_CASE("reference test_header_too_small: an empty input, and any input under 8 bytes") {
    check_rejected({}, {"0 bytes", "8-byte header length"});
    check_rejected(to_bytes(std::string(7, '\0')), {"7 bytes", "8-byte header length"});
  }

  TEST_CASE("reference test_header_too_large: bytes 5-7 of the length are 0xff") {
    const auto image = literal_bytes(
        "<\x00\x00\x00\x00\xff\xff\xff{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    CHECK(header_length(image) == 0xffffff000000003CULL);
    check_rejected(image, {"header length 18446742974197923900", "exceeds the limit of 100000000"});
  }

  TEST_CASE("reference test_invalid_header_length: N = 60 and no header at all") {
    const auto image = literal_bytes("<\x00\x00\x00\x00\x00\x00\x00");
    check_rejected(image, {"header length 60", "runs past the end of the file (8 bytes)"});
  }

  TEST_CASE("reference test_invalid_header_non_utf8: N = 1, the byte 0xFF") {
    check_rejected(literal_bytes("\x01\x00\x00\x00\x00\x00\x00\x00\xff"),
                   {"header", "invalid UTF-8 at byte 0"});
  }

  TEST_CASE("reference test_invalid_header_not_json: N = 1, \"{\"") {
    check_rejected(literal_bytes("\x01\x00\x00\x00\x00\x00\x00\x00{"),
                   {"header", "invalid JSON", "unexpected end of input"});
  }

  TEST_CASE("reference test_invalid_info: I32 [2,2] at [0,4)") {
    const auto image = st_image(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}})", 0);
    CHECK(header_length(image) == 0x3C);
    check_rejected(image, {tensor_named("test"), "[0, 4)", "holds 4 bytes", "[2, 2]", "I32", "needs 16"});
  }

  TEST_CASE("reference test_validation_overflow") {
    SUBCASE("the element count overflows: [2, 2^64 - 2]") {
      const auto image = st_image(
          R"({"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}})", 16);
      CHECK(header_length(image) == std::uint64_t{'O'});
      check_rejected(image, {tensor_named("test"), "[2, 18446744073709551614]",
                             "overflows the element count"});
    }
    SUBCASE("the bit count overflows: [2, 2^63 - 1] of I32") {
      const auto image = st_image(
          R"({"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}})", 16);
      CHECK(header_length(image) == std::uint64_t{'N'});
      check_rejected(image, {tensor_named("test"), "[2, 9223372036854775807]", "I32",
                             "overflows the byte count"});
    }
  }

  TEST_CASE("reference test_json_attack: ten tensors all at [0,16)") {
    std::string header = "{";
    for (int i = 0; i < 10; ++i)
      header += (i ? "," : "") + entry("weight_" + std::to_string(i), "F32", "[2,2]", 0, 16);
    header += "}";
    // Which name is reported depends on the sort; every one but the first overlaps.
    const std::string what = rejection(st_image(header, 16));
    CHECK(contains(what, "tensor \"weight_"));
    CHECK(contains(what, "[0, 16) overlaps the previous tensor"));
    CHECK(contains(what, "should begin at 16"));
  }

  TEST_CASE("reference test_metadata_incomplete_buffer") {
    const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
    SUBCASE("trailing polyglot bytes") {
      const auto image = literal_bytes(
          "<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"
          "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
          "extra_bogus_data_for_polyglot_file");
      CHECK(image == st_image(header, std::string(16, '\0') + "extra_bogus_data_for_polyglot_file"));
      check_rejected(image, {"cover 16 bytes of a data buffer of 50", "trailing bytes"});
    }
    SUBCASE("the buffer is 2 bytes short") {
      check_rejected(st_image(header, 14), {"cover 16 bytes of a data buffer of 14", "truncated"});
    }
  }

  TEST_CASE("reference test_serialization_fp4_*: sub-byte element counts (reader)") {
    // F4 [3] needs 12 bits: not a whole number of bytes (MisalignedSlice).
    check_rejected(st_image("{" + entry("attn.0", "F4", "[3]", 0, 2) + "}", 2),
                   {tensor_named("attn.0"), "3 elements of F4", "not a whole number of bytes"});
    check_rejected(st_image("{" + entry("attn.0", "F4", "[1,3]", 0, 1) + "}", 1),
                   {tensor_named("attn.0"), "not a whole number of bytes"});
    // F4 [2] is one byte; claiming two is the reference's fp4_invalid (wrong size).
    const auto valid_file = load(st_image("{" + entry("attn.0", "F4", "[2]", 0, 1) + "}", 1));
    const auto& valid = valid_file.view();
    CHECK(valid.tensors().at(0).byte_count() == 1);
    check_rejected(st_image("{" + entry("attn.0", "F4", "[1,2]", 0, 2) + "}", 2),
                   {tensor_named("attn.0"), "holds 2 bytes", "needs 1"});
    // F6: four elements are 3 bytes; two are 12 bits.
    CHECK(parse(st_image("{" + entry("x", "F6_E2M3", "[4]", 0, 3) + "}", 3)).tensors().at(0).byte_count() == 3);
    check_rejected(st_image("{" + entry("x", "F6_E3M2", "[2]", 0, 2) + "}", 2),
                   {tensor_named("x"), "2 elements of F6_E3M2", "not a whole number of bytes"});
  }

  // ---------------------------------------------------------------------------------------------
  // The reference serializer's byte fixtures: lola's writer must produce the same bytes.

  TEST_CASE("writer reproduces the reference serializer's bytes") {
    SUBCASE("test_serialization: F32 [1,2,3], a 64-byte header needing no padding") {
      Eigen::Matrix<float, 1, 6> values;
      values << 0, 1, 2, 3, 4, 5;
      const auto out = io::serialize_safetensors({io::tensor::from_matrix("attn.0", io::dtype::F32, {1, 2, 3}, values)});
      const unsigned char expected[] = {
          64,  0,   0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,  34,  58,  123, 34,  100,
          116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,  44,  34,  115, 104, 97,  112, 101, 34,
          58,  91,  49,  44,  50,  44,  51,  93,  44,  34,  100, 97,  116, 97,  95,  111, 102, 102, 115,
          101, 116, 115, 34,  58,  91,  48,  44,  50,  52,  93,  125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
          0,   0,   0,   64,  0,   0,   64,  64,  0,   0,   128, 64,  0,   0,   160, 64};
      REQUIRE(out.size() == sizeof expected);
      CHECK(std::memcmp(out.data(), expected, sizeof expected) == 0);
    }
    SUBCASE("test_serialization_fp4: F4 [1,2] in one byte, header padded with 4 spaces") {
      const auto out = io::serialize_safetensors({{"attn.0", io::dtype::F4, {1, 2}, {std::byte{0}}}});
      const unsigned char expected[] = {
          64,  0,   0,   0,   0,   0,   0,  0,  123, 34,  97,  116, 116, 110, 46,  48,  34,  58,  123, 34, 100,
          116, 121, 112, 101, 34,  58,  34, 70, 52,  34,  44,  34,  115, 104, 97,  112, 101, 34,  58,
          91,  49,  44,  50,  93,  44,  34, 100, 97, 116, 97,  95,  111, 102, 102, 115, 101, 116,
          115, 34,  58,  91,  48,  44,  49, 93, 125, 125, 32,  32,  32,  32,  0};
      REQUIRE(out.size() == sizeof expected);
      CHECK(std::memcmp(out.data(), expected, sizeof expected) == 0);
    }
    SUBCASE("test_empty: no tensors, without and with metadata") {
      const auto empty = io::serialize_safetensors({});
      const unsigned char expected_empty[] = {8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32};
      REQUIRE(empty.size() == sizeof expected_empty);
      CHECK(std::memcmp(empty.data(), expected_empty, sizeof expected_empty) == 0);

      const auto with_metadata = io::serialize_safetensors({}, {{"framework", "pt"}});
      const unsigned char expected_metadata[] = {
          40, 0,   0,   0,   0,   0,   0,   0,   123, 34,  95,  95,  109, 101, 116, 97, 100, 97,  116, 97, 95,
          95, 34,  58,  123, 34,  102, 114, 97,  109, 101, 119, 111, 114, 107, 34, 58,  34,  112,
          116, 34, 125, 125, 32,  32,  32,  32,  32};
      REQUIRE(with_metadata.size() == sizeof expected_metadata);
      CHECK(std::memcmp(with_metadata.data(), expected_metadata, sizeof expected_metadata) == 0);
    }
    SUBCASE("test_serialization_forced_alignement: a 65-byte header padded to 72") {
      Eigen::Matrix<float, 1, 6> values;
      values << 0, 1, 2, 3, 4, 5;
      const auto out = io::serialize_safetensors({io::tensor::from_matrix("attn0", io::dtype::F32, {1, 1, 2, 3}, values)});
      const unsigned char expected[] = {
          72,  0,   0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 48,  34,  58,  123, 34,  100, 116,
          121, 112, 101, 34,  58,  34,  70,  51,  50,  34,  44,  34,  115, 104, 97,  112, 101, 34,  58,
          91,  49,  44,  49,  44,  50,  44,  51,  93,  44,  34,  100, 97,  116, 97,  95,  111, 102, 102,
          115, 101, 116, 115, 34,  58,  91,  48,  44,  50,  52,  93,  125, 125, 32,  32,  32,  32,  32,
          32,  32,  0,   0,   0,   0,   0,   0,   128, 63,  0,   0,   0,   64,  0,   0,   64,  64,  0,   0,
          128, 64,  0,   0,   160, 64};
      REQUIRE(out.size() == sizeof expected);
      CHECK(std::memcmp(out.data(), expected, sizeof expected) == 0);
      const auto view = parse(out);
      CHECK(reinterpret_cast<std::uintptr_t>(view.bytes(view.tensors().at(0))) % 4 == 0);
    }
  }

  TEST_CASE("writer rejects the reference's invalid tensor views and lola's naming rules") {
    auto check_writer_error = [](const std::vector<io::tensor>& tensors, const io::metadata_map& metadata,
                                 std::initializer_list<std::string_view> fragments) {
      try {
        io::serialize_safetensors(tensors, metadata);
        FAIL_CHECK("the writer accepted it");
      } catch (const lola::error& e) {
        CHECK(e.code() == lola::error_code::invalid_argument);
        for (auto f : fragments) CHECK_MESSAGE(contains(e.what(), f), "\"", std::string(f), "\" is not in: ", e.what());
      }
    };
    const std::vector<std::byte> two(2), four(4);
    // test_serialization_fp4_misaligned: F4 [1,3] is 12 bits.
    check_writer_error({{"attn.0", io::dtype::F4, {1, 3}, two}}, {}, {"\"attn.0\"", "2 bytes", "[1, 3]", "F4"});
    // test_serialization_fp4_invalid: F4 [1,2] is one byte, not two.
    check_writer_error({{"attn.0", io::dtype::F4, {1, 2}, two}}, {}, {"\"attn.0\"", "2 bytes", "[1, 2]"});
    check_writer_error({{"w", io::dtype::F32, {2}, four}}, {}, {"\"w\"", "4 bytes", "[2]", "F32"});
    check_writer_error({{"w", io::dtype::F32, {1}, four}, {"w", io::dtype::F16, {2}, four}}, {},
                       {"duplicate tensor name \"w\""});
    // safetensors#849: the reference writes a file it cannot read back.
    check_writer_error({{"__metadata__", io::dtype::F32, {1}, four}}, {}, {"\"__metadata__\""});
    check_writer_error({}, {{"k", "a"}, {"k", "b"}}, {"duplicate key \"k\""});
    // Overflowing shapes are a size mismatch, not a wrap-around.
    check_writer_error({{"big", io::dtype::U8, {1ULL << 32, 1ULL << 32}, {}}}, {}, {"\"big\""});
  }

  // ---------------------------------------------------------------------------------------------
  // lola's own rules (research note §1.6) and the header's JSON schema.

  TEST_CASE("duplicate tensor names are rejected by name") {
    const std::string header = "{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("w", "U8", "[1]", 1, 2) + "}";
    check_rejected(st_image(header, 2), {"header", "duplicate key \"w\""});
    // The reference would keep the last entry and report a misleading gap at [0,1); a duplicate
    // that leaves no hole is the parser differential TOB-SFTN-7.
    const std::string same = "{" + entry("w", "U8", "[1]", 0, 1) + "," + entry("w", "U8", "[1]", 0, 1) + "}";
    check_rejected(st_image(same, 1), {"duplicate key \"w\""});
    check_rejected(st_image(R"({"__metadata__":{},"__metadata__":{}})", 0), {"duplicate key \"__metadata__\""});
  }

  TEST_CASE("__metadata__: a string to string map, duplicates rejected, order kept") {
    check_rejected(st_image(R"({"__metadata__":{"format":"pt","format":"np"}})", 0),
                   {"header", "duplicate key \"format\""});
    // Reference behaviour (safetensors#278): a non-string value is rejected.
    check_rejected(st_image(R"({"__metadata__":{"a":0}})", 0),
                   {"__metadata__ entry \"a\" is not a string"});
    check_rejected(st_image(R"({"__metadata__":{"a":{"b":"c"}}})", 0), {"__metadata__ entry \"a\""});
    check_rejected(st_image(R"({"__metadata__":["a","b"]})", 0), {"__metadata__ is not a JSON object"});
    check_rejected(st_image(R"({"__metadata__":"pt"})", 0), {"__metadata__ is not a JSON object"});

    const std::string header = R"({"__metadata__":{"format":"pt","ss_network_dim":"4","é\n":"\u00e9"},)" +
                               entry("w", "U8", "[1]", 0, 1) + "}";
    const auto view_file = load(st_image(header, 1));
    const auto& view = view_file.view();
    const io::metadata_map expected{{"format", "pt"}, {"ss_network_dim", "4"}, {"\xc3\xa9\n", "\xc3\xa9"}};
    CHECK(view.metadata() == expected);
    CHECK(view.tensors().size() == 1);
    CHECK(view.find("__metadata__") == nullptr);
  }

  TEST_CASE("tensor entries: unknown fields, missing fields and wrong types are rejected") {
    const auto one = [](std::string_view body) { return st_image("{\"t\":" + std::string(body) + "}", 4); };
    check_rejected(one(R"({"dtype":"I32","shape":[1],"data_offsets":[0,4],"offset":0})"),
                   {tensor_named("t"), "unknown field \"offset\""});
    check_rejected(one(R"({"shape":[1],"data_offsets":[0,4]})"), {tensor_named("t"), "missing field \"dtype\""});
    check_rejected(one(R"({"dtype":"I32","data_offsets":[0,4]})"), {tensor_named("t"), "missing field \"shape\""});
    check_rejected(one(R"({"dtype":"I32","shape":[1]})"), {tensor_named("t"), "missing field \"data_offsets\""});
    check_rejected(one(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})"), {tensor_named("t"), "dtype is not a string"});
    check_rejected(one(R"({"dtype":"I32","shape":1,"data_offsets":[0,4]})"), {tensor_named("t"), "shape is not an array"});
    check_rejected(one(R"({"dtype":"I32","shape":[1],"data_offsets":[0,4,8]})"),
                   {tensor_named("t"), "data_offsets is not an array of two integers"});
    check_rejected(one(R"({"dtype":"I32","shape":[1],"data_offsets":{"begin":0,"end":4}})"),
                   {tensor_named("t"), "data_offsets is not an array of two integers"});
    check_rejected(one(R"(["I32",[1],[0,4]])"), {tensor_named("t"), "not a JSON object"});
    check_rejected(one(R"(null)"), {tensor_named("t"), "not a JSON object"});
    // Field order inside an entry is free.
    CHECK_NOTHROW(parse(one(R"({"data_offsets":[0,4],"shape":[1],"dtype":"I32"})")));
  }

  TEST_CASE("unknown dtype strings are rejected; names are case-sensitive") {
    for (const char* name : {"F17", "f32", "float32", "FP16", "F8", "", "F32 "})
      check_rejected(st_image("{" + entry("t", name, "[1]", 0, 4) + "}", 4),
                     {tensor_named("t"), "unknown dtype \"" + std::string(name) + "\""});
  }

  TEST_CASE("shape and offset values must be unsigned 64-bit integers") {
    for (const char* shape : {"[-1]", "[1.5]", "[1.0]", "[1e0]", "[18446744073709551616]", "[\"1\"]", "[null]", "[true]"})
      check_rejected(st_image("{" + entry("t", "U8", shape, 0, 1) + "}", 1),
                     {tensor_named("t"), "shape entries must be unsigned 64-bit integers"});
    const auto with_offsets = [](std::string_view offsets) {
      return st_image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":)" + std::string(offsets) + "}}", 1);
    };
    for (const char* offsets : {"[-1,0]", "[0,-1]", "[0,1.0]", "[0.5,1]", "[0,1e0]", "[0,18446744073709551616]",
                                "[18446744073709551616,1]", "[\"0\",1]"})
      check_rejected(with_offsets(offsets), {tensor_named("t"), "data_offsets must be unsigned 64-bit integers"});
    CHECK_NOTHROW(parse(with_offsets("[0,1]")));
    // 2^64 - 1 is a valid u64: accepted in a zero-size tensor.
    const auto view_file = load(st_image("{" + entry("z", "F32", "[18446744073709551615,0]", 0, 0) + "}", 0));
    const auto& view = view_file.view();
    CHECK(view.tensors().at(0).shape.at(0) == std::numeric_limits<std::uint64_t>::max());
    CHECK(view.tensors().at(0).element_count() == 0);
  }

  TEST_CASE("tensors must tile the data buffer: gap, overlap, start, end < begin") {
    SUBCASE("a gap between tensors") {
      const std::string header = "{" + entry("a", "U8", "[2]", 0, 2) + "," + entry("b", "U8", "[2]", 3, 5) + "}";
      check_rejected(st_image(header, 5), {tensor_named("b"), "[3, 5) leaves a gap", "should begin at 2"});
    }
    SUBCASE("overlapping tensors") {
      const std::string header = "{" + entry("a", "U8", "[2]", 0, 2) + "," + entry("b", "U8", "[2]", 1, 3) + "}";
      check_rejected(st_image(header, 3), {tensor_named("b"), "[1, 3) overlaps the previous tensor", "should begin at 2"});
    }
    SUBCASE("the first tensor does not begin at 0") {
      check_rejected(st_image("{" + entry("a", "U8", "[2]", 1, 3) + "}", 3),
                     {tensor_named("a"), "[1, 3) leaves a gap", "should begin at 0"});
    }
    SUBCASE("end before begin") {
      const std::string header = "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[0]", 4, 2) + "}";
      check_rejected(st_image(header, 4), {tensor_named("b"), "[4, 2) ends before it begins"});
    }
    SUBCASE("an offset far past the end of the file") {
      const std::string header = "{" + entry("a", "U8", "[4]", 0, 4) + "," + entry("b", "U8", "[4]", 4, 8) + "}";
      check_rejected(st_image(header, 4), {"cover 8 bytes of a data buffer of 4", "truncated"});
    }
    SUBCASE("header order is free; the layout is checked in offset order") {
      const std::string header = "{" + entry("c", "U8", "[1]", 3, 4) + "," + entry("a", "U8", "[2]", 0, 2) + "," +
                                 entry("b", "U8", "[1]", 2, 3) + "}";
      const auto view_file = load(st_image(header, 4));
      const auto& view = view_file.view();
      REQUIRE(view.tensors().size() == 3);
      CHECK(view.tensors()[0].name == "c");  // header order is kept
      CHECK(view.tensors()[1].name == "a");
      CHECK(view.tensors()[2].name == "b");
      REQUIRE(view.find("b") != nullptr);
      CHECK(view.find("b")->begin == 2);
    }
  }

  TEST_CASE("the header cap is a parameter, applied both ways") {
    const std::string header = padded("{" + entry("w", "U8", "[1]", 0, 1) + "}");
    const auto image = st_image(header, 1);
    const auto n = header.size();
    io::read_options cap;
    cap.max_header_bytes = n - 1;
    check_rejected(image, {"header length " + std::to_string(n), "exceeds the limit of " + std::to_string(n - 1)}, cap);
    cap.max_header_bytes = n;
    CHECK_NOTHROW(parse(image, cap));

    // The default is the reference's 100,000,000: one byte more fails on the cap, and raising the
    // cap moves the failure on to the next rule (the header is not there).
    const auto just_over = to_bytes(le64(100'000'001));
    check_rejected(just_over, {"header length 100000001", "exceeds the limit of 100000000"});
    check_rejected(to_bytes(le64(100'000'000)), {"header length 100000000", "runs past the end"});
    cap.max_header_bytes = 200'000'000;
    const std::string raised = rejection(just_over, cap);
    CHECK(contains(raised, "runs past the end"));
    CHECK_FALSE(contains(raised, "exceeds the limit"));
  }

  TEST_CASE("the header must be a JSON object") {
    for (const char* header : {"[]", "[{}]", "\"{}\"", "1", "null", "true"})
      check_rejected(st_image(header, 0), {"the header is not a JSON object"});
    check_rejected(st_image("", 0), {"header", "invalid JSON"});
    check_rejected(st_image("   ", 0), {"header", "invalid JSON"});
    check_rejected(st_image("{}{}", 0), {"header", "trailing characters"});
    check_rejected(st_image(R"({"a":1,})", 0), {"header", "invalid JSON"});
  }

  TEST_CASE("JSON nesting deeper than 128 levels is rejected") {
    const auto nested = [](int arrays) {
      return "{\"x\":" + std::string(static_cast<std::size_t>(arrays), '[') +
             std::string(static_cast<std::size_t>(arrays), ']') + "}";
    };
    // 128 levels (the object and 127 arrays) pass the JSON stage and fail on the entry's type.
    const std::string at_limit = rejection(st_image(nested(127), 0));
    CHECK(contains(at_limit, "tensor \"x\": the entry is not a JSON object"));
    CHECK_FALSE(contains(at_limit, "nesting"));
    check_rejected(st_image(nested(128), 0), {"header", "nesting deeper than 128 levels"});
    // Far deeper input fails the same way, without recursion.
    check_rejected(st_image(std::string(100'000, '['), 0), {"nesting deeper than 128 levels"});
  }

  // ---------------------------------------------------------------------------------------------
  // Files that are not safetensors are named for what they are.

  TEST_CASE("diagnosis: Git LFS pointers, zip and pickle checkpoints, HTML pages, GGUF, JSON") {
    struct sample {
      const char* what;
      std::string bytes;
      const char* says;
    };
    const sample samples[] = {
        {"git-lfs pointer",
         "version https://git-lfs.github.com/spec/v1\n"
         "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 123\n",
         "Git LFS pointer"},
        {"zip (torch.save)", std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) + "archive/data.pkl", "zip archive"},
        {"empty zip", std::string("PK\x05\x06", 4) + std::string(18, '\0'), "zip archive"},
        {"pickle protocol 2",
         std::string("\x80\x02}q\x00(X\x06\x00\x00\x00", 11) + "weightq\x01" + "ctorch._utils\n_rebuild_tensor_v2\n",
         "Python pickle"},
        {"pickle protocol 4", std::string("\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", 14), "Python pickle"},
        {"HTML page", "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n", "HTML"},
        {"HTML without doctype", "\n  <HTML><body>Access denied</body></HTML>", "HTML"},
        {"short HTML", "<html>", "HTML"},
        {"GGUF", std::string("GGUF\x03\x00\x00\x00", 8) + std::string(16, '\0'), "GGUF"},
        {"a JSON document", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096}", "JSON document"},
    };
    for (const auto& s : samples) {
      INFO(s.what);
      check_rejected(to_bytes(s.bytes), {s.says});
    }
    // Through a file, the message names the path.
    temp_dir dir;
    const std::string path = dir.file("model.safetensors");
    write_bytes(path, to_bytes(samples[0].bytes));
    try {
      io::safetensors_file::open(path);
      FAIL_CHECK("a Git LFS pointer was accepted");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_file);
      CHECK(contains(e.what(), path));
      CHECK(contains(e.what(), "git lfs pull"));
    }
    // A valid file is not "diagnosed".
    CHECK_NOTHROW(parse(st_image("{}", 0)));
  }

  // A truncated real safetensors file with N = 0x0280 (640: a multiple of 8, as the reference
  // writer pads) must not be called "a Python pickle", nor one with N = 0x7B (123) "a JSON
  // document": a plausible header length is never read as a signature.
  TEST_CASE("a real header length is not mistaken for a magic number") {
    const std::string header = padded("{" + entry("w", "F32", "[1]", 0, 4) + "}");
    for (std::uint64_t n : {0x0280ULL, 0x0380ULL, 0x7BULL, 0x5BULL}) {
      INFO("N = ", n);
      const auto image = to_bytes(le64(n) + header);  // truncated inside the header
      const std::string what = rejection(image);
      CHECK(contains(what, "runs past the end"));
      CHECK_FALSE(contains(what, "pickle"));
      CHECK_FALSE(contains(what, "JSON document"));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Acceptance and decoding.

  TEST_CASE("every reference dtype parses, with its byte count") {
    // The dtype names, bits and enum order match the reference's.
    REQUIRE(std::size(reference_dtypes) == std::size(io::detail::dtype_table));
    for (std::size_t i = 0; i < std::size(reference_dtypes); ++i) {
      const auto& d = reference_dtypes[i];
      INFO(std::string(d.name));
      const auto parsed = io::parse_dtype(d.name);
      REQUIRE(parsed.has_value());
      CHECK(static_cast<std::size_t>(*parsed) == i);
      CHECK(io::dtype_name(*parsed) == d.name);
      CHECK(io::dtype_bits(*parsed) == d.bits);
    }
    // One file per dtype: [2, 4] is 8 elements, 8 · bits / 8 = bits bytes (F4: 4, F6: 6).
    for (const auto& d : reference_dtypes) {
      INFO(std::string(d.name));
      const auto image = st_image("{" + entry("t", d.name, "[2,4]", 0, d.bits) + "}", d.bits);
      const auto view = parse(image);
      REQUIRE(view.tensors().size() == 1);
      CHECK(io::dtype_name(view.tensors()[0].dtype) == d.name);
      CHECK(view.tensors()[0].byte_count() == d.bits);
      CHECK(view.tensors()[0].element_count() == 8);
      check_rejected(st_image("{" + entry("t", d.name, "[2,4]", 0, d.bits + 1) + "}", d.bits + 1),
                     {tensor_named("t"), "needs " + std::to_string(d.bits)});
    }
    // All of them in one file, in reverse order.
    std::string header = "{";
    std::uint64_t offset = 0;
    for (std::size_t i = std::size(reference_dtypes); i-- > 0;) {
      const auto& d = reference_dtypes[i];
      header += (offset ? "," : "") + entry("t_" + std::string(d.name), d.name, "[4,2]", offset, offset + d.bits);
      offset += d.bits;
    }
    header += "}";
    const auto view_file = load(st_image(header, offset));
    const auto& view = view_file.view();
    CHECK(view.tensors().size() == std::size(reference_dtypes));
    for (const auto& d : reference_dtypes) {
      const auto* t = view.find("t_" + std::string(d.name));
      REQUIRE(t != nullptr);
      CHECK(io::dtype_name(t->dtype) == d.name);
      CHECK(t->byte_count() == d.bits);
    }
  }

  TEST_CASE_TEMPLATE("F64, F32, F16 and BF16 decode to the exact values of known bit patterns", T, float, double) {
    struct f16_case {
      std::uint16_t bits;
      double value;
    };
    // F16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
    const f16_case f16[] = {{0x3C00, 1.0},
                            {0xC000, -2.0},
                            {0x0001, std::ldexp(1.0, -24)},  // the smallest subnormal
                            {0x03FF, std::ldexp(1023.0, -24)},
                            {0x0400, std::ldexp(1.0, -14)},  // the smallest normal
                            {0x7BFF, 65504.0},
                            {0x3555, 0.333251953125},
                            {0x7C00, HUGE_VAL},
                            {0xFC00, -HUGE_VAL}};
    // BF16: the upper half of an F32.
    const f16_case bf16[] = {{0x3F80, 1.0},
                             {0xC000, -2.0},
                             {0x0001, std::ldexp(1.0, -133)},
                             {0x3EAB, 0.333984375},
                             {0x7F7F, std::ldexp(255.0, 120)},  // the largest finite BF16
                             {0xFF80, -HUGE_VAL}};
    const std::uint32_t f32[] = {0x3F800000, 0x00000001, 0xC0490FDB, 0x7F7FFFFF};
    const double f32_values[] = {1.0, std::ldexp(1.0, -149), -static_cast<double>(3.14159265358979323846f),
                                 std::ldexp(16777215.0, 104)};
    const std::uint64_t f64[] = {0x3FF0000000000000, 0x3FB999999999999A, 0x0000000000000001, 0xC00921FB54442D18};
    const double f64_values[] = {1.0, 0.1, std::ldexp(1.0, -1074), -3.141592653589793};

    std::string data, header = "{";
    auto add = [&](const char* name, const char* dtype, const std::string& shape, const std::string& bytes) {
      header += (data.empty() ? "" : ",") + entry(name, dtype, shape, data.size(), data.size() + bytes.size());
      data += bytes;
    };
    const auto vector_of = [](std::size_t n) { return "[" + std::to_string(n) + "]"; };
    std::string bytes;
    for (const auto& c : f16) bytes += le16(c.bits);
    add("f16", "F16", vector_of(std::size(f16)), bytes);
    bytes.clear();
    for (const auto& c : bf16) bytes += le16(c.bits);
    add("bf16", "BF16", vector_of(std::size(bf16)), bytes);
    bytes.clear();
    for (auto b : f32) bytes += le32(b);
    add("f32", "F32", vector_of(std::size(f32)), bytes);
    bytes.clear();
    for (auto b : f64) bytes += le64(b);
    add("f64", "F64", vector_of(std::size(f64)), bytes);
    // NaN and negative zero as 0-d tensors.
    add("f16_nan", "F16", "[]", le16(0x7E00));
    add("f16_negzero", "F16", "[]", le16(0x8000));
    header += "}";
    const auto image = st_image(header, data);
    const auto view = parse(image);

    const auto expect = [&](const char* name, const double* values, std::size_t n) {
      const auto m = view.template matrix<T>(view.at(name));
      REQUIRE(m.rows() == static_cast<Eigen::Index>(n));
      REQUIRE(m.cols() == 1);
      for (std::size_t i = 0; i < n; ++i) {
        INFO(name, "[", i, "]");
        CHECK(m(static_cast<Eigen::Index>(i), 0) == static_cast<T>(values[i]));  // exact: no tolerance
      }
    };
    std::vector<double> values;
    for (const auto& c : f16) values.push_back(c.value);
    expect("f16", values.data(), values.size());
    values.clear();
    for (const auto& c : bf16) values.push_back(c.value);
    expect("bf16", values.data(), values.size());
    expect("f32", f32_values, std::size(f32_values));
    // F64 → float rounds to nearest: 0.1 becomes 0.1f, 2^-1074 becomes 0.
    expect("f64", f64_values, std::size(f64_values));

    const auto nan = view.template matrix<T>(view.at("f16_nan"));
    REQUIRE(nan.rows() == 1);
    REQUIRE(nan.cols() == 1);
    CHECK(std::isnan(nan(0, 0)));
    const auto negzero = view.template matrix<T>(view.at("f16_negzero"));
    CHECK(negzero(0, 0) == T(0));
    CHECK(std::signbit(negzero(0, 0)));
    CHECK(view.scalar(view.at("f16_negzero")) == 0.0);
    CHECK(std::isnan(view.scalar(view.at("f16_nan"))));
  }

  TEST_CASE("other dtypes are not converted: error_code::unsupported naming the tensor") {
    std::string header = "{";
    std::uint64_t offset = 0;
    for (const auto& d : reference_dtypes) {
      const std::uint64_t bytes = d.bits;  // [8] elements
      header += (offset ? "," : "") + entry("t_" + std::string(d.name), d.name, "[8]", offset, offset + bytes);
      offset += bytes;
    }
    header += ",\"one_i32\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + 4) + "]}}";
    const auto image = st_image(header, offset + 4);
    const auto view = parse(image);
    for (const auto& d : reference_dtypes) {
      const auto& t = view.at("t_" + std::string(d.name));
      INFO(std::string(d.name));
      if (io::is_math_dtype(t.dtype)) {
        CHECK(view.matrix<float>(t).size() == 8);
        continue;
      }
      for (int kind = 0; kind < 2; ++kind) {
        try {
          if (kind == 0) view.matrix<float>(t);
          else view.matrix<double>(t, 2, 4);
          FAIL_CHECK("converted a ", std::string(d.name), " tensor");
        } catch (const lola::error& e) {
          CHECK(e.code() == lola::error_code::unsupported);
          CHECK(contains(e.what(), fixture_source));
          CHECK(contains(e.what(), tensor_named(t.name)));
          CHECK(contains(e.what(), "dtype " + std::string(d.name)));
        }
      }
      CHECK_FALSE(view.map<float>(t).has_value());
    }
    try {
      view.scalar(view.at("one_i32"));
      FAIL_CHECK("converted an I32 scalar");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::unsupported);
      CHECK(contains(e.what(), tensor_named("one_i32")));
    }
  }

  TEST_CASE("matrix shapes: 0-d, vectors, reshapes, conv kernels; scalar(); find and at") {
    const std::string data = f32_bytes({1, 2, 3, 4, 5, 6}) + f32_bytes({7}) + f32_bytes({8, 9});
    const std::string header = "{" + entry("k", "F32", "[1,2,3]", 0, 24) + "," + entry("s", "F32", "[]", 24, 28) + "," +
                               entry("v", "F32", "[2]", 28, 36) + "," + entry("e", "F32", "[0,3]", 36, 36) + "}";
    const auto view_file = load(st_image(header, data));
    const auto& view = view_file.view();
    const auto k = view.matrix<double>(view.at("k"));
    CHECK(k.rows() == 1);
    CHECK(k.cols() == 6);  // shape[0] × Π shape[1:]
    CHECK(k(0, 5) == 6.0);
    const auto k23 = view.matrix<float>(view.at("k"), 2, 3);
    CHECK(k23(1, 0) == 4.0f);  // row-major
    CHECK(view.matrix<float>(view.at("s")).size() == 1);
    CHECK(view.scalar(view.at("s")) == 7.0);
    const auto v = view.matrix<float>(view.at("v"));
    CHECK(v.rows() == 2);
    CHECK(v.cols() == 1);
    const auto e = view.matrix<float>(view.at("e"));
    CHECK(e.rows() == 0);
    CHECK(e.cols() == 3);
    for (auto [rows, cols] : {std::pair<Eigen::Index, Eigen::Index>{4, 2}, {-1, -6}, {6, 0}}) {
      try {
        view.matrix<float>(view.at("k"), rows, cols);
        FAIL_CHECK("read [1,2,3] as ", rows, "x", cols);
      } catch (const lola::error& err) {
        CHECK(err.code() == lola::error_code::shape_mismatch);
        CHECK(contains(err.what(), tensor_named("k")));
        CHECK(contains(err.what(), "[1, 2, 3]"));
      }
    }
    try {
      view.scalar(view.at("v"));
      FAIL_CHECK("a vector read as a scalar");
    } catch (const lola::error& err) {
      CHECK(err.code() == lola::error_code::shape_mismatch);
      CHECK(contains(err.what(), tensor_named("v")));
    }
    CHECK(view.find("nope") == nullptr);
    try {
      view.at("nope");
      FAIL_CHECK("found a missing tensor");
    } catch (const lola::error& err) {
      CHECK(err.code() == lola::error_code::invalid_argument);
      CHECK(contains(err.what(), fixture_source));
      CHECK(contains(err.what(), "\"nope\""));
    }
    // A zero-size tensor whose dimension does not fit an index is refused, not wrapped.
    const auto huge_file = load(st_image("{" + entry("z", "F32", "[18446744073709551615,0]", 0, 0) + "}", 0));
    const auto& huge = huge_file.view();
    try {
      huge.matrix<float>(huge.at("z"));
      FAIL_CHECK("indexed 2^64 - 1 rows");
    } catch (const lola::error& err) {
      CHECK(err.code() == lola::error_code::unsupported);
      CHECK(contains(err.what(), tensor_named("z")));
    }
  }

  TEST_CASE("an unaligned tensor decodes correctly and is never mapped") {
    // U8 [1] first, then F32 [2,2] at data offset 1: the F32 sits at an odd file offset.
    const std::string header =
        padded("{" + entry("byte", "U8", "[1]", 0, 1) + "," + entry("w", "F32", "[2,2]", 1, 17) + "}");
    const auto image = st_image(header, std::string("\x7f", 1) + f32_bytes({1.5f, -2.25f, 3e-39f, 65504.f}));
    const auto view = parse(image);
    const auto& w = view.at("w");
    REQUIRE(reinterpret_cast<std::uintptr_t>(view.bytes(w)) % alignof(float) != 0);
    const auto m = view.matrix<float>(w);
    CHECK(m(0, 0) == 1.5f);
    CHECK(m(0, 1) == -2.25f);
    CHECK(m(1, 0) == 3e-39f);  // a float subnormal survives
    CHECK(m(1, 1) == 65504.f);
    CHECK(view.matrix<double>(w)(0, 1) == -2.25);
    CHECK_FALSE(view.map<float>(w).has_value());
    CHECK_FALSE(view.map<double>(w).has_value());

    // The same bytes from a mapped (page-aligned) file.
    temp_dir dir;
    const std::string path = dir.file("unaligned.safetensors");
    write_bytes(path, image);
    const auto file = io::safetensors_file::open(path);
    const auto& fw = file->at("w");
    CHECK((file->data_offset() + fw.begin) % 4 == 1);
    CHECK_FALSE(file->map<float>(fw).has_value());
    CHECK(file->matrix<float>(fw) == m);
  }

  TEST_CASE("an aligned F32 tensor of a mapped file is viewed without a copy") {
    temp_dir dir;
    const std::string path = dir.file("aligned.safetensors");
    Eigen::Matrix<float, 3, 4, Eigen::RowMajor> w;
    w << 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;
    Eigen::Matrix<double, 2, 2> d;
    d << 0.5, -1, 1e-300, 2;
    io::write_safetensors(path, {io::tensor::from_matrix("w", io::dtype::F32, {3, 4}, w),
                                 io::tensor::from_matrix("d", io::dtype::F64, {2, 2}, d),
                                 io::tensor::from_matrix("h", io::dtype::F16, {4}, Eigen::Vector4f(1, 2, 3, 4))});
    const auto file = io::safetensors_file::open(path);
    const auto& t = file->at("w");
    const auto mapped = file->map<float>(t);
    REQUIRE(mapped.has_value());
    CHECK(static_cast<const void*>(mapped->data()) == static_cast<const void*>(file->bytes(t)));
    CHECK(mapped->rows() == 3);
    CHECK(mapped->cols() == 4);
    CHECK((*mapped)(2, 1) == 10.0f);
    CHECK(*mapped == w);
    const auto mapped_d = file->map<double>(file->at("d"));
    REQUIRE(mapped_d.has_value());
    CHECK((*mapped_d)(1, 0) == 1e-300);  // row-major: the file holds d in row order
    // The dtype must be S's exactly: no map of F32 as double or of F16 as float.
    CHECK_FALSE(file->map<double>(t).has_value());
    CHECK_FALSE(file->map<float>(file->at("h")).has_value());
    const auto half = file->map<Eigen::half>(file->at("h"));
    REQUIRE(half.has_value());
    CHECK(static_cast<float>((*half)(3, 0)) == 4.0f);
  }

  TEST_CASE("safetensors_file: errors from the file system, and a moved object keeps its view") {
    temp_dir dir;
    for (const auto& path : {dir.file("missing.safetensors"), dir.path}) {
      try {
        io::safetensors_file::open(path);
        FAIL_CHECK("opened ", path);
      } catch (const lola::error& e) {
        CHECK(e.code() == lola::error_code::io);
        CHECK(contains(e.what(), path));
      }
    }
    const std::string empty = dir.file("empty.safetensors");
    write_bytes(empty, {});
    try {
      io::safetensors_file::open(empty);
      FAIL_CHECK("opened an empty file");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_file);
      CHECK(contains(e.what(), empty + ": not a safetensors file: 0 bytes"));
    }

    auto original = io::safetensors_file::from_bytes(
        st_image("{" + entry("w", "F32", "[2]", 0, 8) + "}", f32_bytes({3, 4})), "in-memory");
    const auto* before = original->bytes(original->at("w"));
    auto moved = std::move(original);
    CHECK(moved->source() == "in-memory");
    CHECK(moved->bytes(moved->at("w")) == before);
    CHECK(moved->matrix<float>(moved->at("w"))(1, 0) == 4.0f);
    io::safetensors_file assigned = io::safetensors_file::from_bytes(st_image("{}", 0), "other");
    assigned = std::move(moved);
    CHECK(assigned->matrix<float>(assigned->at("w"))(0, 0) == 3.0f);
  }

  // ---------------------------------------------------------------------------------------------
  // The writer.

  TEST_CASE("writer: random tensors of every dtype round-trip with the reference layout") {
    std::mt19937_64 rng(20240611);
    const std::size_t dtype_count = std::size(reference_dtypes);
    for (int round = 0; round < 40; ++round) {
      CAPTURE(round);
      std::vector<io::tensor> tensors;
      const int count = std::uniform_int_distribution<int>(1, 7)(rng);
      for (int i = 0; i < count; ++i) {
        const auto type = static_cast<io::dtype>(rng() % dtype_count);
        std::vector<std::uint64_t> shape;
        std::uint64_t elements = 1;
        do {  // like the reference's proptest: shapes whose bits are whole bytes
          shape.assign(static_cast<std::size_t>(rng() % 5), 0);  // 0-d included
          elements = 1;
          for (auto& s : shape) elements *= (s = rng() % 5);      // zero sizes included
        } while (elements * io::dtype_bits(type) % 8 != 0);
        std::string name = "t." + std::to_string(i);
        if (rng() % 4 == 0) name += "\"\\\n\xc3\xa9";  // escaped in the header
        if (io::is_math_dtype(type) && rng() % 2) {
          Eigen::MatrixXd values = Eigen::MatrixXd::Random(1, static_cast<Eigen::Index>(elements)) * 100.0;
          tensors.push_back(io::tensor::from_matrix(name, type, shape, values));
        } else {
          std::vector<std::byte> data(static_cast<std::size_t>(elements * io::dtype_bits(type) / 8));
          for (auto& b : data) b = static_cast<std::byte>(rng());
          tensors.push_back({name, type, shape, std::move(data)});
        }
      }
      io::metadata_map metadata;
      if (round % 3) metadata = {{"format", "pt"}, {"round", std::to_string(round)}, {"ü", "a\tb"}};

      const auto bytes = io::serialize_safetensors(tensors, metadata);
      const std::uint64_t n = header_length(bytes);
      CHECK(n % 8 == 0);
      const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, static_cast<std::size_t>(n));
      const auto last = header.find_last_not_of(' ');
      REQUIRE(last != std::string::npos);
      CHECK(header[last] == '}');
      CHECK(n - (last + 1) < 8);  // at most 7 spaces of padding
      if (!metadata.empty()) CHECK(header.rfind("{\"__metadata__\":{", 0) == 0);
      CHECK_NOTHROW(io::parse_json(header));  // trailing spaces are JSON whitespace

      const auto file = io::safetensors_file::from_bytes(bytes, "roundtrip");
      const auto& view = file.view();
      CHECK(view.metadata() == metadata);
      REQUIRE(view.tensors().size() == tensors.size());

      // The reference's order: dtype descending, then name; packed from 0; each aligned.
      std::vector<const io::tensor*> order;
      for (const auto& t : tensors) order.push_back(&t);
      std::sort(order.begin(), order.end(), [](const io::tensor* a, const io::tensor* b) {
        return a->dtype != b->dtype ? a->dtype > b->dtype : a->name < b->name;
      });
      std::uint64_t offset = 0;
      for (const auto* t : order) {
        INFO(t->name);
        const auto* info = view.find(t->name);
        REQUIRE(info != nullptr);
        CHECK(info->dtype == t->dtype);
        CHECK(info->shape == t->shape);
        CHECK(info->begin == offset);
        CHECK(info->byte_count() == t->data.size());
        CHECK(std::equal(t->data.begin(), t->data.end(), view.bytes(*info)));
        const unsigned element = std::max(1u, io::dtype_bits(t->dtype) / 8);
        CHECK((view.data_offset() + info->begin) % element == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(view.bytes(*info)) % element == 0);
        offset += t->data.size();
      }
      CHECK(bytes.size() == 8 + n + offset);

      // Re-serializing what was read gives the same bytes.
      std::vector<io::tensor> copies;
      for (const auto& info : view.tensors()) copies.push_back(io::tensor::copy_of(view, info));
      CHECK(io::serialize_safetensors(copies, view.metadata()) == bytes);
    }
  }

  TEST_CASE("writer: from_matrix rounds to the dtype and checks its arguments") {
    Eigen::Matrix<double, 2, 3> values;
    values << 1.0, 0.1, -65504.0, 1e6, std::ldexp(1.0, -24), 1.0 + std::ldexp(1.0, -11);
    // 1e6 is beyond F16: from_matrix refuses it (test_finite.cpp), so F16 gets 65519, which rounds
    // to F16's largest value 65504.
    Eigen::Matrix<double, 2, 3> f16_values = values;
    f16_values(1, 0) = 65519.0;
    const auto h = io::tensor::from_matrix("h", io::dtype::F16, {2, 3}, f16_values);
    const auto b = io::tensor::from_matrix("b", io::dtype::BF16, {2, 3}, values);
    const auto f = io::tensor::from_matrix("f", io::dtype::F32, {6}, values);
    const auto d = io::tensor::from_matrix("d", io::dtype::F64, {3, 2}, values);
    CHECK(h.data.size() == 12);
    CHECK(b.data.size() == 12);
    CHECK(f.data.size() == 24);
    CHECK(d.data.size() == 48);
    const auto view_bytes = io::serialize_safetensors({h, b, f, d});
    const auto view = parse(view_bytes);
    const auto hm = view.matrix<double>(view.at("h"));
    CHECK(hm(0, 0) == 1.0);
    CHECK(hm(0, 1) == 0.0999755859375);        // the F16 nearest 0.1
    CHECK(hm(0, 2) == -65504.0);
    CHECK(hm(1, 0) == 65504.0);                // below the rounding midpoint 65520: not inf
    CHECK(hm(1, 1) == std::ldexp(1.0, -24));   // the smallest subnormal
    CHECK(hm(1, 2) == 1.0);                    // a tie rounds to even
    const auto bm = view.matrix<double>(view.at("b"));
    CHECK(bm(0, 1) == 0.10009765625);          // the BF16 nearest 0.1
    CHECK(bm(1, 0) == 999424.0);
    CHECK(view.matrix<double>(view.at("f"), 2, 3) == values.cast<float>().cast<double>());
    // Values are read in row-major order whatever the source's storage order.
    const auto dm = view.matrix<double>(view.at("d"), 2, 3);
    CHECK(dm == values);
    // Row-major source gives the same bytes.
    const Eigen::Matrix<double, 2, 3, Eigen::RowMajor> row_major = values;
    CHECK(io::tensor::from_matrix("d", io::dtype::F64, {3, 2}, row_major).data == d.data);

    try {
      io::tensor::from_matrix("h", io::dtype::F16, {2, 3}, values);
      FAIL_CHECK("1e6 written as F16");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(contains(e.what(), "\"h\""));
    }
    try {
      io::tensor::from_matrix("w", io::dtype::F32, {4}, values);
      FAIL_CHECK("6 values written as [4]");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "\"w\""));
      CHECK(contains(e.what(), "[4]"));
    }
    try {
      io::tensor::from_matrix("q", io::dtype::I8, {6}, values);
      FAIL_CHECK("encoded I8");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::unsupported);
      CHECK(contains(e.what(), "\"q\""));
    }
  }

  TEST_CASE("write_safetensors writes atomically and safetensors_file::open reads it back") {
    temp_dir dir;
    const std::string path = dir.file("adapter.safetensors");
    Eigen::MatrixXf a = Eigen::MatrixXf::Random(4, 16);
    Eigen::MatrixXf b = Eigen::MatrixXf::Random(32, 4);
    const std::vector<io::tensor> tensors{io::tensor::from_matrix("m.lora_A.weight", io::dtype::F32, {4, 16}, a),
                                          io::tensor::from_matrix("m.lora_B.weight", io::dtype::BF16, {32, 4}, b)};
    io::write_safetensors(path, tensors, {{"format", "pt"}});
    CHECK(dir.entries() == std::vector<std::string>{"adapter.safetensors"});  // no temporary left

    {
      const auto file = io::safetensors_file::open(path);
      CHECK(file->source() == path);
      CHECK(file->metadata() == io::metadata_map{{"format", "pt"}});
      CHECK(file->matrix<float>(file->at("m.lora_A.weight")) == a);
      const auto back_b = file->matrix<float>(file->at("m.lora_B.weight"));
      CHECK((back_b - b).cwiseAbs().maxCoeff() <= 1.0f / 256);  // BF16 has 8 significant bits; |b| ≤ 1
      CHECK(std::filesystem::file_size(path) == io::serialize_safetensors(tensors, {{"format", "pt"}}).size());
    }

    // Overwriting replaces the file, again without leftovers.
    io::write_safetensors(path, {tensors[0]});
    CHECK(dir.entries() == std::vector<std::string>{"adapter.safetensors"});
    CHECK(io::safetensors_file::open(path)->tensors().size() == 1);

    // A tensor the writer rejects leaves the previous file untouched and creates nothing.
    CHECK_THROWS_AS(io::write_safetensors(path, {tensors[0], tensors[0]}), lola::error);
    CHECK(dir.entries() == std::vector<std::string>{"adapter.safetensors"});
    CHECK(io::safetensors_file::open(path)->tensors().size() == 1);

    // A directory that does not exist: error_code::io naming the path, nothing written.
    const std::string nowhere = dir.file("missing/adapter.safetensors");
    try {
      io::write_safetensors(nowhere, tensors);
      FAIL_CHECK("wrote into a missing directory");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::io);
      CHECK(contains(e.what(), nowhere));
    }
    CHECK(dir.entries() == std::vector<std::string>{"adapter.safetensors"});

    // Renaming over a directory fails and removes the temporary.
    const std::string blocked = dir.file("blocked");
    std::filesystem::create_directory(blocked);
    std::filesystem::create_directory(blocked + "/occupied");
    CHECK_THROWS_AS(io::write_safetensors(blocked, tensors), lola::error);
    CHECK(dir.entries() == std::vector<std::string>{"adapter.safetensors", "blocked"});
  }

  TEST_CASE("the writer refuses names and metadata that are not UTF-8 (no file nobody can read)") {
    // A header is UTF-8 JSON; the \udcXY escapes that could carry other bytes are rejected by
    // every reader, so such a string must stop the write, naming the string escaped.
    const auto one = io::tensor::from_matrix("w", io::dtype::F32, {1}, Eigen::Matrix<float, 1, 1>(1.0f));
    auto named = one;
    named.name = "bad\xff";
    std::string message;
    try {
      io::serialize_safetensors({named});
    } catch (const lola::error& e) {
      message = e.what();
      CHECK(e.code() == lola::error_code::invalid_argument);
    }
    CHECK(message.find("tensor name \"bad\\xFF\" is not valid UTF-8") != std::string::npos);
    CHECK_THROWS_AS(io::serialize_safetensors({one}, {{"template", "t\xc3"}}), lola::error);
    CHECK_THROWS_AS(io::serialize_safetensors({one}, {{"k\xed\xa0\x80", "v"}}), lola::error);
    // Well-formed UTF-8 (non-ASCII included) is written and read back as it is.
    auto fine = one;
    fine.name = "caf\xc3\xa9.\xf0\x9f\x98\x80";
    const auto bytes = io::serialize_safetensors({fine}, {{"note", "\xe2\x82\xac"}});
    const auto view = io::safetensors_view::parse(bytes.data(), bytes.size(), "mem");
    CHECK(view.find(fine.name) != nullptr);
  }
}
