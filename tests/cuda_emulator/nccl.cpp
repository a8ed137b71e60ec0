// The NCCL calls of exec/comm/nccl_communicator.cpp, for the CUDA emulator's processes: one process
// per emulated GPU (as with NCCL), "device" buffers in host memory, and every collective made of MPI
// point-to-point messages on MPI_COMM_WORLD (which the executor's MPI communicator has initialised).
// A communicator learns its members' world ranks when it is created: the unique id carries the world
// rank of the rank that made it, and each member tells that rank its own. Sums are taken in rank order
// on rank 0 of the communicator and sent back, so every rank gets the same bits. Declared by the
// toolkit's nccl.h, so a signature that drifts fails to build.
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "bfloat16.h"
#include "device_memory.h"

struct ncclComm {
  int nranks = 0, rank = 0;
  std::vector<int> world;  // world rank of each member
  int tag = 0;             // this communicator's tags: tag .. tag + 3
};

namespace {

constexpr int kTagBase = 16384;  // above the executor's own tags (pipeline messages use small ones)
constexpr int kTagsPerComm = 4;
constexpr int kCommTagSlots = 2048;

struct IdContents {
  int root_world;
  int sequence;
};

// 0 in a process without MPI (a one-rank communicator over the single-process host communicator).
int world_rank() {
  int initialized = 0, r = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    default: return 8;
  }
}

// acc += x, elementwise, for the types the executor reduces.
bool add_into(void* acc, const void* x, size_t count, ncclDataType_t t) {
  switch (t) {
    case ncclFloat32:
      for (size_t i = 0; i < count; ++i) static_cast<float*>(acc)[i] += static_cast<const float*>(x)[i];
      return true;
    case ncclFloat64:
      for (size_t i = 0; i < count; ++i) static_cast<double*>(acc)[i] += static_cast<const double*>(x)[i];
      return true;
    case ncclInt64:
      for (size_t i = 0; i < count; ++i) static_cast<int64_t*>(acc)[i] += static_cast<const int64_t*>(x)[i];
      return true;
    case ncclBfloat16:
      for (size_t i = 0; i < count; ++i)
        static_cast<glam::kernels::bf16*>(acc)[i] += static_cast<const glam::kernels::bf16*>(x)[i];
      return true;
    default: return false;
  }
}

void send_bytes(const ncclComm* c, const void* p, size_t bytes, int to, int tag_offset) {
  MPI_Send(p, static_cast<int>(bytes), MPI_BYTE, c->world[static_cast<size_t>(to)], c->tag + tag_offset, MPI_COMM_WORLD);
}
void recv_bytes(const ncclComm* c, void* p, size_t bytes, int from, int tag_offset) {
  MPI_Recv(p, static_cast<int>(bytes), MPI_BYTE, c->world[static_cast<size_t>(from)], c->tag + tag_offset, MPI_COMM_WORLD,
           MPI_STATUS_IGNORE);
}

// The sum over the communicator of every rank's `in`, into every rank's `out` (in may be out).
ncclResult_t sum_to_all(const void* in, void* out, size_t count, ncclDataType_t t, const ncclComm* c) {
  const size_t bytes = count * type_bytes(t);
  if (c->rank == 0) {
    std::vector<char> acc(static_cast<const char*>(in), static_cast<const char*>(in) + bytes), part(bytes);
    for (int r = 1; r < c->nranks; ++r) {
      recv_bytes(c, part.data(), bytes, r, 0);
      if (!add_into(acc.data(), part.data(), count, t)) return ncclInvalidArgument;
    }
    for (int r = 1; r < c->nranks; ++r) send_bytes(c, acc.data(), bytes, r, 1);
    std::memcpy(out, acc.data(), bytes);
  } else {
    send_bytes(c, in, bytes, 0, 0);
    recv_bytes(c, out, bytes, 0, 1);
  }
  return ncclSuccess;
}

struct PendingOp {
  bool send;
  void* buffer;
  size_t bytes;
  int peer;
  const ncclComm* comm;
};
int g_group_depth = 0;
std::vector<PendingOp> g_group;
int g_sequence = 0;

