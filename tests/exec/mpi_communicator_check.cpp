// Run under mpirun (ctest: 4 ranks on the 2 cores): every collective of the MPI communicator
// against the values it must produce, splits into groups (and a rank that sits out), and the
// calibration's collective timings over a split. Prints what failed and exits 1.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "calibrate/microbench.h"
#include "comm/mpi_communicator.h"

namespace {

int failures = 0;

void expect(bool ok, int rank, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "rank %d: %s\n", rank, what.c_str());
  ++failures;
}

// Each collective on `c`, with values that depend on the rank so a wrong block shows.
void check_collectives(glam::exec::Communicator& c, const std::string& name) {
  const int n = c.size(), r = c.rank();
  const int64_t count = 3;  // floats per block
  std::vector<float> send(static_cast<size_t>(n * count)), recv(send.size(), -1.f);
  for (int b = 0; b < n; ++b)
    for (int64_t i = 0; i < count; ++i) send[static_cast<size_t>(b * count + i)] = static_cast<float>(100 * r + 10 * b + i);

  c.reduce_scatter_sum(send.data(), recv.data(), count);
  // Block r of the sum over ranks q of (100q + 10r + i).
  const float rank_sum = 100.f * static_cast<float>(n * (n - 1) / 2);
  for (int64_t i = 0; i < count; ++i)
    expect(recv[static_cast<size_t>(i)] == rank_sum + static_cast<float>(n * (10 * r + i)), r,
           name + ": reduce_scatter_sum element " + std::to_string(i) + " = " + std::to_string(recv[static_cast<size_t>(i)]));

  c.alltoall(send.data(), recv.data(), count * static_cast<int64_t>(sizeof(float)));
  for (int q = 0; q < n; ++q)  // block q came from rank q's block r
    expect(recv[static_cast<size_t>(q * count)] == static_cast<float>(100 * q + 10 * r), r, name + ": alltoall block " + std::to_string(q));

  c.allgather(send.data(), recv.data(), count * static_cast<int64_t>(sizeof(float)));
  for (int q = 0; q < n; ++q)  // block q is rank q's first block
    expect(recv[static_cast<size_t>(q * count)] == static_cast<float>(100 * q), r, name + ": allgather block " + std::to_string(q));

  float v = static_cast<float>(r + 1);
  c.allreduce_sum(&v, 1);
  expect(v == static_cast<float>(n * (n + 1) / 2), r, name + ": allreduce_sum");
}

