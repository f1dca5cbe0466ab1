//! The threads that run the nodes' jobs of a batch ([`super::jobs::Job::run`]) beside the
//! simulator's own thread.
//!
//! The workers live as long as the simulation. The simulator's thread posts each job of a
//! batch as soon as it has made it, into a first-in first-out work-stealing queue of its own
//! (`crossbeam-deque`), from which an idle worker steals it at once; a worker sends each job it
//! ran back over a channel. Once the batch is made, the simulator's thread takes the jobs back
//! in the batch's order, running those no worker has stolen yet while it waits, and keeping
//! the ones that come back early until their turn. So which thread ran a job changes nothing
//! (every job reads and writes one node alone, and the simulator applies their outputs in the
//! batch's order), and the workers run jobs while the simulator's thread makes the batch and
//! applies the outputs of the jobs before. Handing a job over takes no lock: a lock that both
//! threads took for every job (one list of jobs to run, one of jobs run) cost about 5 % of the
//! CPU of a 10,000-node run on two threads, most of it the lock's cache line moving between
//! the cores. A worker with nothing to do spins a little, then yields its core, then sleeps in
//! short naps, so an idle simulation does not hold a core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_deque::{Steal, Stealer, Worker};

use super::jobs::Job;

/// A job a worker ran, with its place in the batch, or the panic that ended it.
type Ran = (usize, std::thread::Result<Job>);

/// Worker threads running the jobs of a batch with the simulator's thread.
pub(super) struct Pool {
    /// Jobs not taken yet, with their place in the batch, the first posted first: the
    /// simulator's thread pushes and pops, the workers steal.
    todo: Worker<(usize, Job)>,
    /// Jobs the workers ran.
    ran: Receiver<Ran>,
    /// Jobs run and not taken back yet, by their place in the batch (owned by the simulator's
    /// thread: every place is taken back before the next batch).
    back: Vec<Option<Job>>,
    /// The simulation is over: the workers return.
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller's and `threads - 1` workers.
    pub(super) fn new(threads: usize) -> Self {
        let todo = Worker::new_fifo();
        let (tx, ran) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (1..threads.max(1))
            .map(|i| {
                let (jobs, tx, stop) = (todo.stealer(), tx.clone(), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name(format!("wendy-sim-{i}"))
                    .spawn(move || worker(&jobs, &tx, &stop))
                    .expect("a simulator thread can be started")
            })
            .collect();
        Pool { todo, ran, back: Vec::new(), stop, workers }
    }

    /// Posts the job at place `i` of the batch (places 0, 1, 2, ... in turn).
    pub(super) fn post(&mut self, i: usize, job: Job) {
        self.todo.push((i, job));
    }

    /// Keeps the job at place `i`, run, until it is taken back.
    fn keep(&mut self, i: usize, job: Job) {
        if self.back.len() <= i {
            self.back.resize_with(i + 1, || None);
        }
        self.back[i] = Some(job);
    }

    /// The job at place `i`, run: taken back once a thread ran it, this thread running the
    /// jobs still waiting meanwhile.
    ///
    /// # Panics
    /// If a job panicked (the job's panic, raised again here). A job must have been posted at
    /// `i` (the engine takes back exactly the places it posted); otherwise this waits forever.
    pub(super) fn take(&mut self, i: usize) -> Job {
        let mut spins = 0u32;
        loop {
            if let Some(job) = self.back.get_mut(i).and_then(Option::take) {
                return job;
            }
            if let Ok((j, ran)) = self.ran.try_recv() {
                let job = ran.unwrap_or_else(|p| std::panic::resume_unwind(p));
                self.keep(j, job);
                continue;
            }
            if let Some((j, mut job)) = self.todo.pop() {
                job.run();
                self.keep(j, job);
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
        self.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            // A job's panic was raised on the simulator's thread already.
            let _ = w.join();
        }
    }
}

/// A worker's loop: run jobs while there are any, sending each back; spin, then yield, then
/// nap while there are none.
fn worker(jobs: &Stealer<(usize, Job)>, ran: &Sender<Ran>, stop: &AtomicBool) {
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        match jobs.steal() {
            Steal::Success((i, mut job)) => {
                idle = 0;
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
                if ran.send((i, result.map(|()| job))).is_err() {
                    return; // the pool is gone
                }
                continue;
            }
            Steal::Retry => continue,
            Steal::Empty => {}
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
