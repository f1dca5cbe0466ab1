//! Cancellable tasks over any runtime: a spawned future wrapped so that a [`Task`] handle can
//! end it and tell whether it has ended, and so that a [`Gate`] shared by a node's tasks can
//! freeze them all.

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

/// A switch shared by the tasks of one node: while it is closed, none of them is polled, as if
/// their process had been stopped (SIGSTOP). Their sockets stay open and their wake-ups are
/// kept; opening the gate wakes every task that was held.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    /// Tasks woken while the gate was closed, to wake again when it opens.
    held: Mutex<Vec<Waker>>,
}

impl Gate {
    /// Closes the gate: the tasks behind it stop at their next wake-up.
    pub(crate) fn close(&self) {
        let _held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Release);
    }

    /// Opens the gate and wakes every task it held.
    pub(crate) fn open(&self) {
        let held = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(false, Ordering::Release);
            std::mem::take(&mut *held)
        };
        for w in held {
            w.wake();
        }
    }

    /// True while the gate is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True if the task woken with `waker` must wait: the gate is closed (and will wake it when
    /// it opens).
    fn holds(&self, waker: &Waker) -> bool {
        if !self.is_closed() {
            return false;
        }
        // Checked again under the lock that `open` takes: no wake-up is lost in between.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !self.closed.load(Ordering::Acquire) {
            return false;
        }
        if !held.iter().any(|w| w.will_wake(waker)) {
            held.push(waker.clone());
        }
        true
    }
}

/// Spawns `fut` on `rt` behind `gate`: it is not polled while the gate is closed. The handle
/// can end it, closed gate or not.
pub(crate) fn spawn<R: Runtime>(rt: &R, gate: &Arc<Gate>, fut: impl Future<Output = ()> + Send + 'static) -> Task {
    let gate = gate.clone();
    let state = Arc::new(State::default());
    let task = Task { state: state.clone() };
    rt.spawn(Box::pin(Abortable { fut: Box::pin(fut), state, gate }));
    task
}

/// A task's future with its abort flag and its gate.
struct Abortable<F> {
    fut: Pin<Box<F>>,
    state: Arc<State>,
    gate: Arc<Gate>,
}

impl<F: Future<Output = ()>> Future for Abortable<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        {
            let mut waker = self.state.waker.lock().unwrap_or_else(|e| e.into_inner());
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Checked again: an abort between the first check and storing the waker woke nobody.
        if self.state.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self.gate.holds(cx.waker()) {
            return Poll::Pending;
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
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that counts its polls and never ends.
    fn counted(gate: &Arc<Gate>) -> (Abortable<impl Future<Output = ()>>, Arc<AtomicUsize>, Task) {
        let polls = Arc::new(AtomicUsize::new(0));
        let p = polls.clone();
        let fut = std::future::poll_fn(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        });
        let state = Arc::new(State::default());
        let task = Task { state: state.clone() };
        (Abortable { fut: Box::pin(fut), state, gate: gate.clone() }, polls, task)
    }

    #[test]
    fn a_closed_gate_holds_its_tasks_until_it_opens_and_abort_still_ends_them() {
        let gate = Arc::new(Gate::default());
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut a, polls, _) = counted(&gate);
        let (mut b, _, b_task) = counted(&gate);
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        gate.close();
        assert!(gate.is_closed());
        for _ in 0..3 {
            assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "a frozen task was polled");
        // One waker kept however often the task was woken meanwhile.
        assert_eq!(gate.held.lock().unwrap().len(), 1);
        // Ending a frozen task works.
        assert!(Pin::new(&mut b).poll(&mut cx).is_pending());
        b_task.abort();
        assert!(Pin::new(&mut b).poll(&mut cx).is_ready());
        let before = wakes.0.load(Ordering::SeqCst);
        gate.open();
        assert!(!gate.is_closed());
        assert_eq!(wakes.0.load(Ordering::SeqCst), before + 1, "the held task was not woken");
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

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
