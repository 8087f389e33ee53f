/*
 * vmstack agent: REFRESH, run by the host right after it restored a guest from a boot snapshot.
 *
 * Every guest restored from one saved state starts with the same kernel CRNG state and the clock
 * of the moment of the save. Without VM generation ID support (CONFIG_VMGENID is not set in
 * Debian's cloud kernel) the guest cannot notice that it was cloned, so the host tells it:
 *   - a seed from the host's CSPRNG goes into the input pool with RNDADDENTROPY, credited in full
 *     (it is that many bytes of full-entropy randomness), then RNDRESEEDCRNG forces the CRNG to
 *     re-key from the pool at once (linux/random.h; random(4)). Re-keying bumps the base CRNG's
 *     generation, so the per-CPU CRNGs and the batched get_random_u32/u64 state, which are all
 *     copies from the snapshot, are discarded on their next use.
 *   - CLOCK_REALTIME is set to the host's wall-clock time (clock_settime(2)); CLOCK_MONOTONIC
 *     carries on from the snapshot, as it must.
 * Payload: u32 seconds (high), u32 seconds (low), u32 nanoseconds, then the seed (16..512 bytes).
 * Answer: OK, or ERROR with the errno of the step that failed.
 */
#include "agent.h"
#include <linux/random.h>
#include <sys/ioctl.h>

#define SEED_MIN 16
#define SEED_MAX 512

void do_refresh(uint32_t id, struct rd *r, int allowed) {
  uint32_t hi = rd_u32(r), lo = rd_u32(r), ns = rd_u32(r);
  size_t n = r->n;
  if (r->bad || ns >= 1000000000u || n < SEED_MIN || n > SEED_MAX) {
    send_error(id, E_BAD_PAYLOAD, "malformed REFRESH payload (seed of %d..%d bytes, nanoseconds < 1e9)", SEED_MIN, SEED_MAX);
    return;
  }
  if (!allowed) { /* on the host (tests), never touch the host's clock or entropy pool */
    send_error(id, EPERM, "refresh: not in a guest (no --power); nothing changed");
    return;
  }
  struct { struct rand_pool_info info; uint32_t words[SEED_MAX / 4]; } pool;
  memset(&pool, 0, sizeof pool);
  pool.info.entropy_count = (int)(n * 8);
  pool.info.buf_size = (int)n;
  memcpy(pool.words, r->p, n);
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  const char *step = "open /dev/urandom";
  if (fd >= 0) {
    step = "RNDADDENTROPY";
    if (ioctl(fd, RNDADDENTROPY, &pool) == 0) {
      step = "RNDRESEEDCRNG";
      if (ioctl(fd, RNDRESEEDCRNG) == 0) step = NULL;
    }
  }
  int saved = errno;
  if (fd >= 0) close(fd);
  explicit_bzero(&pool, sizeof pool);
  if (step) {
    send_error(id, (uint32_t)saved, "refresh: %s: %s", step, strerror(saved));
    return;
  }
  struct timespec ts = {(time_t)((uint64_t)hi << 32 | lo), (long)ns};
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
    send_error(id, (uint32_t)errno, "refresh: clock_settime: %s", strerror(errno));
    return;
  }
  send_frame(T_OK, id, NULL, 0, NULL, 0);
}
