// The native decode runtime's threads (included by native_decode.c): a pool of workers that sleep between steps, and
// stages of chunks that any of its threads may take.
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

// ---- stages: chunks of work that any thread may take ----
//
// A step is a fixed sequence of stages (a matmul, the RoPE of each head, the attention of each head, a norm). Each
// stage's chunks are split evenly over the threads; a thread does its own, then takes the chunks others have not
// started, then waits until every chunk is done. A thread the OS has descheduled (a busy machine) holds up the others
// only while it is inside a chunk: the rest of its share is done by whoever runs. Counters live in the scratch
// memory, zeroed before each step, one cache line each: per stage the chunks done, then one cursor per thread.

enum { LINE = 16, SPINS_BEFORE_YIELD = 1 << 12 };  // ints per cache line

typedef struct {
  atomic_int* counters;  // (stages, 1 + nt, LINE)
  int t, nt, stage;      // this thread, the team's size, the stage this thread is in
  int total;             // the current stage's chunks
} Team;

static atomic_int* counter(const Team* team, int i) {
  return team->counters + ((size_t)team->stage * (1 + team->nt) + i) * LINE;
}

// [*a, *b): thread t's share of n items.
static void share(int n, int t, int nt, int* a, int* b) {
  *a = (int)((long)n * t / nt), *b = (int)((long)n * (t + 1) / nt);
}

// The next chunk of the current stage for this thread (its own first, then anyone's), or -1 when none is left.
static int claim(Team* team) {
  for (int i = 0; i < team->nt; i++) {
    int u = (team->t + i) % team->nt, a, b;
    share(team->total, u, team->nt, &a, &b);
    if (a + atomic_load_explicit(counter(team, 1 + u), memory_order_relaxed) >= b) continue;
    int c = a + atomic_fetch_add_explicit(counter(team, 1 + u), 1, memory_order_relaxed);
    if (c < b) return c;
  }
  return -1;
}

static void chunk_done(Team* team) {
  atomic_fetch_add_explicit(counter(team, 0), 1, memory_order_release);
}

// Wait until every chunk of the current stage is done (its results visible), then go to the next stage.
static void end_stage(Team* team) {
  if (team->nt > 1) {
    atomic_int* done = counter(team, 0);
    for (int spins = 0; atomic_load_explicit(done, memory_order_acquire) < team->total; spins++) {
      if (spins < SPINS_BEFORE_YIELD)
        _mm_pause();
      else
        sched_yield();  // a busy machine: give the core to whoever needs it (perhaps the thread in that chunk)
    }
  }
  team->stage++;
}

#define FOR_CHUNKS(team, n, c)                                         \
  (team)->total = (n);                                                 \
  for (int c = claim(team); c >= 0; chunk_done(team), c = claim(team))

// ---- the pool: threads - 1 workers that sleep between steps ----
//
// The caller's thread works too. A step opens a generation and wakes the workers; each one that wakes while it is
// still open joins in, and the step returns once every stage is done and the workers that joined have left (they find
// every chunk taken and leave at once), without waiting for a worker the OS has not run yet (OpenMP's region would
// wait for it at its end: on a busy machine, a time slice each token).

enum { WORKER_SPINS = 1 << 10, MAX_THREADS = 256 };  // a worker spins ~0.1 ms for the next step, then sleeps

typedef struct {
  void (*fn)(const void* arg, int t, int nt);  // what each thread t of nt runs
  const void* arg;
} Job;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t wake;
  atomic_int generation, open, active;  // the latest step, the step workers may join (0: none), workers inside
  int quit, nt;
  Job job;
  pthread_t workers[MAX_THREADS];
} Pool;

static Pool pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER;  // one step at a time in a process

static void* worker(void* arg) {
  const int t = (int)(intptr_t)arg;
  int seen = atomic_load(&pool.generation);
  for (;;) {
    int spins = 0;
    while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen && spins < WORKER_SPINS) {
      _mm_pause();
      spins++;
    }
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.generation) == seen && !pool.quit) pthread_cond_wait(&pool.wake, &pool.mu);
    int quit = pool.quit;
    seen = atomic_load(&pool.generation);
    pthread_mutex_unlock(&pool.mu);
    if (quit) return NULL;
    atomic_fetch_add(&pool.active, 1);
    if (atomic_load(&pool.open) == seen) {
      Job j = pool.job;
      j.fn(j.arg, t, pool.nt);
    }
    atomic_fetch_sub(&pool.active, 1);
  }
}

static void stop_pool(void) {
  pthread_mutex_lock(&pool.mu);
  pool.quit = 1;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  for (int t = 1; t < pool.nt; t++) pthread_join(pool.workers[t], NULL);
  pool.quit = 0, pool.nt = 0;
}

// A pool of nt threads (the caller and nt - 1 workers); returns how many it has (fewer where threads cannot start).
static int ensure_pool(int nt) {
  if (pool.nt == nt) return nt;
  if (pool.nt > 1) stop_pool();
  pool.nt = 1;
  for (int t = 1; t < nt; t++) {
    if (pthread_create(&pool.workers[t], NULL, worker, (void*)(intptr_t)t) != 0) break;
    pool.nt = t + 1;
  }
  return pool.nt;
}

static void run_step(const Job* job, int nt) {
  pool.job = *job;
  pthread_mutex_lock(&pool.mu);
  int g = atomic_load(&pool.generation) + 1;
  atomic_store(&pool.open, g);
  atomic_store_explicit(&pool.generation, g, memory_order_release);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  job->fn(job->arg, 0, nt);  // returns when every stage is done
  atomic_store(&pool.open, 0);
  // a worker that joined leaves at once (every chunk is taken); after this none touches the step's memory
  for (int spins = 0; atomic_load(&pool.active) > 0; spins++) {
    if (spins < SPINS_BEFORE_YIELD)
      _mm_pause();
    else
      sched_yield();
  }
}

// fn(arg, t, nt) on this thread (t = 0) and the pool's workers: one run at a time in a process.
static void run_on_pool(void (*fn)(const void* arg, int t, int nt), const void* arg, int threads) {
  pthread_mutex_lock(&step_lock);
  int nt = ensure_pool(threads);
  Job job = {fn, arg};
  run_step(&job, nt);
  pthread_mutex_unlock(&step_lock);
}
