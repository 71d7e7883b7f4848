#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "lola/core/parallel.hpp"

TEST_SUITE("core.parallel") {
  TEST_CASE("parallel_map equals the serial map, in order") {
    std::vector<int> items(1000);
    for (int i = 0; i < 1000; ++i) items[i] = i;
    const auto squares = lola::parallel_map(items, [](int x) { return long(x) * x; });
    REQUIRE(squares.size() == items.size());
    for (int i = 0; i < 1000; ++i) CHECK(squares[i] == long(i) * i);
  }

  TEST_CASE("every index runs once") {
    std::vector<std::atomic<int>> hits(257);
    lola::parallel_for(257, [&](lola::index i) { hits[i]++; });
    for (auto& h : hits) CHECK(h.load() == 1);
  }

  TEST_CASE("an exception reaches the caller; the lowest failing index wins") {
    try {
      lola::parallel_for(100, [](lola::index i) {
        if (i == 37 || i == 90) throw std::runtime_error("module " + std::to_string(i));
      });
      FAIL("no exception");
    } catch (const std::runtime_error& e) {
      // With several threads, 90 may fail before 37 is reached; 37 is reported when both ran.
      const std::string what = e.what();
      CHECK((what == "module 37" || what == "module 90"));
    }
    CHECK(lola::parallel_threads() >= 1);
  }
}
