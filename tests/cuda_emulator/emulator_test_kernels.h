#pragma once
// Launchers of emulator_test_kernels.cu (pointers from cudaMalloc; each returns after its launch).
namespace glam_emu_test {

void run_lane_sums(const int* in, int* out, int* xor_partner, int* broadcast, int blocks, int threads);
void run_votes(const int* in, int* all, int threads);
void run_neighbour(int* out, int blocks, bool barrier);
void run_dynamic_counts(int* out, int blocks, int n);
void run_barrier_in_a_branch(int* out);
void run_barrier_against_shuffle(int* out);
void run_lane_leaves_early(int* out);
void run_coordinates(int* out);        // grid 3 x 2 of blocks 4 x 5
void run_too_many_threads(int* out);  // a block of 2,048 threads: an invalid launch
void run_write_at(int* out, int index);  // one thread writes out[index]
void run_block_order(int* order, int* counter);  // grid 7 x 5 x 3: order[block] = its place in the run

}  // namespace glam_emu_test
