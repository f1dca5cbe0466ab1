//! Cancellable tasks over any runtime: a spawned future wrapped so that a [`Task`] handle can
//! end it and tell whether it has ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::runtime::Runtime;

/// A handle on a spawned task. [`abort`](Self::abort) ends it at its next poll (dropping its
/// future); dropping the handle does not.
#[derive(Debug, Clone)]
pub struct Task {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    aborted: AtomicBool,
    finished: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Task {
    /// Ends the task: its future is dropped at its next poll, which this schedules.
    pub fn abort(&self) {
        self.state.aborted.store(true, Ordering::Release);
        let waker = self.state.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// True once the task's future has completed or been dropped.
    pub fn is_finished(&self) -> bool {
        self.state.finished.load(Ordering::Acquire)
    }
}

/// Spawns `fut` on `rt`; the handle can end it.
pub fn spawn<R: Runtime>(rt: &R, fut: impl Future<Output = ()> + Send + 'static) -> Task {
    let state = Arc::new(State::default());
    let task = Task { state: state.clone() };
    rt.spawn(Box::pin(Abortable { fut: Box::pin(fut), state }));
    task
}

/// A task's future with its abort flag.
struct Abortable<F> {
    fut: Pin<Box<F>>,
    state: Arc<State>,
}

impl<F: Future<Output = ()>> Future for Abortable<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *self.state.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        // Checked again: an abort between the first check and storing the waker woke nobody.
        if self.state.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.fut.as_mut().poll(cx)
    }
}

impl<F> Drop for Abortable<F> {
    fn drop(&mut self) {
        self.state.finished.store(true, Ordering::Release);
    }
}

/// The tasks a node has spawned and not seen finish. Finished ones are let go of as more are
/// spawned (so thousands of short connections leave nothing behind); the rest are aborted
/// when the set is dropped.
#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    tasks: Vec<Task>,
    /// Length at which finished tasks are next swept out.
    sweep_at: usize,
}

impl TaskSet {
    /// Keeps `task` (sweeping out finished ones first when the set has doubled).
    pub(crate) fn push(&mut self, task: Task) {
        if self.tasks.len() >= self.sweep_at {
            self.tasks.retain(|t| !t.is_finished());
            self.sweep_at = (self.tasks.len() * 2).max(64);
        }
        self.tasks.push(task);
    }

    /// Tasks kept and not yet swept out (some may have finished since the last sweep).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks still running.
    pub(crate) fn running(&self) -> usize {
        self.tasks.iter().filter(|t| !t.is_finished()).count()
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_stays_as_small_as_what_runs() {
        let mut set = TaskSet::default();
        for _ in 0..10_000 {
            let t = Task { state: Arc::new(State::default()) };
            t.state.finished.store(true, Ordering::Release);
            set.push(t);
        }
        assert!(set.len() <= 64, "{} finished tasks kept", set.len());
        let live: Vec<Task> = (0..100).map(|_| Task { state: Arc::new(State::default()) }).collect();
        for t in &live {
            set.push(t.clone());
        }
        assert_eq!(set.running(), 100);
        drop(set);
        assert!(live.iter().all(|t| t.state.aborted.load(Ordering::Acquire)));
    }
}
