#include <doctest/doctest.h>

#include <string>

#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"

TEST_SUITE("core.error") {
  TEST_CASE("lola::error carries its code and a prefixed message") {
    const lola::error e(lola::error_code::invalid_file, "model.safetensors: header past the end");
    CHECK(e.code() == lola::error_code::invalid_file);
    CHECK(std::string(e.what()) == "lola: model.safetensors: header past the end");
    const std::runtime_error& base = e;
    CHECK(std::string(base.what()).find("header past the end") != std::string::npos);
    CHECK(std::string(e.message()) == "model.safetensors: header past the end");
    // Wrapped once more with context, the prefix appears once.
    const lola::error wrapped(e.code(), std::string("adapter 3: ") + e.message());
    CHECK(std::string(wrapped.what()) == "lola: adapter 3: model.safetensors: header past the end");
    CHECK(std::string(lola::error(lola::error_code::io, "").message()).empty());
  }

  TEST_CASE("every code has a distinct name") {
    using lola::error_code;
    const error_code codes[] = {error_code::invalid_argument, error_code::shape_mismatch,
                                error_code::invalid_file,     error_code::unsupported,
                                error_code::numerical,        error_code::cuda,
                                error_code::io};
    for (auto a : codes)
      for (auto b : codes)
        CHECK((a == b) == (std::string(lola::to_string(a)) == lola::to_string(b)));
  }

  TEST_CASE("require_shapes names the operation and both shapes") {
    CHECK_NOTHROW(lola::detail::require_shapes(true, "op", "X", 1, 2, "Y", 3, 4));
    try {
      lola::detail::require_shapes(false, "merge_into", "W", 4096, 4096, "the expression", 4096,
                                   1024);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      const std::string what = e.what();
      CHECK(what.find("merge_into") != std::string::npos);
      CHECK(what.find("W is 4096x4096") != std::string::npos);
      CHECK(what.find("the expression is 4096x1024") != std::string::npos);
    }
  }
}
