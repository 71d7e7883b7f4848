#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
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

  TEST_CASE("with a grain, every index still runs once, in runs of consecutive items per thread") {
    const lola::executor two{2};
    CHECK(lola::fine_grain(two, 0) == 1);
    CHECK(lola::fine_grain(two, 15) == 1);
    CHECK(lola::fine_grain(two, 4096) == 256);  // 8 runs per thread
    for (lola::index grain : {lola::index(0), lola::index(1), lola::index(7), lola::index(300)}) {
      CAPTURE(grain);
      std::vector<std::atomic<int>> hits(257);
      std::vector<std::thread::id> owner(257);
      lola::parallel_for(two, 257, [&](lola::index i) {
        hits[i]++;
        owner[i] = std::this_thread::get_id();
      }, grain);
      for (auto& h : hits) CHECK(h.load() == 1);
      // A run starts at a multiple of the grain and one thread takes all of it.
      const lola::index run = std::max<lola::index>(grain, 1);
      for (lola::index i = 1; i < 257; ++i)
        if (i % run != 0) CHECK(owner[i] == owner[i - 1]);
    }
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

  TEST_CASE("an executor sets the threads of one call, and no global state") {
    const int before = lola::parallel_threads();
    const auto threads_used = [](const lola::executor& ex) {
      std::mutex mutex;
      std::set<std::thread::id> ids;
      lola::parallel_for(ex, 64, [&](lola::index) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // lets every thread take items
        const std::lock_guard<std::mutex> lock(mutex);
        ids.insert(std::this_thread::get_id());
      });
      return ids;
    };
    const auto serial = threads_used(lola::executor::serial());
    CHECK(serial.size() == 1);
    CHECK(serial.count(std::this_thread::get_id()) == 1);  // the calling thread itself
    CHECK(threads_used(lola::executor{2}).size() <= 2);
    CHECK(threads_used(lola::executor{}).size() <= static_cast<std::size_t>(before));
    CHECK(lola::parallel_threads() == before);  // nothing global changed
    // Counts out of range are clamped, never passed to OpenMP as they are.
    CHECK(lola::executor{-5}.thread_count() == 1);
    CHECK(lola::executor{1 << 30}.thread_count() == lola::parallel_thread_cap());
    CHECK(lola::executor{}.thread_count() == before);
    const auto squares = lola::parallel_map(lola::executor{3}, std::vector<int>{1, 2, 3, 4}, [](int x) { return x * x; });
    CHECK(squares == std::vector<int>{1, 4, 9, 16});
  }
}
