//! A future that is polled again only once its own waker fired.
//!
//! A WebSocket session is one task racing its reader against its writer. Every frame the
//! writer sends wakes the task, and a plain race would then poll the idle reader too, and
//! async-io tries the socket before it looks at readiness: one failed `recv` per message
//! per client. [`WokenOnly`] skips the reader until something woke it.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `inner`, polling it on the first poll and after each wake of its own.
pub struct WokenOnly<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Gate>,
    waker: Waker,
}

/// What the inner future's waker does: note the wake, and pass it on to the task.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> WokenOnly<F> {
    /// `inner`, to be polled only when it asked to be.
    pub fn new(inner: F) -> WokenOnly<F> {
        let gate = Arc::new(Gate {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        WokenOnly {
            inner: Box::pin(inner),
            waker: Waker::from(gate.clone()),
            gate,
        }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut task = this.gate.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Cleared before the poll: a wake during it is kept for the next one.
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts its polls and keeps the waker it was given; pending until `ready`.
    struct Probe {
        polls: Rc<Cell<u32>>,
        waker: Rc<Cell<Option<Waker>>>,
        ready: Rc<Cell<bool>>,
    }

    impl Future for Probe {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls.set(self.polls.get() + 1);
            self.waker.set(Some(cx.waker().clone()));
            if self.ready.get() {
                Poll::Ready(self.polls.get())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_its_own_wake() {
        let (polls, waker, ready) = Default::default();
        let probe = Probe {
            polls: Rc::clone(&polls),
            waker: Rc::clone(&waker),
            ready: Rc::clone(&ready),
        };
        let mut gated = WokenOnly::new(probe);
        let task_woken = Arc::new(Counter::default());
        let task_waker = Waker::from(task_woken.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut gated = Pin::new(&mut gated);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1, "the first poll reaches it");
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1, "polls that nothing woke it for skip it");
        ready.set(true);
        let inner_waker = waker.take().expect("it registered a waker");
        inner_waker.wake_by_ref();
        assert_eq!(
            task_woken.0.load(Ordering::SeqCst),
            1,
            "its wake reaches the task"
        );
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Ready(2));
    }

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicU32);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