// The group's sends and receives, all posted before any is waited for (as NCCL runs them together).
void run_point_to_point(const std::vector<PendingOp>& all) {
  // A rank's messages to itself are copies, the k-th receive from itself taking the k-th send (without
  // MPI: a one-rank communicator may live in a process that never started it).
  std::vector<PendingOp> ops, to_self, from_self;
  for (const PendingOp& o : all) {
    if (o.peer != o.comm->rank) ops.push_back(o);
    else (o.send ? to_self : from_self).push_back(o);
  }
  for (size_t k = 0; k < from_self.size() && k < to_self.size(); ++k)
    std::memcpy(from_self[k].buffer, to_self[k].buffer, std::min(from_self[k].bytes, to_self[k].bytes));
  if (ops.empty()) return;
  std::vector<MPI_Request> requests(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const PendingOp& o = ops[i];
    const int world = o.comm->world[static_cast<size_t>(o.peer)], tag = o.comm->tag + 2;
    if (o.send) MPI_Isend(o.buffer, static_cast<int>(o.bytes), MPI_BYTE, world, tag, MPI_COMM_WORLD, &requests[i]);
    else MPI_Irecv(o.buffer, static_cast<int>(o.bytes), MPI_BYTE, world, tag, MPI_COMM_WORLD, &requests[i]);
  }
  MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
}

ncclResult_t queue(PendingOp op) {
  if (g_group_depth > 0) {
    g_group.push_back(op);
  } else {
    glam_emu::DeviceAccess open;
    run_point_to_point({op});
  }
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  *version = 22000;  // before ncclAlltoAll: the executor takes grouped sends and receives
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "NCCL error (emulated over MPI)"; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  const IdContents c{world_rank(), g_sequence++};
  std::memcpy(id->internal, &c, sizeof c);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  IdContents made;
  std::memcpy(&made, id.internal, sizeof made);
  auto* c = new ncclComm;
  c->nranks = nranks, c->rank = rank;
  c->world.assign(static_cast<size_t>(nranks), -1);
  c->tag = kTagBase + ((made.root_world * 131 + made.sequence) % kCommTagSlots) * kTagsPerComm;
  const int me = world_rank();
  if (rank == 0) {
    c->world[0] = me;
    for (int r = 1; r < nranks; ++r) {
      int member[2];
      MPI_Recv(member, 2, MPI_INT, MPI_ANY_SOURCE, c->tag + 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      c->world[static_cast<size_t>(member[0])] = member[1];
    }
    for (int r = 1; r < nranks; ++r)
      MPI_Send(c->world.data(), nranks, MPI_INT, c->world[static_cast<size_t>(r)], c->tag + 3, MPI_COMM_WORLD);
  } else {
    const int member[2] = {rank, me};
    MPI_Send(member, 2, MPI_INT, made.root_world, c->tag + 3, MPI_COMM_WORLD);
    MPI_Recv(c->world.data(), nranks, MPI_INT, made.root_world, c->tag + 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c,
                           cudaStream_t) {
  glam_emu::DeviceAccess open;  // the buffers are device memory
  if (op != ncclSum) return ncclInvalidArgument;
  return sum_to_all(send, recv, count, t, c);
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t c, cudaStream_t) {
  glam_emu::DeviceAccess open;  // the buffers are device memory
  if (op != ncclSum) return ncclInvalidArgument;
  const size_t block = count * type_bytes(t);
  std::vector<char> all(block * static_cast<size_t>(c->nranks));
  const ncclResult_t r = sum_to_all(send, all.data(), count * static_cast<size_t>(c->nranks), t, c);
  std::memcpy(recv, all.data() + block * static_cast<size_t>(c->rank), block);
  return r;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t c, cudaStream_t) {
  glam_emu::DeviceAccess open;  // the buffers are device memory
  const size_t block = count * type_bytes(t);
  std::vector<char> mine(static_cast<const char*>(send), static_cast<const char*>(send) + block);  // send may lie in recv
  std::vector<PendingOp> ops;
  for (int r = 0; r < c->nranks; ++r) {
    if (r == c->rank) continue;
    ops.push_back({true, mine.data(), block, r, c});
    ops.push_back({false, static_cast<char*>(recv) + block * static_cast<size_t>(r), block, r, c});
  }
  run_point_to_point(ops);
  std::memcpy(static_cast<char*>(recv) + block * static_cast<size_t>(c->rank), mine.data(), block);
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t c,
                           cudaStream_t) {
  glam_emu::DeviceAccess open;  // the buffers are device memory
  const size_t bytes = count * type_bytes(t);
  if (c->rank == root) {
    if (recv != send) std::memmove(recv, send, bytes);
    for (int r = 0; r < c->nranks; ++r)
      if (r != root) send_bytes(c, recv, bytes, r, 1);
  } else {
    recv_bytes(c, recv, bytes, root, 1);
  }
  return ncclSuccess;
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t) {
  return queue({true, const_cast<void*>(send), count * type_bytes(t), peer, c});
}
ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t) {
  return queue({false, recv, count * type_bytes(t), peer, c});
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  glam_emu::DeviceAccess open;  // the buffers are device memory
  if (g_group_depth == 0) return ncclInvalidUsage;
  if (--g_group_depth == 0) {
    std::vector<PendingOp> ops;
    ops.swap(g_group);
    run_point_to_point(ops);
  }
  return ncclSuccess;
}

}  // extern "C"
