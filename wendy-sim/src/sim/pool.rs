//! The threads that run the nodes' jobs of a batch ([`super::jobs::Job::run`]) beside the
//! simulator's own thread.
//!
//! The workers live as long as the simulation. The simulator's thread posts each job of a
//! batch as soon as it has made it, and a worker takes it at once; once the batch is made,
//! the simulator's thread takes the jobs back in the batch's order, running those no worker has
//! taken yet while it waits. So which thread ran a job changes nothing (every job reads and
//! writes one node alone, and the simulator applies their outputs in the batch's order), and
//! the workers run jobs while the simulator's thread makes the batch and applies the outputs
//! of the jobs before. A worker with nothing to do spins a little, then yields its core, then
//! sleeps in short naps, so an idle simulation does not hold a core.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::jobs::Job;

/// What the threads share.
#[derive(Default)]
struct Shared {
    /// Jobs not taken yet, with their place in the batch, the first posted first.
    todo: Mutex<VecDeque<(usize, Job)>>,
    /// Jobs run and not taken back yet, by their place in the batch.
    done: Mutex<Vec<Option<Job>>>,
    /// Jobs in `todo`: read without the lock by idle workers.
    waiting: AtomicUsize,
    /// The simulation is over: the workers return.
    stop: AtomicBool,
    /// The first panic of a job, raised again on the simulator's thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// Locks `m`; a thread that panicked holding it left nothing half-done that matters here (the
/// panic itself is raised again on the simulator's thread).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Takes the first job posted, runs it and hands it back; false if there was none.
    fn work_one(&self) -> bool {
        let next = {
            let mut todo = lock(&self.todo);
            let next = todo.pop_front();
            if next.is_some() {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            next
        };
        let Some((i, mut job)) = next else { return false };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())) {
            Ok(()) => {
                let mut done = lock(&self.done);
                if done.len() <= i {
                    done.resize_with(i + 1, || None);
                }
                done[i] = Some(job);
            }
            Err(p) => {
                lock(&self.panic).get_or_insert(p);
            }
        }
        true
    }
}

/// Worker threads running the jobs of a batch with the simulator's thread.
pub(super) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller's and `threads - 1` workers.
    pub(super) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("wendy-sim-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("a simulator thread can be started")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Posts the job at place `i` of the batch (places 0, 1, 2, ... in turn).
    pub(super) fn post(&self, i: usize, job: Job) {
        let s = &*self.shared;
        lock(&s.todo).push_back((i, job));
        s.waiting.fetch_add(1, Ordering::Release);
    }

    /// The job at place `i`, run: taken back once a thread ran it, this thread running the
    /// jobs still waiting meanwhile.
    ///
    /// # Panics
    /// If a job panicked (the job's panic, raised again here). A job must have been posted at
    /// `i` (the engine takes back exactly the places it posted); otherwise this waits forever.
    pub(super) fn take(&self, i: usize) -> Job {
        let s = &*self.shared;
        let mut spins = 0u32;
        loop {
            if let Some(job) = lock(&s.done).get_mut(i).and_then(Option::take) {
                return job;
            }
            if let Some(p) = lock(&s.panic).take() {
                std::panic::resume_unwind(p);
            }
            if s.work_one() {
                continue;
            }
            // Job `i` runs on a worker: wait, giving the core away if that takes long (a
            // worker the system put off its core would otherwise be waited on by a spin).
            spins += 1;
            if spins < 1 << 10 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            // A job's panic was raised on the simulator's thread already.
            let _ = w.join();
        }
    }
}

/// A worker's loop: run jobs while there are any; spin, then yield, then nap while there are
/// none.
fn worker(s: &Shared) {
    let mut idle = 0u32;
    while !s.stop.load(Ordering::Acquire) {
        if s.waiting.load(Ordering::Acquire) > 0 && s.work_one() {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle < 1 << 12 {
            std::hint::spin_loop();
        } else if idle < 1 << 14 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