// Messages larger than the MPI message limit go in pieces: with the limit at 64 bytes, a 1,000-byte
// send and receive around the ring, all-gathers and all-to-alls of 250-byte blocks, a broadcast (byte
// for byte), an all-reduce of 1,000 floats and a reduce-scatter of 100-float blocks. Pieces that land
// in the wrong place or are missing show as wrong values.
void check_pieces(glam::exec::Communicator& c) {
  const int n = c.size(), r = c.rank();
  glam::exec::set_mpi_message_limit(64);
  auto byte = [](int rank, int block, int i) { return static_cast<char>((rank * 131 + block * 17 + i * 7) % 251); };
  std::vector<char> msg(1000), got(1000, 0);
  for (int i = 0; i < 1000; ++i) msg[static_cast<size_t>(i)] = byte(r, 0, i);
  c.send(msg.data(), 1000, (r + 1) % n, 5);
  c.recv(got.data(), 1000, (r + n - 1) % n, 5);
  c.wait_sends();
  bool ok = true;
  for (int i = 0; i < 1000; ++i) ok = ok && got[static_cast<size_t>(i)] == byte((r + n - 1) % n, 0, i);
  expect(ok, r, "send/recv in pieces");
  const int64_t block = 250;
  std::vector<char> blocks(static_cast<size_t>(n * block)), out(blocks.size(), 0);
  for (int b = 0; b < n; ++b)
    for (int i = 0; i < block; ++i) blocks[static_cast<size_t>(b * block + i)] = byte(r, b, i);
  c.allgather(blocks.data(), out.data(), block);
  ok = true;
  for (int q = 0; q < n; ++q)  // block q is rank q's first block
    for (int i = 0; i < block; ++i) ok = ok && out[static_cast<size_t>(q * block + i)] == byte(q, 0, i);
  expect(ok, r, "allgather in pieces");
  std::fill(out.begin(), out.end(), 0);
  c.alltoall(blocks.data(), out.data(), block);
  ok = true;
  for (int q = 0; q < n; ++q)  // block q came from rank q's block r
    for (int i = 0; i < block; ++i) ok = ok && out[static_cast<size_t>(q * block + i)] == byte(q, r, i);
  expect(ok, r, "alltoall in pieces");
  std::vector<char> b = msg;
  c.broadcast(b.data(), 1000, 0);
  ok = true;
  for (int i = 0; i < 1000; ++i) ok = ok && b[static_cast<size_t>(i)] == byte(0, 0, i);
  expect(ok, r, "broadcast in pieces");
  std::vector<float> values(1000);
  for (int i = 0; i < 1000; ++i) values[static_cast<size_t>(i)] = static_cast<float>(r * 1000 + i);
  c.allreduce_sum(values.data(), 1000);
  ok = true;
  for (int i = 0; i < 1000; ++i)  // sum over q of (1000 q + i)
    ok = ok && values[static_cast<size_t>(i)] == static_cast<float>(1000 * n * (n - 1) / 2 + n * i);
  expect(ok, r, "allreduce_sum in pieces");
  const int64_t count = 100;  // floats per block: 400 bytes, in pieces of 16 floats
  std::vector<float> blocks_f(static_cast<size_t>(n * count)), mine(static_cast<size_t>(count), -1.f);
  for (int q = 0; q < n; ++q)
    for (int64_t i = 0; i < count; ++i) blocks_f[static_cast<size_t>(q * count + i)] = static_cast<float>(1000 * r + 100 * q + i);
  c.reduce_scatter_sum(blocks_f.data(), mine.data(), count);
  ok = true;
  for (int64_t i = 0; i < count; ++i)  // block r summed over q: 1000 q + 100 r + i
    ok = ok && mine[static_cast<size_t>(i)] == static_cast<float>(1000 * n * (n - 1) / 2 + n * (100 * r + i));
  expect(ok, r, "reduce_scatter_sum in pieces");
  glam::exec::set_mpi_message_limit(int64_t{1} << 30);
}

}  // namespace

int main() {
  using namespace glam::exec;
  int world_size = 0, world_rank = 0;
  {
    auto world = make_mpi_communicator();
    world_size = world->size(), world_rank = world->rank();
    check_collectives(*world, "world");
    check_pieces(*world);
    {
      // Pairs of ranks.
      auto pair = world->split(world_rank / 2);
      expect(pair && pair->size() == std::min(2, world_size - world_rank / 2 * 2), world_rank, "split into pairs: size");
      if (pair) {
        expect(pair->rank() == world_rank % 2, world_rank, "split into pairs: rank order");
        check_collectives(*pair, "pair");
      }
      // The last rank sits out.
      auto rest = world->split(world_rank == world_size - 1 ? -1 : 0);
      expect((rest == nullptr) == (world_rank == world_size - 1), world_rank, "split: a negative color gets no communicator");
      if (rest) expect(rest->size() == world_size - 1, world_rank, "split: size of the rest");
      // The calibration's timings over the pairs: one point per buffer, rounded to whole floats per block.
      if (pair) {
        auto pts = collective_times(*pair, glam::CollectiveKind::kReduceScatter, {10, 4096}, 0.001, glam::kernels::Backend::kCpu);
        expect(pts.size() == 2 && pts[0].seconds > 0 && pts[1].seconds > 0, world_rank, "collective_times: two timed points");
        if (pts.size() == 2) {
          const double unit = 4.0 * pair->size();
          expect(pts[0].buffer_bytes >= 10 && static_cast<int64_t>(pts[0].buffer_bytes) % static_cast<int64_t>(unit) == 0,
                 world_rank, "collective_times: buffer rounded to whole floats per block");
        }
      }
      world->barrier();
    }
  }  // split communicators are freed before MPI is finalised
  if (world_rank == 0) std::printf("mpi communicator check on %d ranks: %d failure(s)\n", world_size, failures);
  return failures ? 1 : 0;
}
