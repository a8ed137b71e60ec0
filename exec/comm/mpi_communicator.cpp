#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <list>
#include <stdexcept>
#include <thread>
#include <vector>

namespace glam::exec {
namespace {

// bf16 sums: a 2-byte type and an addition in float32, rounded once per addition as the GPU's is.
void add_bf16(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const kernels::bf16*>(in);
  auto* b = static_cast<kernels::bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = kernels::bf16(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}
struct Bf16Sum {
  MPI_Datatype type;
  MPI_Op op;
};
const Bf16Sum& bf16_sum() {
  static const Bf16Sum s = [] {
    Bf16Sum v{};
    MPI_Type_contiguous(2, MPI_BYTE, &v.type);
    MPI_Type_commit(&v.type);
    MPI_Op_create(&add_bf16, 1, &v.op);
    return v;
  }();
  return s;
}

int checked_count(int64_t n) {
  if (n > std::numeric_limits<int>::max()) throw std::runtime_error("MPI message larger than 2^31 elements");
  return static_cast<int>(n);
}

// MPI counts are ints: byte messages larger than this (a checkpoint's share of a large model, a
// sliced embedding) go in pieces of at most this many bytes.
int64_t g_message_limit = int64_t{1} << 30;

// Calls f(offset, size) for the pieces of `size` units at most `piece` units long (default: bytes up to
// the message limit).
template <class F>
void for_each_piece(int64_t size, F f, int64_t piece = g_message_limit) {
  for (int64_t off = 0; off < size; off += piece) f(off, std::min(piece, size - off));
}

// The piece [off, off + n) of each of `ranks` blocks of `block` bytes, one after another in `packed`
// (pack), and back (unpack): the layout of a collective's buffers when it runs piece by piece.
void pack_pieces(const void* blocks, int64_t block, int ranks, int64_t off, int64_t n, char* packed) {
  for (int r = 0; r < ranks; ++r)
    std::memcpy(packed + r * n, static_cast<const char*>(blocks) + r * block + off, static_cast<size_t>(n));
}
void unpack_pieces(const char* packed, int64_t n, int ranks, void* blocks, int64_t block, int64_t off) {
  for (int r = 0; r < ranks; ++r)
    std::memcpy(static_cast<char*>(blocks) + r * block + off, packed + r * n, static_cast<size_t>(n));
}

// The world communicator initialises and finalises MPI; split ones own only their MPI_Comm (and
// must be destroyed before the world one).
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() : comm_(MPI_COMM_WORLD), world_(true) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm), world_(false) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (auto& s : pending_)
      for (MPI_Request& request : s.requests)
        if (request != MPI_REQUEST_NULL) MPI_Cancel(&request), MPI_Request_free(&request);
    if (!world_) MPI_Comm_free(&comm_);
    else MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  void allreduce_sum(float* d, int64_t n) override { allreduce(d, n, MPI_FLOAT, MPI_SUM); }
  void allreduce_sum(double* d, int64_t n) override { allreduce(d, n, MPI_DOUBLE, MPI_SUM); }
  void allreduce_sum(int64_t* d, int64_t n) override { allreduce(d, n, MPI_INT64_T, MPI_SUM); }
  void allreduce_sum(kernels::bf16* d, int64_t n) override { allreduce(d, n, bf16_sum().type, bf16_sum().op); }
  void allreduce_max(double* d, int64_t n) override { allreduce(d, n, MPI_DOUBLE, MPI_MAX); }
  void alltoall(const void* send, void* recv, int64_t block_bytes) override {
    if (block_bytes <= g_message_limit) {
      MPI_Alltoall(send, checked_count(block_bytes), MPI_BYTE, recv, checked_count(block_bytes), MPI_BYTE, comm_);
      return;
    }
    // Piece by piece: the same piece of every block packed together, exchanged, and unpacked.
    std::vector<char> out(static_cast<size_t>(size_ * g_message_limit)), in(out.size());
    for_each_piece(block_bytes, [&](int64_t off, int64_t n) {
      pack_pieces(send, block_bytes, size_, off, n, out.data());
      MPI_Alltoall(out.data(), checked_count(n), MPI_BYTE, in.data(), checked_count(n), MPI_BYTE, comm_);
      unpack_pieces(in.data(), n, size_, recv, block_bytes, off);
    });
  }
  void allgather(const void* send, void* recv, int64_t block_bytes) override {
    if (block_bytes <= g_message_limit) {
      MPI_Allgather(send, checked_count(block_bytes), MPI_BYTE, recv, checked_count(block_bytes), MPI_BYTE, comm_);
      return;
    }
    std::vector<char> in(static_cast<size_t>(size_ * g_message_limit));
    for_each_piece(block_bytes, [&](int64_t off, int64_t n) {
      MPI_Allgather(static_cast<const char*>(send) + off, checked_count(n), MPI_BYTE, in.data(), checked_count(n),
                    MPI_BYTE, comm_);
      unpack_pieces(in.data(), n, size_, recv, block_bytes, off);
    });
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    for_each_piece(bytes, [&](int64_t off, int64_t n) {
      MPI_Bcast(static_cast<char*>(data) + off, checked_count(n), MPI_BYTE, root, comm_);
    });
  }
  void reduce_scatter_sum(const float* send, float* recv, int64_t count) override {
    const int64_t piece = std::max<int64_t>(1, g_message_limit / static_cast<int64_t>(sizeof(float)));
    if (count <= piece) {
      MPI_Reduce_scatter_block(send, recv, checked_count(count), MPI_FLOAT, MPI_SUM, comm_);
      return;
    }
    // Piece by piece: the same piece of every block packed together, reduced and scattered.
    constexpr int64_t fb = sizeof(float);
    std::vector<float> packed(static_cast<size_t>(size_ * piece));
    for_each_piece(count, [&](int64_t off, int64_t n) {
      pack_pieces(send, count * fb, size_, off * fb, n * fb, reinterpret_cast<char*>(packed.data()));
      MPI_Reduce_scatter_block(packed.data(), recv + off, checked_count(n), MPI_FLOAT, MPI_SUM, comm_);
    }, piece);
  }
  void barrier() override { MPI_Barrier(comm_); }
  void send(const void* data, int64_t bytes, int peer, int tag) override {
    check_tag(tag);
    reap_sends();
    // The executor's CPU buffers are host memory: the copy lets the caller reuse its buffer at once.
    pending_.push_back(PendingSend{{}, std::vector<char>(static_cast<size_t>(bytes))});
    PendingSend& s = pending_.back();
    if (bytes > 0) std::memcpy(s.data.data(), data, static_cast<size_t>(bytes));
    // Pieces with one tag arrive in order, and recv takes the same pieces.
    for_each_piece(bytes, [&](int64_t off, int64_t n) {
      s.requests.emplace_back();
      MPI_Isend(s.data.data() + off, checked_count(n), MPI_BYTE, peer, tag, comm_, &s.requests.back());
    });
  }
  void send_and_wait(const void* data, int64_t bytes, int peer, int tag) override {
    check_tag(tag);
    for_each_piece(bytes, [&](int64_t off, int64_t n) {
      MPI_Send(static_cast<const char*>(data) + off, checked_count(n), MPI_BYTE, peer, tag, comm_);
    });
  }
  void recv(void* data, int64_t bytes, int peer, int tag) override {
    check_tag(tag);
    for_each_piece(bytes, [&](int64_t off, int64_t n) {
      MPI_Recv(static_cast<char*>(data) + off, checked_count(n), MPI_BYTE, peer, tag, comm_, MPI_STATUS_IGNORE);
    });
  }
  void wait_sends() override {
    for (auto& s : pending_) MPI_Waitall(static_cast<int>(s.requests.size()), s.requests.data(), MPI_STATUSES_IGNORE);
    pending_.clear();
  }
  void idle_barrier() override {
    MPI_Request request;
    MPI_Ibarrier(comm_, &request);
    for (int done = 0;;) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::unique_ptr<Communicator> split(int color) override {
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, rank_, &sub);
    if (sub == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(sub);
  }

 private:
  struct PendingSend {
    std::vector<MPI_Request> requests;  // one per piece
    std::vector<char> data;
  };
  // In place, in pieces of at most the message limit (the elements are independent).
  template <class T>
  void allreduce(T* d, int64_t n, MPI_Datatype type, MPI_Op op) {
    const int64_t piece = std::max<int64_t>(1, g_message_limit / static_cast<int64_t>(sizeof(T)));
    for_each_piece(n, [&](int64_t off, int64_t k) {
      MPI_Allreduce(MPI_IN_PLACE, d + off, checked_count(k), type, op, comm_);
    }, piece);
  }
  static void check_tag(int tag) {
    if (tag < 0 || tag > kMaxTag) throw std::logic_error("MPI tag " + std::to_string(tag) + " out of range");
  }
  // Frees the copies of the sends already received.
  void reap_sends() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Testall(static_cast<int>(it->requests.size()), it->requests.data(), &done, MPI_STATUSES_IGNORE);
      it = done ? pending_.erase(it) : std::next(it);
    }
  }
  std::list<PendingSend> pending_;  // a list: MPI holds the buffers' addresses until the sends complete
  MPI_Comm comm_;
  bool world_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

void set_mpi_message_limit(int64_t bytes) { g_message_limit = bytes; }

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace glam::exec
